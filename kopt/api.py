"""The one-liner: ``kopt.optimize(model, "pcqat", train_data=(x, y))`` and ``kopt.prepare`` for your own fit.

``optimize`` only composes public pieces: ``Policy.resolve`` (which layer gets what),
:func:`kopt.pipeline.run_stages` (prune -> strip -> cluster -> strip -> QAT -> int8 TFLite -> Edge
TPU check, each stage fine-tuned with the model's own compile settings) and
:mod:`kopt.report`. Everything it does can be done step by step with those functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from kopt.core.data import check_data, check_inputs, check_numeric_model
from kopt.core.errors import InvalidArgumentError, UnsupportedModelError
from kopt.core.validation import check_finite_weights
from kopt.pipeline import run_stages
from kopt.pipeline.stages import StageResult, check_plan, edgetpu_problem, stage_names, wrap
from kopt.pipeline.training import STAGES, CompileSettings, Training
from kopt.policy import Plan, Policy, PolicyError
from kopt.report.summary import Report
from kopt.search import FINETUNE_LEARNING_RATE_SCALE, Budget, SearchReport, search
from kopt.technique import coverage


def as_policy(policy: Policy | str | Mapping[str, Any]) -> Policy:
    """A :class:`Policy` from a policy, a preset name (``"pcqat"``) or a policy dict (as in JSON)."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return Policy.preset(policy)
    if isinstance(policy, Mapping):
        return Policy.from_dict(policy)
    raise PolicyError(f"policy must be a kopt.Policy, a preset name or a dict, got {type(policy).__name__}.")


def _check_model(model: Any, caller: str) -> None:
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{caller} needs a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise UnsupportedModelError(f"Model {model.name!r} is not built: give it an Input, or call it on data first.")
    check_numeric_model(model, caller)
    check_finite_weights(model, caller)


def _check_data(model: keras.Model, compile_settings: CompileSettings, train_data: Any, validation_data: Any,
                representative_data: Any) -> None:
    """Every array the run will use, checked before the first step (see :mod:`kopt.core.data`)."""
    check_data(model, train_data, argument="train_data", loss=compile_settings.loss)
    check_data(model, validation_data, argument="validation_data", loss=compile_settings.loss)
    if isinstance(representative_data, (np.ndarray, list, dict)):
        check_inputs(model, representative_data, argument="representative_data")


