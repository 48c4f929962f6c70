"""``QuantizeSettings``: how one layer is quantized, validated once when made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kopt.core.checks import check_choice, check_int
from kopt.core.errors import PolicyError

QUANTIZE_MODES = ("qat", "ptq")


def check_scheme(scheme: Any) -> None:
    """A scheme is valid when registered: built-in, or added with ``kopt.quantization.register_scheme``."""
    from kopt.quantization.schemes import available_schemes

    if scheme not in available_schemes():
        raise PolicyError(
            f"Unknown quantize.scheme {scheme!r}; registered: {available_schemes()}. A scheme of your own must be "
            "registered with kopt.quantization.register_scheme before the policy is made (on the command line: "
            "--plugin MODULE imports the module that registers it)."
        )


@dataclass(frozen=True)
class QuantizeSettings:
    """Quantization: ``mode="qat"`` trains with fake-quant (``scheme``); ``"ptq"`` calibrates after training."""

    mode: str = "qat"
    scheme: str = "default_8bit"
    bits: int = 8

    def __post_init__(self) -> None:
        check_choice("quantize.mode", self.mode, QUANTIZE_MODES)
        check_scheme(self.scheme)
        check_int("quantize.bits", self.bits, minimum=2, maximum=8)
