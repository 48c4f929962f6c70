"""Pruning schedules: at which training steps masks are recomputed, and to what sparsity.

A schedule is evaluated inside the layer's training call, so :meth:`PruningSchedule.__call__`
uses ``keras.ops`` only and takes the step as a tensor; it returns
``(update_now, sparsity)`` as tensors. The same arithmetic is available in plain Python
(:meth:`PruningSchedule.sparsity_at`, :meth:`PruningSchedule.updates_at`) for callbacks,
reports and tests.

Update rule shared by both schedules: the mask is recomputed at ``begin_step`` and then every
``frequency`` steps up to ``end_step`` inclusive, **and always at ``end_step``** even if
``end_step - begin_step`` is not a multiple of ``frequency``, so the final sparsity is reached
whenever training gets that far. ``end_step=-1`` (ConstantSparsity only) means "never stop".
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
from keras import ops

from kopt.core.errors import InvalidArgumentError


def _check_sparsity(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise InvalidArgumentError(
            f"{name}={value!r} is not a valid sparsity: it must be a number in [0, 1) "
            "(the fraction of weights set to zero; 1.0 would remove every weight)."
        )
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InvalidArgumentError(f"{name}={value!r} is not valid: it must be an integer >= {minimum}.")
    return int(value)


class PruningSchedule:
    """Base class: subclasses define :meth:`sparsity_tensor` and hold begin/end/frequency."""

    begin_step: int
    end_step: int
    frequency: int

    # ------------------------------------------------------------------ keras.ops
    def sparsity_tensor(self, step: Any) -> Any:
        """Target sparsity at ``step`` (float32 tensor)."""
        raise NotImplementedError

    def update_tensor(self, step: Any) -> Any:
        """Whether masks are recomputed at ``step`` (bool tensor)."""
        step = ops.convert_to_tensor(step, dtype="int32")
        begin, end, frequency = self.begin_step, self.end_step, self.frequency
        after_begin = ops.greater_equal(step, begin)
        on_beat = ops.equal(ops.mod(step - begin, frequency), 0)
        if end < 0:
            return ops.logical_and(after_begin, on_beat)
        before_end = ops.less_equal(step, end)
        at_end = ops.equal(step, end)
        return ops.logical_and(ops.logical_and(after_begin, before_end), ops.logical_or(on_beat, at_end))

    def __call__(self, step: Any) -> tuple[Any, Any]:
        """``(update_now, sparsity)`` at ``step``, as tensors (bool, float32)."""
        return self.update_tensor(step), self.sparsity_tensor(step)

    # ------------------------------------------------------------------ python
    def sparsity_at(self, step: int) -> float:
        return float(ops.convert_to_numpy(self.sparsity_tensor(step)))

    def updates_at(self, step: int) -> bool:
        return bool(ops.convert_to_numpy(self.update_tensor(step)))

    @property
    def final_sparsity_value(self) -> float:
        """The sparsity the schedule ends at."""
        raise NotImplementedError

    def last_update_step(self) -> int | None:
        """The step of the final mask update, or ``None`` when the schedule never ends."""
        return None if self.end_step < 0 else self.end_step

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PruningSchedule":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kopt")
class ConstantSparsity(PruningSchedule):
    """Prune to ``target_sparsity`` at ``begin_step`` and keep that sparsity.

    The mask is recomputed every ``frequency`` steps from ``begin_step`` to ``end_step``
    (``-1``: for the whole training). Recomputing at constant sparsity keeps the same zeros
    unless training moves a surviving weight below a pruned one's magnitude (pruned
    weights count as zero, so they stay pruned).
    """

    def __init__(self, target_sparsity: float, begin_step: int = 0, end_step: int = -1, frequency: int = 100):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step = _check_int("begin_step", begin_step, 0)
        self.end_step = _check_int("end_step", end_step, -1)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise InvalidArgumentError(
                f"end_step={end_step} is before begin_step={begin_step}: pass end_step >= begin_step, "
                "or end_step=-1 to keep pruning until training ends."
            )
        self.frequency = _check_int("frequency", frequency, 1)

    def sparsity_tensor(self, step: Any) -> Any:
        return ops.convert_to_tensor(self.target_sparsity, dtype="float32")

    @property
    def final_sparsity_value(self) -> float:
        return self.target_sparsity

    def get_config(self) -> dict[str, Any]:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="kopt")
class PolynomialDecay(PruningSchedule):
    """Raise sparsity from ``initial_sparsity`` to ``final_sparsity`` between two steps.

    ``s(t) = final + (initial - final) * (1 - p) ** power`` with
    ``p = clip((t - begin_step) / (end_step - begin_step), 0, 1)``: fast at first, gentle near
    the end (``power=3`` is the gradual-pruning curve of Zhu & Gupta, 2017). Sparsity may not
    decrease: pruned weights are not regrown.
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        if self.final_sparsity < self.initial_sparsity:
            raise InvalidArgumentError(
                f"final_sparsity={final_sparsity} is below initial_sparsity={initial_sparsity}: "
                "sparsity can only grow during pruning."
            )
        self.begin_step = _check_int("begin_step", begin_step, 0)
        self.end_step = _check_int("end_step", end_step, -1)
        if self.end_step <= self.begin_step:
            raise InvalidArgumentError(
                f"end_step={end_step} must be after begin_step={begin_step}: PolynomialDecay needs a "
                "range of steps to raise the sparsity over (use ConstantSparsity for a one-shot prune)."
            )
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not float(power) > 0:
            raise InvalidArgumentError(f"power={power!r} is not valid: it must be a number > 0.")
        self.power = float(power)
        self.frequency = _check_int("frequency", frequency, 1)

    def sparsity_tensor(self, step: Any) -> Any:
        step = ops.cast(ops.convert_to_tensor(step), "float32")
        span = float(self.end_step - self.begin_step)
        progress = ops.clip((step - float(self.begin_step)) / span, 0.0, 1.0)
        remaining = ops.power(1.0 - progress, self.power)
        return ops.cast(self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * remaining, "float32")

    @property
    def final_sparsity_value(self) -> float:
        return self.final_sparsity

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }
