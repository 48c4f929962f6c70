"""``CompileSettings``: how a model is compiled, carried from one model to the next (fresh optimizer each time).

Every stage fine-tunes a new model (wrapped, or stripped), so the user's compile settings must
travel with it: ``kopt.strip`` keeps them, the pipeline's stages and ``kopt.prepare`` reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import keras

from kopt.core.errors import CompileSettingsError


def _fresh(obj: Any) -> Any:
    """A new, unbuilt copy of an optimizer or metric object (strings and functions pass through)."""
    if isinstance(obj, (keras.optimizers.Optimizer, keras.metrics.Metric)):
        return obj.__class__.from_config(obj.get_config())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fresh(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _fresh(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class CompileSettings:
    """What every stage's model is compiled with (a fresh optimizer and fresh metrics each time)."""

    optimizer: Any
    loss: Any
    metrics: Any = None
    loss_weights: Any = None
    weighted_metrics: Any = None

    @classmethod
    def from_model(
        cls,
        model: keras.Model,
        *,
        optimizer: Any = None,
        loss: Any = None,
        metrics: Any = None,
    ) -> "CompileSettings":
        """The model's own compile settings, overridden by any of ``optimizer``/``loss``/``metrics`` given.

        Raises :class:`CompileSettingsError` when the model is not compiled and ``loss`` or
        ``optimizer`` is missing.
        """
        config: dict[str, Any] = {}
        if getattr(model, "compiled", False) and hasattr(model, "_compile_config"):
            config = dict(model._compile_config.config)
        optimizer = optimizer if optimizer is not None else config.get("optimizer")
        loss = loss if loss is not None else config.get("loss")
        metrics = metrics if metrics is not None else config.get("metrics")
        missing = [name for name, value in (("loss", loss), ("optimizer", optimizer)) if value is None]
        if missing:
            raise CompileSettingsError(
                f"Model {model.name!r} is not compiled, so kopt does not know how to fine-tune it: call "
                f"model.compile(optimizer=..., loss=..., metrics=['accuracy']) first, or pass "
                f"{' and '.join(f'{m}=' for m in missing)} (and metrics=) to kopt."
            )
        return cls(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            loss_weights=config.get("loss_weights"),
            weighted_metrics=config.get("weighted_metrics"),
        )

    def with_learning_rate_scale(self, scale: float) -> tuple["CompileSettings", str]:
        """These settings with the optimizer's constant learning rate times ``scale``, and a note saying so.

        Fine-tuning a trained model at the rate it was trained with tends to undo part of the
        training; a smaller rate keeps it. A learning-rate schedule is left as it is.
        """
        optimizer = self.optimizer
        if isinstance(optimizer, (str, dict)):
            optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            return self, f"optimizer {optimizer!r} kept as given"
        config = optimizer.get_config()
        rate = config.get("learning_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            return self, f"{type(optimizer).__name__}'s learning-rate schedule kept as given"
        config["learning_rate"] = float(rate) * scale
        scaled = optimizer.__class__.from_config(config)
        note = f"{type(optimizer).__name__} at learning rate {config['learning_rate']:.3g} (the model's {rate:.3g} x {scale:g})"
        return replace(self, optimizer=scaled), note

    def compile(self, model: keras.Model) -> keras.Model:
        """Compile ``model`` with these settings (fresh optimizer and metric objects); returns it."""
        model.compile(
            optimizer=_fresh(self.optimizer),
            loss=self.loss,
            metrics=_fresh(self.metrics),
            loss_weights=self.loss_weights,
            weighted_metrics=_fresh(self.weighted_metrics),
        )
        return model
