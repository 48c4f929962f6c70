"""PruneWrapper: a layer whose kernels are multiplied by magnitude masks updated during training.

State lives in the wrapper as non-trainable variables, so it saves with the model and trains
the same way on every backend (including JAX's stateless train step):

* ``pruning_step`` (int32) counts training calls. At each training call the wrapper reads
  it, asks the schedule whether masks are due, recomputes them under ``keras.ops.cond``
  (the argsort runs only on update steps), and increments it. No callback is needed to
  drive pruning; :class:`kopt.callbacks.UpdatePruningStep` only checks the run.
* one ``mask`` per pruned weight, same shape as the weight, initialised to ones.

The forward pass uses ``weight * mask``, so pruned weights get zero gradient and contribute
nothing even if the optimizer's momentum moves the underlying variable; masks are recomputed
from the *masked* magnitudes, so once pruned a weight stays pruned. ``strip()`` bakes the
masks into a plain copy of the layer.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from kopt.core.backend import branches_on_host
from kopt.core.errors import InvalidArgumentError, KoptWarning, UnsupportedLayerError
from kopt.core.substitution import call_with_weights
from kopt.sparsity.masks import check_m_by_n, m_by_n_mask, magnitude_mask
from kopt.sparsity.prunable import NotPrunable, PrunableWeight, plan_layer
from kopt.sparsity.schedules import ConstantSparsity, PruningSchedule
from kopt.technique.inplace import InPlaceWrapped, calls_per_block_call
from kopt.technique.wrapper import KoptWrapper


def check_options(
    schedule: Any, m_by_n: Sequence[int] | None, block_size: Sequence[int]
) -> tuple[PruningSchedule, tuple[int, int] | None, tuple[int, int]]:
    """Validate the pruning options shared by the wrapper and ``prune_low_magnitude``."""
    if schedule is None:
        schedule = ConstantSparsity(0.5, begin_step=0)
    if not isinstance(schedule, PruningSchedule):
        raise InvalidArgumentError(
            f"schedule={schedule!r} is not a pruning schedule: pass kopt.sparsity.ConstantSparsity(...) "
            "or kopt.sparsity.PolynomialDecay(...)."
        )
    m_by_n = check_m_by_n(m_by_n) if m_by_n is not None else None
    if block_size is None:
        block_size = (1, 1)
    try:
        block = tuple(int(b) for b in block_size)
    except (TypeError, ValueError):
        block = ()
    if len(block) != 2 or any(b < 1 for b in block):
        raise InvalidArgumentError(f"block_size={block_size!r} is not valid: give two positive integers (rows, cols).")
    if m_by_n is not None and block != (1, 1):
        raise InvalidArgumentError(
            f"m_by_n={m_by_n} and block_size={block} cannot be combined: M:N sparsity fixes its own pattern."
        )
    return schedule, m_by_n, block  # type: ignore[return-value]


@keras.saving.register_keras_serializable(package="kopt")
class PruneWrapper(KoptWrapper):
    """Prunes the kernels of ``layer`` by magnitude following ``schedule``.

    Args:
        layer: the layer to prune (built-in prunable type, or one with ``get_prunable_weights``).
        schedule: when and how much to prune; default ``ConstantSparsity(0.5, begin_step=0)``.
        m_by_n: ``(m, n)`` for structured sparsity: at least ``m`` zeros in every ``n``
            consecutive weights along the input-channel axis of the deployed TFLite weight
            (the schedule then only says *when* masks update; its sparsity is ignored).
            Weights that cannot take the pattern are left dense and listed in
            :attr:`skipped_weights`; if none can, building the wrapper fails.
        block_size: ``(rows, cols)`` blocks over the last two axes (Keras layout) pruned as units.
        calls_per_step: how many times the layer is called per training step (a shared layer
            called at two places: 2); ``prune_low_magnitude`` sets it from the model graph.
    """

    technique = "prune"

    def __init__(
        self,
        layer: keras.layers.Layer,
        schedule: PruningSchedule | None = None,
        m_by_n: Sequence[int] | None = None,
        block_size: Sequence[int] = (1, 1),
        calls_per_step: int = 1,
        **kwargs: Any,
    ):
        kwargs.setdefault("name", f"prune_{layer.name}")
        super().__init__(layer, **kwargs)
        self.schedule, self.m_by_n, self.block_size = check_options(schedule, m_by_n, block_size)
        if isinstance(calls_per_step, bool) or not isinstance(calls_per_step, int) or calls_per_step < 1:
            raise InvalidArgumentError(f"calls_per_step={calls_per_step!r} is not valid: it must be an integer >= 1.")
        self.calls_per_step = calls_per_step
        self.supports_masking = getattr(layer, "supports_masking", False)
        self.pruned_weights: list[PrunableWeight] = []
        self.skipped_weights: dict[str, str] = {}
        self.masks: list[keras.Variable] = []

    # ------------------------------------------------------------------ build
    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        try:
            plan = plan_layer(self.layer, self.m_by_n, self.block_size)
        except NotPrunable as reason:
            raise UnsupportedLayerError(
                f"Cannot prune layer {self.layer.name!r} ({type(self.layer).__name__}): {reason}."
            ) from None
        self.pruned_weights = plan.prune
        self.skipped_weights = dict(plan.skipped)
        self.masks = [
            self.add_weight(
                name=f"{weight.name.replace('.', '_')}_mask",
                shape=tuple(weight.variable.shape),
                initializer="ones",
                dtype=weight.variable.dtype,
                trainable=False,
                autocast=False,  # under mixed precision, torch would assign into a float16 copy
                aggregation="only_first_replica",
            )
            for weight in self.pruned_weights
        ]
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.built = True

    # ------------------------------------------------------------------ masks
    def _new_mask(self, weight: PrunableWeight, mask: Any, sparsity: Any) -> Any:
        # Rank the *masked* magnitudes: pruned weights score 0, so they stay pruned.
        masked = ops.stop_gradient(ops.multiply(weight.variable, mask))
        if self.m_by_n is not None:
            new = m_by_n_mask(masked, self.m_by_n, weight.input_axis)
        else:
            new = magnitude_mask(masked, sparsity, self.block_size)
        return ops.cast(new, mask.dtype)  # both cond branches must agree (float16 reads under mixed precision)

    def _advance(self) -> list[Any]:
        """One training call: update masks if the schedule says so, count the step, return masks."""
        count = ops.convert_to_tensor(self.pruning_step)
        step = ops.floor_divide(count, self.calls_per_step) if self.calls_per_step > 1 else count
        update = self.schedule.update_tensor(step)
        if self.calls_per_step > 1:
            update = ops.logical_and(update, ops.equal(ops.mod(count, self.calls_per_step), 0))
        if branches_on_host() and not bool(ops.convert_to_numpy(update)):
            self.pruning_step.assign(count + 1)
            return [ops.convert_to_tensor(mask) for mask in self.masks]  # PyTorch: no mask is due, nothing to copy
        sparsity = self.schedule.sparsity_tensor(step)
        current = [ops.convert_to_tensor(mask) for mask in self.masks]
        new_masks = ops.cond(
            update,
            lambda: [self._new_mask(w, m, sparsity) for w, m in zip(self.pruned_weights, current)],
            lambda: current,
        )
        new_masks = [ops.stop_gradient(m) for m in new_masks]
        for variable, value in zip(self.masks, new_masks):
            variable.assign(value)
        self.pruning_step.assign(count + 1)  # last: on PyTorch `count` (and `step`) may view the variable
        return new_masks

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        """``(weight, masked weight)`` for every pruned weight, with the current masks.

        ``where`` rather than ``weight * mask``: a negative weight times 0 is ``-0.0``, whose
        sign bit survives into the deployed float buffer and spoils its compression.
        """
        result = []
        for weight, mask in zip(self.pruned_weights, self.masks):
            value = ops.convert_to_tensor(weight.variable)
            result.append((weight.variable, ops.where(ops.not_equal(mask, 0), value, ops.zeros_like(value))))
        return result

    # ------------------------------------------------------------------ call
    def call(self, inputs: Any, training: bool | None = None, mask: Any = None, **kwargs: Any) -> Any:
        if training:
            masks = self._advance()
            substitutions = [
                (weight.variable, ops.multiply(weight.variable, m)) for weight, m in zip(self.pruned_weights, masks)
            ]
        else:
            substitutions = self.transformed_weights()
        if training is not None:
            kwargs["training"] = training
        if mask is not None and getattr(self.layer, "_call_has_mask_arg", False):
            kwargs["mask"] = mask
        return call_with_weights(self.layer, substitutions, inputs, **kwargs)

    def compute_mask(self, inputs: Any, previous_mask: Any = None) -> Any:
        return self.layer.compute_mask(inputs, previous_mask)

    # ------------------------------------------------------------------ inspection
    def weight_sparsity(self) -> dict[str, float]:
        """Fraction of zeros in each deployed (masked) weight, by weight name."""
        result = {}
        for weight, mask in zip(self.pruned_weights, self.masks):
            values = np.asarray(ops.convert_to_numpy(weight.variable.value))
            deployed = values * np.asarray(ops.convert_to_numpy(mask.value))
            result[weight.name] = float(np.mean(deployed == 0)) if deployed.size else 0.0
        return result

    @property
    def step(self) -> int:
        """Training steps seen by this layer (``pruning_step // calls_per_step``)."""
        return int(ops.convert_to_numpy(self.pruning_step.value)) // self.calls_per_step

    # ------------------------------------------------------------------ config
    def reached_variables(self) -> list[keras.Variable]:
        return [weight.variable for weight in self.pruned_weights] if self.built else []

    def final_sparsity(self) -> float:
        """The sparsity the schedule (or the M:N pattern) ends at."""
        if self.m_by_n is not None:
            m, n = self.m_by_n
            return m / n
        try:
            return float(self.schedule.final_sparsity_value)
        except NotImplementedError:  # a custom schedule that does not say: nothing to hold it to
            return 0.0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "schedule": keras.saving.serialize_keras_object(self.schedule),
                "m_by_n": list(self.m_by_n) if self.m_by_n is not None else None,
                "block_size": list(self.block_size),
                "calls_per_step": self.calls_per_step,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "PruneWrapper":
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)


def count_steps_in_place(wrapped: InPlaceWrapped, block_calls: int = 1) -> InPlaceWrapped:
    """Give each PruneWrapper inside a block wrapped in place its calls per training step, so its step
    advances once per training step (as a top-level wrapper's does): the calls one block call makes
    (:func:`~kopt.technique.inplace.calls_per_block_call`) times ``block_calls``, the model's calls of the block."""
    counts = calls_per_block_call(wrapped.layer)
    for _, wrapper in wrapped.wrappers():
        if isinstance(wrapper, PruneWrapper):
            wrapper.calls_per_step = max(1, counts.get(id(wrapper), 1)) * block_calls
    return wrapped


def warn_skipped_weights(wrapper: PruneWrapper) -> None:
    """Tell the user which weights of a directly wrapped layer stay dense (partial M:N)."""
    if wrapper.skipped_weights:
        details = "; ".join(f"{name}: {reason}" for name, reason in wrapper.skipped_weights.items())
        warnings.warn(f"Layer {wrapper.layer.name!r}: some weights are left dense. {details}.", KoptWarning, stacklevel=3)
