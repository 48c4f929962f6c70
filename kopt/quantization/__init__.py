"""Quantization-aware training for Keras 3 that mirrors the TFLite int8 spec.

``quantize_model(model)`` returns a copy of a Functional/Sequential model with
fake-quantized weights (symmetric, per output channel for convolutions) and activations
(asymmetric, ranges learnt in training), BatchNorms folded and ranges shared where TFLite
needs equal scales; train it with ``fit`` on any backend, then lower it with
``kopt.export.to_tflite`` (no representative dataset needed).
"""

from kopt.quantization.api import (
    QuantizationReport,
    QuantizeAnnotate,
    UnsupportedLayerError,
    quantize_annotate_layer,
    quantize_apply,
    quantize_model,
)
from kopt.quantization.config import OUTPUT_RULES, QuantizeConfig
from kopt.quantization.inplace import SublayerQuantizeWrapper
from kopt.quantization.preserve import (
    ClusterPreservingQuantizer,
    NotClusteredError,
    SparsityPreservingQuantizer,
    cluster_preserve_scheme,
    prune_cluster_preserve_scheme,
    prune_preserve_scheme,
)
from kopt.quantization.quantizers import (
    ActivationQuantizer,
    Quantizer,
    WeightQuantizer,
    fake_quant,
    nudged_range,
)
from kopt.quantization.registry import USER_REGISTRY, QuantizeRegistry, default_8bit_registry, register
from kopt.quantization.schemes import (
    Scheme,
    available_schemes,
    default_8bit_scheme,
    get_scheme,
    int16x8_scheme,
    register_scheme,
    unregister_scheme,
)
from kopt.quantization.settings import QuantizeSettings
from kopt.quantization.technique import QUANTIZATION
from kopt.quantization.wrapper import ActivationQuantize, ChannelAffine, FoldedBatchNorm, QuantizeWrapper

__all__ = [
    "SublayerQuantizeWrapper",
    "QuantizeSettings",
    "QUANTIZATION",
    "OUTPUT_RULES",
    "ActivationQuantize",
    "ActivationQuantizer",
    "ChannelAffine",
    "ClusterPreservingQuantizer",
    "FoldedBatchNorm",
    "NotClusteredError",
    "QuantizationReport",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeRegistry",
    "QuantizeWrapper",
    "Quantizer",
    "Scheme",
    "SparsityPreservingQuantizer",
    "USER_REGISTRY",
    "UnsupportedLayerError",
    "WeightQuantizer",
    "available_schemes",
    "cluster_preserve_scheme",
    "default_8bit_registry",
    "default_8bit_scheme",
    "int16x8_scheme",
    "fake_quant",
    "get_scheme",
    "nudged_range",
    "prune_cluster_preserve_scheme",
    "prune_preserve_scheme",
    "quantize_annotate_layer",
    "quantize_apply",
    "quantize_model",
    "register",
    "register_scheme",
    "unregister_scheme",
]
