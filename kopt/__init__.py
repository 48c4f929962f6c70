"""kopt: model optimization (pruning, clustering, quantization-aware training) for Keras 3.

Subpackages: ``kopt.graph`` (model <-> networkx DAG), ``kopt.sparsity`` (pruning),
``kopt.clustering`` (weight sharing), ``kopt.quantization`` (QAT), ``kopt.export``
(int8 TFLite lowering, Edge TPU check), ``kopt.analysis`` (per-layer sensitivity),
``kopt.search`` (the ``"auto"`` policy: smallest model within a :class:`Budget`),
``kopt.callbacks``, ``kopt.report``, ``kopt.plots``.
``kopt.Policy`` describes what to do, ``kopt.optimize`` does it, ``kopt.strip`` removes the
training wrappers, ``kopt.register_layer`` teaches every technique a custom layer type
(one row of the layer-layout table in ``kopt.core.layers``).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0.dev0"


def _started_as_the_cli() -> bool:
    """True while the ``kopt`` command starts (console script or ``python -m kopt.cli``).

    Its ``--help``, ``--version`` and usage errors must answer without waiting seconds for
    TensorFlow; the command loads the rest (:func:`_load`) before it touches a model.
    """
    if "keras" in _sys.modules:
        return False  # Keras is there already: registering costs nothing more
    name = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    if name.removesuffix(".exe") == "kopt":
        return True
    argv = list(getattr(_sys, "orig_argv", []))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "kopt.cli"


def _load() -> None:
    """Import every subpackage: this registers kopt's layer classes with Keras (``.keras`` files load)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from kopt import (  # noqa: F401
        analysis,
        callbacks,
        clustering,
        coverage,
        export,
        graph,
        pipeline,
        plots,
        quantization,
        report,
        search,
        sparsity,
        stages,
        training,
    )
    from kopt.core.layers import Kernel
    from kopt.coverage import CoverageWarning
    from kopt.policy import Policy
    from kopt.registration import register_layer
    from kopt.search import Budget
    from kopt.strip import strip

    # Last, so that the name ``kopt.optimize`` is the function, not the module.
    from kopt.optimize import OptimizeResult, optimize, prepare  # isort: skip

    globals().update(
        Budget=Budget, Kernel=Kernel, CoverageWarning=CoverageWarning, OptimizeResult=OptimizeResult,
        Policy=Policy, register_layer=register_layer, strip=strip, optimize=optimize, prepare=prepare,
    )


_loaded = False


def __getattr__(name: str):
    """The CLI's lazy start: the first attribute asked for loads everything."""
    if name.startswith("__"):
        raise AttributeError(name)
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module 'kopt' has no attribute {name!r}") from None


if not _started_as_the_cli():
    _load()


__all__ = [
    "Budget",
    "Kernel",
    "CoverageWarning",
    "OptimizeResult",
    "Policy",
    "__version__",
    "analysis",
    "callbacks",
    "clustering",
    "coverage",
    "export",
    "graph",
    "optimize",
    "pipeline",
    "plots",
    "prepare",
    "quantization",
    "register_layer",
    "report",
    "search",
    "sparsity",
    "stages",
    "strip",
    "training",
]
