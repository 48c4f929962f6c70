"""What an optimization did, above the techniques and the export: tables, plots, the Pareto chart.

:mod:`~kopt.report.summary` (per-stage accuracy, sparsity, unique values, sizes; ``compression``),
:mod:`~kopt.report.plots` (weight density, size vs accuracy, sensitivity) and
:mod:`~kopt.report.pareto` (the search's Pareto chart). Metrics themselves live in :mod:`kopt.metrics`.
"""

from kopt.report import plots
from kopt.report.summary import (
    DeployedLayer,
    LayerStats,
    Report,
    StageReport,
    compression,
    deployed_layers,
    keras_stage,
    layer_stats,
    tflite_stage,
    zipped_bytes,
)

__all__ = [
    "DeployedLayer",
    "LayerStats",
    "Report",
    "StageReport",
    "compression",
    "deployed_layers",
    "keras_stage",
    "layer_stats",
    "plots",
    "tflite_stage",
    "zipped_bytes",
]
