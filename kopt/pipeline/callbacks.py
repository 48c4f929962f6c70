"""``kopt.callbacks``: the Keras callbacks of every kopt technique, in one place.

Pruning: :class:`UpdatePruningStep` (checks a pruning run) and :class:`PruningSummaries`
(per-layer sparsity for TensorBoard). :func:`for_model` picks the callbacks a wrapped model
needs in your own ``fit``. Other techniques add theirs here.
"""

from __future__ import annotations

import keras

from kopt.core.errors import UnsupportedModelError
from kopt.sparsity.callbacks import PruningSummaries, UpdatePruningStep, prune_wrappers


def for_model(model: keras.Model, *, log_dir: str | None = None) -> list[keras.callbacks.Callback]:
    """The kopt callbacks to pass to ``model.fit`` for the wrappers ``model`` contains.

    Pruned layers get :class:`~kopt.callbacks.UpdatePruningStep` (warns when training stops
    before a schedule finishes) and, with ``log_dir``, :class:`~kopt.callbacks.PruningSummaries`
    for TensorBoard. Clustering and quantization-aware training update their state inside the
    layers and need no callback, so a model without pruned layers gets ``[]``.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"for_model expects a keras.Model, got {type(model).__name__}.")
    callbacks: list[keras.callbacks.Callback] = []
    if next(prune_wrappers(model), None) is not None:
        callbacks.append(UpdatePruningStep())
        if log_dir is not None:
            callbacks.append(PruningSummaries(log_dir))
    return callbacks


__all__ = ["PruningSummaries", "UpdatePruningStep", "for_model"]
