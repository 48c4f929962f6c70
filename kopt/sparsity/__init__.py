"""Magnitude pruning for Keras 3 on TensorFlow, JAX and PyTorch.

``prune_low_magnitude(model, schedule=...)`` wraps every prunable layer in a
:class:`PruneWrapper`; ``model.fit`` then prunes following the schedule;
``kopt.strip(model)`` returns a plain Keras model with the zeros baked in.
"""

from kopt.sparsity.api import PruningReport, prune_low_magnitude
from kopt.sparsity.callbacks import PruningSummaries, UpdatePruningStep
from kopt.sparsity.masks import m_by_n_mask, magnitude_mask
from kopt.sparsity.prunable import PrunableLayer, prunable_weights
from kopt.sparsity.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kopt.sparsity.settings import PruneSettings
from kopt.sparsity.technique import PRUNING
from kopt.sparsity.wrapper import PruneWrapper

__all__ = [
    "PruneSettings",
    "PRUNING",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneWrapper",
    "PruningReport",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "m_by_n_mask",
    "magnitude_mask",
    "prunable_weights",
    "prune_low_magnitude",
]