@dataclass
class OptimizeResult:
    """What :func:`optimize` produced.

    ``model``: the final Keras model, stripped of pruning/clustering wrappers (a QAT model keeps
    its fake-quant layers: they hold the int8 ranges); ``tflite``: the int8 ``.tflite`` bytes;
    ``report``: a :class:`kopt.report.Report`; ``stages``: every stage's
    :class:`kopt.stages.StageResult` (intermediate models and kernels, for plots);
    ``search``: with ``policy="auto"``, the :class:`kopt.search.SearchReport` (every candidate
    measured, the Pareto front) — ``policy`` is then the chosen candidate's per-layer policy.
    """

    model: keras.Model
    tflite: bytes | None
    report: Report
    policy: Policy
    plan: Plan
    stages: list[StageResult] = field(default_factory=list)
    search: SearchReport | None = None

    @property
    def edgetpu(self) -> Any:
        """The Edge TPU report of the int8 model (:class:`kopt.export.EdgeTPUReport`), or None."""
        return next((s.edgetpu for s in reversed(self.stages) if s.edgetpu is not None), None)

    def save(self, directory: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``model.keras``, ``model.tflite``, ``report.json``, ``report.md`` and the plots
        (``weight_density.png``, ``size_accuracy.png``; skipped when matplotlib is missing);
        after an automatic search also ``search.json``, ``search.md`` and ``pareto.png``.

        Returns the paths written, by kind.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        paths["keras"] = out / "model.keras"
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # so the file loads without a mismatch warning
        self.model.save(paths["keras"])
        if self.tflite is not None:
            paths["tflite"] = out / "model.tflite"
            paths["tflite"].write_bytes(self.tflite)
        paths["json"], paths["markdown"] = self.report.save(out)
        if plots:
            try:
                from kopt.report import plots as plotting

                paths["weight_density"] = plotting.pipeline_weight_density(self.stages, out / "weight_density.png")
                paths["size_accuracy"] = plotting.size_accuracy(self.report, out / "size_accuracy.png")
            except ImportError:  # matplotlib is an optional dependency
                pass
        if self.search is not None:
            paths.update(self.search.save(out, chart=plots))
        return paths


def optimize(
    model: keras.Model,
    policy: Policy | str | Mapping[str, Any],
    *,
    train_data: Any,
    validation_data: Any = None,
    epochs: int | Mapping[str, int] = 2,
    batch_size: int | None = 32,
    steps_per_epoch: int | None = None,
    representative_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    loss: Any = None,
    optimizer: Any = None,
    metrics: Any = None,
    seed: int | None = None,
    strict: bool = False,
    lower: bool = True,
    verbose: int | str = "auto",
    budget: Budget | None = None,
) -> OptimizeResult:
    """Run the deployment path ``policy`` names on ``model`` and return the int8 model and a report.

    ``policy="auto"`` searches instead: it walks the deployment paths (PTQ, QAT, per-layer
    pruning and clustering from sensitivity tables, preserving QAT) and returns the smallest
    int8 model within ``budget`` (a :class:`kopt.Budget`; default ``Budget()``: at most one
    accuracy point below the float model), with every candidate in ``result.search``. Without
    ``optimizer=``, it fine-tunes with the model's optimizer at a tenth of its learning rate.

    Args:
        model: a trained Functional or Sequential model (not modified).
        policy: a :class:`kopt.Policy`, a preset name (``"pcqat"`` = ``Policy.preset("pcqat")``)
            or a policy dict.
        train_data: ``(x, y)`` / ``(x, y, sample_weight)`` arrays, a ``tf.data.Dataset`` or a
            ``keras.utils.PyDataset``, used by every fine-tuning stage.
        validation_data: same kinds; validation during fit and the accuracy of every stage
            (without it, accuracies are measured on the training data).
        epochs: fine-tuning epochs of every stage, or per stage ``{"prune": 3, "cluster": 1,
            "quantize": 1}`` (stages not named get 2).
        batch_size: for array data. ``steps_per_epoch``: for data of unknown length.
        representative_data: calibration inputs for post-training int8 (policies without QAT);
            default: up to 100 samples of ``train_data``.
        callbacks: extra Keras callbacks for every stage's ``fit`` (kopt adds the ones each
            stage needs).
        loss, optimizer, metrics: compile settings of the fine-tuning stages; default: the
            model's own (an uncompiled model needs at least ``loss`` and ``optimizer``). Each
            stage gets a fresh optimizer built from this one's config.
        seed: seeds Keras, NumPy and Python RNGs (and clustering's initialisation) first.
        strict: raise :class:`kopt.stages.NotFullyMappedError` when the policy targets the
            Edge TPU and the int8 model is not fully mapped (default: a warning in the report).
            With ``"auto"`` it does nothing: only fully mapped candidates meet an Edge TPU budget,
            and a budget nothing meets gives a :class:`kopt.search.BudgetNotMetWarning`.
        lower: finish with the int8 TFLite stage and the Edge TPU check (``False``: stop after
            the last training stage; ``.tflite`` is then None).
        verbose: Keras ``fit`` verbosity; 0 also silences kopt's per-stage summary lines.
        budget: only with ``policy="auto"``: accuracy drop, size and target limits, and how
            many candidates / seconds the search may spend.

    Returns:
        :class:`OptimizeResult` with ``.model``, ``.tflite``, ``.report`` and ``.save(dir)``.
    """
    _check_model(model, "kopt.optimize")
    auto = isinstance(policy, str) and policy == "auto"
    if budget is not None and not isinstance(budget, Budget):
        raise InvalidArgumentError(f"budget must be a kopt.Budget, got {type(budget).__name__}.")
    if budget is not None and not auto:
        raise InvalidArgumentError(
            "budget= only applies to policy='auto' (the automatic search); a named policy runs as given."
        )
    if not auto:
        policy = as_policy(policy)
        plan = policy.resolve(model)
        check_plan(plan)
    compile_settings = CompileSettings.from_model(model, optimizer=optimizer, loss=loss, metrics=metrics)
    _check_data(model, compile_settings, train_data, validation_data, representative_data)
    training = Training(
        train_data=train_data,
        compile=compile_settings,
        validation_data=validation_data,
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        callbacks=list(callbacks or []),
        verbose=verbose,
    )
    if seed is not None:
        keras.utils.set_random_seed(seed)
    log = (lambda line: print(line, flush=True)) if verbose not in (0, "0", False) else (lambda line: None)
    if auto:
        if not lower:
            raise InvalidArgumentError("policy='auto' measures every candidate as int8 TFLite: it needs lower=True.")
        if optimizer is None:  # fine-tune gently: the search keeps what training reached
            scaled, note = compile_settings.with_learning_rate_scale(FINETUNE_LEARNING_RATE_SCALE)
            training = replace(training, compile=scaled)
            log(f"[kopt auto] fine-tuning with {note}; pass optimizer= to choose")
        outcome = search(
            model, budget or Budget(), training, representative_data=representative_data, seed=seed, log=log
        )
        return OptimizeResult(
            model=outcome.model,
            tflite=outcome.tflite,
            report=outcome.report,
            policy=outcome.policy,
            plan=outcome.plan,
            stages=outcome.stages,
            search=outcome.search,
        )
    log(f"[kopt] policy {policy.name!r} on model {model.name!r}: stages baseline -> "
        + " -> ".join([*stage_names(plan), *(["int8"] if lower else [])]))
    pipeline = run_stages(
        model, plan, training, representative_data=representative_data, seed=seed, strict=strict, lower=lower, log=log
    )
    report = Report(
        model_name=model.name,
        policy=policy.to_dict(),
        stages=[stage.report for stage in pipeline.stages],
        plan=plan.table(),
        eval_split=training.eval_split,
    )
    for stage in pipeline.stages:  # a technique that reached less of the model than asked (kopt.coverage)
        report.warnings.extend(n for n in stage.report.notes if n.startswith(coverage.PREFIX))
    for stage in pipeline.stages:
        if stage.name == "int8" and stage.edgetpu is not None and policy.target == "edgetpu" and not stage.edgetpu.fully_mapped:
            report.warnings.append(edgetpu_problem(stage.edgetpu))
    return OptimizeResult(
        model=pipeline.model,
        tflite=pipeline.tflite,
        report=report,
        policy=policy,
        plan=plan,
        stages=pipeline.stages,
    )


def prepare(
    model: keras.Model,
    policy: Policy | str | Mapping[str, Any],
    *,
    stage: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    compile: bool = True,
    loss: Any = None,
    optimizer: Any = None,
    metrics: Any = None,
) -> keras.Model:
    """The wrapped model of one stage of ``policy``, for users who run their own ``fit``.

    ``stage`` is ``"prune"``, ``"cluster"`` or ``"quantize"`` (default: the policy's first).
    ``steps`` is the number of training steps you will run (epochs x batches per epoch); it
    places pruning schedules whose ``end_step`` is not set (at 2/3 of it). With ``compile``
    (the default) the wrapped model is compiled like ``model`` with a fresh optimizer;
    ``loss``/``optimizer``/``metrics`` override those settings, and an uncompiled ``model``
    needs ``loss`` and ``optimizer`` (else :class:`~kopt.training.CompileSettingsError`:
    fine-tuning without them could only fail later, in ``fit``). Train it with ``callbacks=kopt.callbacks.for_model(wrapped)``, then
    ``kopt.strip`` it and ``prepare`` the next stage from the stripped model::

        for stage in kopt.stages.stage_names(policy.resolve(model)):
            wrapped = kopt.prepare(model, policy, stage=stage, steps=epochs * batches)
            wrapped.fit(x, y, epochs=epochs, callbacks=kopt.callbacks.for_model(wrapped))
            model = kopt.strip(wrapped)
        tflite = kopt.export.to_tflite(model)
    """
    _check_model(model, "kopt.prepare")
    settings = CompileSettings.from_model(model, loss=loss, optimizer=optimizer, metrics=metrics) if compile else None
    policy = as_policy(policy)
    plan = policy.resolve(model)
    check_plan(plan)
    planned = stage_names(plan)
    if stage is None:
        if not planned:
            raise PolicyError(
                f"Policy {policy.name!r} has no training stage for model {model.name!r} (post-training only): "
                "lower the model directly with kopt.export.to_tflite(model, representative_data=...)."
            )
        stage = planned[0]
    if stage not in STAGES:
        raise PolicyError(f"Unknown stage {stage!r}; stages: {list(STAGES)}.")
    if stage not in planned:
        raise PolicyError(f"Policy {policy.name!r} has no {stage!r} stage for this model; its stages: {planned}.")
    wrapped = wrap(model, plan, stage, steps=steps, seed=seed)
    if settings is not None:
        settings.compile(wrapped)
    return wrapped


__all__ = ["OptimizeResult", "as_policy", "optimize", "prepare"]
