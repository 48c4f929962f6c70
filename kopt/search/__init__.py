"""The automatic search behind ``kopt.optimize(model, "auto", budget=kopt.Budget(...))``.

:class:`Budget` says what the int8 model must meet (accuracy drop, zipped size, Edge TPU) and
how much the search may spend; :mod:`kopt.search.walk` walks the deployment paths;
:mod:`kopt.search.allocate` turns sensitivity tables into per-layer settings;
:class:`SearchReport` holds every candidate measured and draws the Pareto chart.
"""

from kopt.core.errors import BudgetNotMetWarning
from kopt.search.allocate import allocate
from kopt.search.budget import Budget
from kopt.search.candidates import Candidate, SearchReport, pareto_front
from kopt.search.walk import FINETUNE_LEARNING_RATE_SCALE, SearchOutcome, search

__all__ = [
    "Budget",
    "BudgetNotMetWarning",
    "Candidate",
    "FINETUNE_LEARNING_RATE_SCALE",
    "SearchOutcome",
    "SearchReport",
    "allocate",
    "pareto_front",
    "search",
]
