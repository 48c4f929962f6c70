"""``kopt.callbacks``: Keras callbacks of every kopt technique, in one place.

Pruning: :class:`UpdatePruningStep` (checks a pruning run) and :class:`PruningSummaries`
(per-layer sparsity for TensorBoard). :func:`for_model` picks the callbacks a wrapped model
needs. Other techniques add theirs here.
"""

from kopt.callbacks_for_model import for_model
from kopt.sparsity.callbacks import PruningSummaries, UpdatePruningStep

__all__ = ["PruningSummaries", "UpdatePruningStep", "for_model"]
