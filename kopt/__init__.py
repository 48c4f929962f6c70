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

import sys as _sys

from kopt import analysis, clustering, export, graph, pipeline, quantization, report, search, sparsity
from kopt.core import errors
from kopt.core.layers import Kernel
from kopt.pipeline import callbacks, stages, training
from kopt.policy import Policy, presets
from kopt.registration import register_layer
from kopt.report import plots
from kopt.search import Budget
from kopt.technique import coverage
from kopt.technique.coverage import CoverageWarning
from kopt.technique.strip import strip

# The entry points (``kopt.api``), on top of the pipeline and the search.
from kopt.api import OptimizeResult, optimize, prepare  # noqa: E402  isort: skip

# Module paths that user code imports from (``from kopt.errors import KoptError``,
# ``kopt.callbacks.for_model``): they name the modules' homes in the packages above.
for _name, _module in {
    "callbacks": callbacks,
    "coverage": coverage,
    "errors": errors,
    "plots": plots,
    "presets": presets,
    "stages": stages,
    "training": training,
}.items():
    _sys.modules[f"{__name__}.{_name}"] = _module

__version__ = "0.1.0.dev0"

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
