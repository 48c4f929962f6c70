"""``tfmot.quantization``: quantization-aware training (``tfmot.quantization.keras``)."""

from kopt.tfmot.quantization import keras

__all__ = ["keras"]
