"""``tfmot.quantization.keras.default_8bit``: the TFLite int8 scheme object."""

from kopt.tfmot.quantization.keras.quantize import QuantizeScheme


class Default8BitQuantizeScheme(QuantizeScheme):
    """TFLite int8: symmetric per-channel weights for convolutions, asymmetric activations (kopt ``"default_8bit"``)."""

    def kopt_scheme(self) -> str:
        return "default_8bit"


__all__ = ["Default8BitQuantizeScheme"]
