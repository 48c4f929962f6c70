"""Pruning callbacks: check a pruning run, and log per-layer sparsity for TensorBoard.

Masks and the step counter are updated inside each wrapper's training call, so pruning
happens with or without these callbacks, on every backend. :class:`UpdatePruningStep` is
kept for code written against TFMOT and makes runs fail loudly instead of quietly: it
refuses a model without pruned layers and warns when training stops before a schedule
reaches its final sparsity.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import keras

from kopt.core.errors import InvalidArgumentError, KoptWarning
from kopt.sparsity.wrapper import PruneWrapper


def prune_wrappers(layer: keras.layers.Layer) -> Iterator[PruneWrapper]:
    """Every :class:`PruneWrapper` in ``layer`` (a model, possibly nested, or a block wrapped in place), each once."""
    seen: set[int] = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, PruneWrapper):
            yield current
            continue
        for child in getattr(current, "layers", None) or []:
            stack.append(child)
        stack.extend(getattr(current, "_layers", None) or [])  # sublayers of a block wrapped in place
        inner = getattr(current, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            stack.append(inner)


def _sync_state(model: keras.Model) -> None:
    """Under JAX, write the trainer's state back into the variables before reading them."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def _wrappers_or_raise(model: keras.Model, callback: str) -> list[PruneWrapper]:
    wrappers = list(prune_wrappers(model))
    if not wrappers:
        raise InvalidArgumentError(
            f"{callback} was used to train model {model.name!r}, which has no pruned layers. "
            "Wrap the model first: model = kopt.sparsity.prune_low_magnitude(model, schedule=...)."
        )
    return wrappers


class UpdatePruningStep(keras.callbacks.Callback):
    """Checks a pruning run (the step itself advances inside the wrapped layers).

    At the start of training it raises if the model has no pruned layers; at the end it
    warns, per layer, when training stopped before the schedule's last mask update, naming
    the sparsity reached and the target.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._wrappers = _wrappers_or_raise(self.model, "UpdatePruningStep")

    def on_train_end(self, logs: dict | None = None) -> None:
        _sync_state(self.model)
        unfinished = []
        for wrapper in self._wrappers:
            last = wrapper.schedule.last_update_step()
            begin = wrapper.schedule.begin_step
            step = wrapper.step
            if step <= begin or (last is not None and step <= last):
                reached = ", ".join(f"{k}={v:.3f}" for k, v in wrapper.weight_sparsity().items())
                end = "never" if last is None else f"at step {last}"
                unfinished.append(
                    f"{wrapper.name}: step {step}, schedule begins at step {begin} and ends {end}; "
                    f"sparsity {reached} (target {wrapper.schedule.final_sparsity_value:.3f})"
                )
        if unfinished:
            warnings.warn(
                "Training stopped before pruning finished for: " + "; ".join(unfinished)
                + ". Train for more steps or move the schedule's begin_step/end_step.",
                KoptWarning,
                stacklevel=2,
            )


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity and the pruning step to TensorBoard event files in ``log_dir``.

    Scalars ``pruning/<layer>/<weight>/sparsity`` and ``pruning/<layer>/step`` are written at
    the end of each epoch, or every ``update_freq`` batches when it is an integer (under JAX
    that forces a state sync per write, so keep it coarse).
    """

    def __init__(self, log_dir: str, update_freq: str | int = "epoch"):
        super().__init__()
        valid_int = isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq >= 1
        if update_freq != "epoch" and not valid_int:
            raise InvalidArgumentError(f"update_freq={update_freq!r} is not valid: use 'epoch' or an integer >= 1.")
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        import tensorflow as tf  # TensorBoard's event format; only used here, on the host.

        self._wrappers = _wrappers_or_raise(self.model, "PruningSummaries")
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.update_freq == "epoch":
            self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self) -> None:
        import tensorflow as tf

        _sync_state(self.model)
        with self._writer.as_default():
            for wrapper in self._wrappers:
                step = wrapper.step
                _scalar(tf, f"pruning/{wrapper.name}/step", step, step)
                for weight, sparsity in wrapper.weight_sparsity().items():
                    _scalar(tf, f"pruning/{wrapper.name}/{weight}/sparsity", sparsity, step)
        self._writer.flush()


def _scalar(tf, tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar written with core TF (``tf.summary.scalar`` needs the tensorboard package)."""
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = 1  # DATA_CLASS_SCALAR
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)
