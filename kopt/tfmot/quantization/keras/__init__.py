"""``tfmot.quantization.keras`` on kopt: TFMOT's quantization-aware-training names and arguments."""

from kopt.tfmot.quantization.keras import default_8bit, quantizers
from kopt.tfmot.quantization.keras.quantize import (
    QuantizeScheme,
    quantize_annotate_layer,
    quantize_annotate_model,
    quantize_apply,
    quantize_model,
    quantize_scope,
)
from kopt.tfmot.quantization.keras.quantize_config import QuantizeConfig

__all__ = [
    "QuantizeConfig",
    "QuantizeScheme",
    "default_8bit",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_model",
    "quantize_scope",
    "quantizers",
]
