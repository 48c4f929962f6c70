"""``tfmot.sparsity.keras`` on kopt: TFMOT's pruning names, arguments and defaults."""

from kopt.sparsity import (
    ConstantSparsity,
    PolynomialDecay,
    PrunableLayer,
    PruningSchedule,
)
from kopt.tfmot.sparsity.keras.callbacks import PruningSummaries, UpdatePruningStep
from kopt.tfmot.sparsity.keras.prune import (
    prune_low_magnitude,
    prune_scope,
    strip_pruning,
)
from kopt.tfmot.sparsity.keras.pruning_policy import (
    PruneForLatencyOnXNNPack,
    PruningPolicy,
)

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "prune_low_magnitude",
    "prune_scope",
    "strip_pruning",
]
