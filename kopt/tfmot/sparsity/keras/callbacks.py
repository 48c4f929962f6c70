"""TFMOT's pruning callbacks: kopt's, with the hook signatures TFMOT's custom-training-loop guide calls.

That guide drives the callbacks by hand: ``step_callback.on_epoch_end(batch=...)`` (TFMOT's
``UpdatePruningStep.on_epoch_end`` names its first argument ``batch``) and
``log_callback.on_epoch_begin(epoch=...)`` without ever calling ``on_train_begin`` on it.
"""

from __future__ import annotations

import warnings
from typing import Any

from kopt.core.errors import KoptWarning
from kopt.sparsity import PruningSummaries as KoptPruningSummaries
from kopt.sparsity import UpdatePruningStep as KoptUpdatePruningStep


class UpdatePruningStep(KoptUpdatePruningStep):
    """kopt's check of a pruning run (the step itself advances inside each training step)."""

    def on_epoch_end(self, batch: Any = None, logs: dict | None = None, **kwargs: Any) -> None:
        """TFMOT's signature (``batch``, not ``epoch``); nothing to do at an epoch's end."""


class PruningSummaries(KoptPruningSummaries):
    """Per-layer sparsity for TensorBoard in ``log_dir``; also written at each epoch's start in a
    hand-written loop that never calls ``on_train_begin`` (TFMOT writes at epoch begin)."""

    def __init__(self, log_dir: str, update_freq: str | int = "epoch", **kwargs: Any):
        super().__init__(log_dir, update_freq=update_freq)
        if kwargs:
            warnings.warn(
                f"PruningSummaries ignores the TensorBoard arguments {sorted(kwargs)}: it writes pruning scalars "
                "only; add keras.callbacks.TensorBoard(...) for losses and metrics.",
                KoptWarning,
                stacklevel=2,
            )
        self._by_hand = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._writer is None:  # a custom loop: set up here, as TFMOT's TensorBoard-based callback can
            self.on_train_begin()
            self._by_hand = True
        if self._by_hand:
            self._write()
