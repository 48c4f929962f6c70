"""``run_stages``: the staged pipeline (baseline -> prune -> cluster -> QAT -> int8) for a resolved plan.

Each stage starts from the previous stage's *stripped* model, so techniques stack: pruning's
zeros are plain zeros when clustering (with ``preserve_sparsity``) starts, and clustering's
shared values are plain values when quantization-aware training starts. The stage functions
live in :mod:`kopt.stages`; this module only orders them and collects their results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras

from kopt.core.errors import InvalidArgumentError, UnknownNameError
from kopt.pipeline.stages import (
    StageResult,
    baseline_stage,
    check_plan,
    lower_stage,
    stage_names,
    train_stage,
)
from kopt.pipeline.training import STAGES, Training, accuracy_key, features
from kopt.policy import Plan

Log = Callable[[str], None]


@dataclass
class PipelineResult:
    """Every stage's result in order; ``model`` is the last Keras model, ``tflite`` the int8 model (or None)."""

    stages: list[StageResult] = field(default_factory=list)

    def stage(self, name: str) -> StageResult:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UnknownNameError(f"No stage {name!r}; stages run: {[s.name for s in self.stages]}.")

    @property
    def model(self) -> keras.Model:
        return [s for s in self.stages if s.model is not None][-1].model  # type: ignore[return-value]

    @property
    def tflite(self) -> bytes | None:
        return next((s.tflite for s in reversed(self.stages) if s.tflite is not None), None)

    @property
    def edgetpu(self) -> Any:
        return next((s.edgetpu for s in reversed(self.stages) if s.edgetpu is not None), None)


def _quiet(_: str) -> None:
    return None


def run_stages(
    model: keras.Model,
    plan: Plan,
    training: Training,
    *,
    stages: Sequence[str] | None = None,
    lower: bool = True,
    representative_data: Any = None,
    baseline: bool = True,
    seed: int | None = None,
    strict: bool = False,
    log: Log = _quiet,
) -> PipelineResult:
    """Run the plan's stages on ``model`` and return every stage's result.

    Args:
        model: the trained float model (not modified).
        plan: ``policy.resolve(model)``; it decides which layers each stage touches and how.
        training: data, epochs per stage, compile settings (:class:`kopt.training.Training`).
        stages: the training stages to run, a subset of ``("prune", "cluster", "quantize")`` in
            that order; default: every stage the plan needs (:func:`kopt.stages.stage_names`).
        lower: finish with the int8 TFLite stage (an Edge TPU check included).
        representative_data: calibration inputs for post-training int8 (a model that did not go
            through QAT); default: up to 100 samples of the training data.
        baseline: measure the input model first.
        seed: seeds clustering's centroid initialisation.
        strict: raise :class:`kopt.stages.NotFullyMappedError` instead of warning when an
            Edge TPU target is not fully mapped.
        log: receives one line per stage start and one summary line per stage end.
    """
    check_plan(plan)
    names = list(stage_names(plan) if stages is None else stages)
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise InvalidArgumentError(f"Unknown stage(s) {unknown}; stages: {list(STAGES)}.")
    if names != [s for s in STAGES if s in names]:
        raise InvalidArgumentError(f"Stages must run in the order {list(STAGES)}, got {names}.")

    result = PipelineResult()
    if baseline:
        result.stages.append(baseline_stage(model, training, log=log))
    current = model
    for name in names:
        stage = train_stage(current, plan, training, name, seed=seed, log=log)
        result.stages.append(stage)
        current = stage.model
    if lower:
        if representative_data is None:  # only used when the model did not go through QAT
            representative_data = features(training.train_data)
        metrics = result.stages[-1].report.keras_metrics if result.stages else {}
        if len(current.outputs) > 1:  # no single accuracy: one per output Keras measures accuracy for
            eval_data = training.eval_arrays_per_output(current)
            classified = classified_outputs(current, metrics)
        else:
            measurable = not metrics or accuracy_key(metrics) is not None
            eval_data, classified = (training.eval_arrays(current) if measurable else None), None
        result.stages.append(
            lower_stage(
                current,
                plan,
                representative_data=representative_data,
                eval_data=eval_data,
                classified_outputs=classified,
                strict=strict,
                log=log,
            )
        )
    return result


def classified_outputs(model: keras.Model, metrics: dict[str, float]) -> list[str]:
    """The outputs with an accuracy metric in Keras' per-output results (``<output>_accuracy``):
    top-1 accuracy means something for them, not for a regression output."""
    return [name for name in model.output_names if any(k.startswith(f"{name}_") and "acc" in k for k in metrics)]


__all__ = ["PipelineResult", "run_stages"]
