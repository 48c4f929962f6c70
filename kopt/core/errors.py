"""Every exception and warning class kopt raises on purpose. Each error subclasses the built-in type users would
catch anyway; each warning is a :class:`KoptWarning` (a ``UserWarning``)."""

from __future__ import annotations


class KoptError(Exception):
    """Base class of every error kopt raises on purpose."""


class UnsupportedModelError(KoptError, TypeError):
    """The model's kind (subclassed, unbuilt Sequential, not a Keras model) cannot be analyzed."""


class GraphRewriteError(KoptError, ValueError):
    """A requested rewrite of the model graph is not well formed."""


class InvalidArgumentError(KoptError, ValueError):
    """An argument of a public kopt function (schedule, option, block size...) has an invalid value."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of a public kopt function has the wrong type (also a ``TypeError``, as Python's own)."""


class UnknownNameError(InvalidArgumentError, KeyError):
    """A lookup by name (a stage of a report, a weight of a layer) found nothing; also a ``KeyError``.

    ``str()`` gives the message, not ``KeyError``'s quoted repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnsupportedLayerError(KoptError, ValueError):
    """A layer cannot take the requested optimization (unknown type, incompatible shape, no
    quantization config in the chosen scheme...). The one class every technique raises;
    ``kopt.quantization.UnsupportedLayerError`` is this class."""


class NonFiniteWeightsError(KoptError, ValueError):
    """A model weight holds NaN or Inf, so no compression of it can be trusted.

    ``weights`` lists ``(layer path, weight name, NaN count, Inf count)`` of every bad weight.
    """

    def __init__(self, message: str, *, weights: list[tuple[str, str, int, int]] | None = None) -> None:
        super().__init__(message)
        self.weights = [tuple(w) for w in (weights or [])]


class PolicyError(KoptError, ValueError):
    """A policy (or policy file, or a technique's settings) is malformed, or does not fit the model it is applied to."""


# ------------------------------------------------------------ clustering
class ClusteringConfigError(KoptError, ValueError):
    """A clustering parameter is out of range or unknown (names the layer, argument and value)."""


class NotClusterableError(KoptError, TypeError):
    """The layer has no weights kopt knows how to cluster."""


# ------------------------------------------------------------ quantization
class NotClusteredError(KoptError, ValueError):
    """A layer given to a cluster-preserving scheme has a kernel that is not clustered."""


# ------------------------------------------------------------ lowering and deployment checks
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


class CorruptTFLiteError(KoptError, ValueError):
    """A ``.tflite`` starts like a TFLite flatbuffer but cannot be decoded."""


class MicroError(KoptError, RuntimeError):
    """TFLite Micro cannot load or run the model, or ``tflite-micro`` is missing."""


# ------------------------------------------------------------ the pipeline
class CompileSettingsError(InvalidArgumentError):
    """The model cannot be trained: it is not compiled and no loss/optimizer was given."""


class NotFullyMappedError(KoptError, RuntimeError):
    """The policy targets the Edge TPU and the int8 model is not fully mapped to it."""


# ------------------------------------------------------------ warnings
class KoptWarning(UserWarning):
    """Base class of every warning kopt emits: filter them all with ``warnings.filterwarnings(..., KoptWarning)``."""


class KoptRuntimeWarning(KoptWarning, RuntimeWarning):
    """kopt fell back to a safer result at run time (a compressed or sparse file that did not verify...)."""


class CoverageWarning(KoptWarning):
    """A technique reached less of the model than asked; the message names each layer left out and why."""


class BudgetNotMetWarning(KoptWarning):
    """No candidate the search measured meets the budget; the closest one is returned."""


def preview(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages stay one readable line (no whole configs)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listing(items: object, limit: int = 10) -> str:
    """The first ``limit`` items of a list as a Python list literal, with how many more: ``['a', 'b', ... (+998)]``."""
    items = list(items)  # type: ignore[call-overload]
    shown = ", ".join(preview(item, 60) for item in items[:limit])
    return f"[{shown}{f', ... (+{len(items) - limit} more)' if len(items) > limit else ''}]"
