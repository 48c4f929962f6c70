"""kopt: model optimization (pruning, clustering, quantization-aware training) for Keras 3.

The packages, bottom to top:

* ``kopt.core``: the floor: the layer-layout table, every error class, variable substitution,
  per-replica reductions, model and data checks.
* ``kopt.graph``: model <-> networkx DAG, pattern matching and rewrites.
* ``kopt.technique``: what every technique shares: the wrapper protocol, ``strip``, coverage warnings.
* ``kopt.sparsity`` (pruning), ``kopt.clustering`` (weight sharing), ``kopt.quantization`` (QAT).
* ``kopt.export``: int8 TFLite lowering, the Edge TPU and TFLite Micro checks.
* ``kopt.metrics``: top-1 accuracy and zipped sizes, the one definition everything uses.
* ``kopt.policy``: what to do to which layer (``kopt.Policy``, presets).
* ``kopt.analysis`` (per-layer sensitivity) and ``kopt.search`` (the ``"auto"`` policy).
* ``kopt.report``: per-stage tables, plots, the Pareto chart.
* ``kopt.pipeline``: the staged pipeline (stage runner, stages, training settings, callbacks).
* ``kopt.api``: ``kopt.optimize``/``kopt.prepare``, choosing between a plan (the pipeline) and a search.
* ``kopt.cli``: the ``kopt`` command.

``kopt.register_layer`` teaches every technique a custom layer type (one row of the layer-layout
table in ``kopt.core.layers``).
"""

import os as _os
import sys as _sys

__version__ = "0.1.0.dev0"

#: Module paths user code imports from (``from kopt.core.errors import KoptError``, ``kopt.callbacks.for_model``),
#: and their homes in the packages above.
_ALIASES = {
    "callbacks": "kopt.pipeline.callbacks",
    "coverage": "kopt.technique.coverage",
    "errors": "kopt.core.errors",
    "plots": "kopt.report.plots",
    "presets": "kopt.policy.presets",
    "stages": "kopt.pipeline.stages",
    "training": "kopt.pipeline.training",
}


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
    """Import every package: this registers kopt's layer classes with Keras (``.keras`` files load)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    from kopt import analysis, clustering, export, graph, pipeline, quantization, report, search, sparsity
    from kopt.api import OptimizeResult, optimize, prepare
    from kopt.core.errors import CoverageWarning
    from kopt.core.layers import Kernel
    from kopt.policy import Policy
    from kopt.registration import register_layer
    from kopt.search import Budget
    from kopt.technique.strip import strip

    aliases = {name: importlib.import_module(home) for name, home in _ALIASES.items()}
    for name, module in aliases.items():
        _sys.modules[f"{__name__}.{name}"] = module
    globals().update(
        aliases,
        analysis=analysis, clustering=clustering, export=export, graph=graph, pipeline=pipeline,
        quantization=quantization, report=report, search=search, sparsity=sparsity,
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
    "CoverageWarning",
    "Kernel",
    "OptimizeResult",
    "Policy",
    "__version__",
    "analysis",
    "callbacks",
    "clustering",
    "coverage",
    "errors",
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
