"""Errors raised while lowering a Keras model to TFLite."""

from __future__ import annotations

from kopt.core.errors import KoptError


class ConversionError(KoptError, RuntimeError):
    """The TFLite converter (or the SavedModel export before it) failed.

    ``op`` is the TensorFlow/TFLite op at fault and ``layer`` the Keras layer it came from,
    when the converter's diagnostics name them.
    """

    def __init__(self, message: str, *, op: str | None = None, layer: str | None = None) -> None:
        super().__init__(message)
        self.op = op
        self.layer = layer


class MissingRangesError(KoptError, ValueError):
    """Full-integer conversion was asked for but there is nothing to take activation ranges from."""


class NotFullyIntegerError(ConversionError):
    """The converted model still computes some ops in float (``mode="int8"`` promises it does not).

    ``float_ops`` lists ``(op index, op name, layer or tensor name)`` of the offending ops.
    """

    def __init__(self, message: str, *, float_ops: list[tuple[int, str, str]] | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.float_ops = list(float_ops or [])
