"""Every exception and warning class kopt raises on purpose. Each error subclasses the built-in type users would
catch anyway; each warning is a :class:`KoptWarning` (a ``UserWarning``)."""


class KoptError(Exception):
    """Base class of every error kopt raises on purpose."""


class UnsupportedModelError(KoptError, TypeError):
    """The model's kind (subclassed, unbuilt Sequential, not a Keras model) cannot be analyzed."""


class GraphRewriteError(KoptError, ValueError):
    """A requested rewrite of the model graph is not well formed."""


class InvalidArgumentError(KoptError, ValueError):
    """An argument of a public kopt function (schedule, option, block size...) has an invalid value."""


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


class KoptWarning(UserWarning):
    """Base class of every warning kopt emits: filter them all with ``warnings.filterwarnings(..., KoptWarning)``."""


class KoptRuntimeWarning(KoptWarning, RuntimeWarning):
    """kopt fell back to a safer result at run time (a compressed or sparse file that did not verify...)."""


class CoverageWarning(KoptWarning):
    """A technique reached less of the model than asked; the message names each layer left out and why."""


class BudgetNotMetWarning(KoptWarning):
    """No candidate the search measured meets the budget; the closest one is returned."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of a public kopt function has the wrong type (also a ``TypeError``, as Python's own)."""


class UnknownNameError(InvalidArgumentError, KeyError):
    """A lookup by name (a stage of a report, a weight of a layer) found nothing; also a ``KeyError``.

    ``str()`` gives the message, not ``KeyError``'s quoted repr.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def preview(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages stay one readable line (no whole configs)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listing(items: object, limit: int = 10) -> str:
    """The first ``limit`` items of a list as a Python list literal, with how many more: ``['a', 'b', ... (+998)]``."""
    items = list(items)  # type: ignore[call-overload]
    shown = ", ".join(preview(item, 60) for item in items[:limit])
    return f"[{shown}{f', ... (+{len(items) - limit} more)' if len(items) > limit else ''}]"
