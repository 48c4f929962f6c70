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

from kopt import (
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
from kopt.optimize import OptimizeResult, optimize, prepare  # noqa: E402  isort: skip

__version__ = "0.1.0.dev0"

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
