"""What an optimization did, above the techniques and the export: tables, plots, the Pareto chart.

:mod:`~kopt.report.summary` (per-stage accuracy, sparsity, unique values, sizes; ``compression``),
:mod:`~kopt.report.plots` (weight density, size vs accuracy, sensitivity) and
:mod:`~kopt.report.pareto` (the search's Pareto chart). Metrics themselves live in :mod:`kopt.metrics`.
"""

from kopt.report import plots, summary
from kopt.report.summary import *  # noqa: F403  the package's public names are the summary's (kept in one list)

__all__ = ["plots", *summary.__all__]
