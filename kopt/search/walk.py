"""The automatic search: walk the deployment tree (PTQ, QAT, prune, cluster, preserving QAT) for a budget.

The walk follows the order the TFLite collaborative-optimization guide gives users to try by
hand, measuring every candidate as an int8 ``.tflite`` on the validation data:

1. **Quantization**: post-training int8 of the float model; if it misses the accuracy
   budget, quantization-aware training (then every later candidate is quantized with QAT
   and a preserving scheme instead of post-training).
2. **Pruning ladder**: a one-shot pruning sensitivity table gives each layer its own
   sparsity (:func:`kopt.search.allocate.allocate`) for an increasing overall target
   (:data:`PRUNE_TARGETS`). Each rung fine-tunes from the previous rung's stripped model
   (reuse: the zeros stay, the schedule starts where the last one ended). The ladder stops
   at the first rung that misses the budget: more sparsity would miss it further.
3. **Clustering ladder** from the sparsest pruned model within budget (falling back to the
   rung before it when the first clustering rung misses): per-layer cluster counts from a
   clustering sensitivity table, sparsity kept; a rung that misses is retried once per
   output channel before the ladder stops.
4. **Rescue**: the smallest candidates that missed the accuracy budget by a little get
   quantization-aware training with the scheme that preserves their zeros and clusters —
   QAT recovers what post-training rounding lost.

The smallest candidate within the budget wins. Fine-tuning that falls far below the budget
(:func:`hopeless_floor`) stops early; the stopped candidate is still lowered and measured
(nothing is reported unmeasured). Every training is seeded (``seed`` + its order), so a
search is deterministic for a seed unless a wall-clock limit cuts it.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import keras
import numpy as np

from kopt.core.errors import BudgetNotMetWarning, InvalidArgumentError, KoptWarning
from kopt.graph import analyze, map_layers
from kopt.metrics import top1_accuracy
from kopt.pipeline.stages import StageResult, baseline_stage, lower_stage, train_stage
from kopt.pipeline.training import Training
from kopt.policy import ClusterSettings, LayerRule, Plan, Policy, PruneSettings, QuantizeSettings
from kopt.report.summary import Report, StageReport
from kopt.search.allocate import OFF, allocate
from kopt.search.budget import Budget
from kopt.search.candidates import WITHIN, Candidate, SearchReport
from kopt.technique.registry import get_technique

Log = Callable[[str], None]

PRUNE_LEVELS = (0.5, 0.75, 0.85, 0.9, 0.95, 0.97)
PRUNE_TARGETS = (0.5, 0.7, 0.8, 0.87, 0.92, 0.95)  # fraction of all prunable weights set to zero
CLUSTER_LEVELS = (32, 16, 8, 4)
CLUSTER_TARGETS = (3.5, 4.5, 5.2, 5.8)  # bits saved per remaining weight against int8 (4 clusters: 6)
RESCUES = 2
SENSITIVITY_SAMPLES = 1000
# The model's own optimizer fine-tunes every candidate at this fraction of its learning rate
# (``kopt.optimize`` applies it when no ``optimizer=`` is given): the trained model is a good
# starting point that a full-rate fine-tuning partly undoes.
FINETUNE_LEARNING_RATE_SCALE = 0.1


def hopeless_floor(baseline_accuracy: float, max_drop: float) -> float:
    """Validation accuracy below which fine-tuning stops early: no fine-tuning left will recover it."""
    return baseline_accuracy - max(3 * max_drop, max_drop + 0.02)


def rescue_margin(max_drop: float) -> float:
    """How far outside the accuracy budget a candidate may be and still get a QAT rescue."""
    return max(2 * max_drop, 0.01)


class _StopHopeless(keras.callbacks.Callback):
    """Stops fine-tuning once validation accuracy, after ``min_epochs``, is below ``floor``."""

    def __init__(self, floor: float, min_epochs: int) -> None:
        super().__init__()
        self.floor = floor
        self.min_epochs = min_epochs
        self.stopped_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = next((v for k, v in (logs or {}).items() if k.startswith("val_") and "acc" in k), None)
        if value is not None and epoch + 1 >= self.min_epochs and float(value) < self.floor:
            self.model.stop_training = True
            self.stopped_at = epoch + 1


@dataclass
class Node:
    """A stripped Keras model on the search tree and how it was reached from the float model."""

    label: str
    model: keras.Model
    stages: list[StageResult] = field(default_factory=list)
    prune: dict[str, float] = field(default_factory=dict)  # layer -> sparsity (absent: dense)
    cluster: dict[str, tuple[int, bool]] = field(default_factory=dict)  # layer -> (clusters, per channel)
    steps: int = 0
    seconds: float = 0.0
    stopped_early: int | None = None
    candidate: int | None = None  # index of the candidate measuring this node


@dataclass
class Artifact:
    """What a candidate left behind: the Keras model it lowered, the ``.tflite``, its path's stages."""

    model: keras.Model
    tflite: bytes
    stages: list[StageResult]
    policy: Policy
    plan: Plan
    node: Node


@dataclass
class SearchOutcome:
    """The chosen candidate's model, ``.tflite``, policy, plan and stage results, plus the search report."""

    model: keras.Model
    tflite: bytes
    policy: Policy
    plan: Plan
    stages: list[StageResult]
    report: Report
    search: SearchReport


class _StopSearch(Exception):
    """Ends the walk: the candidate or time limit is reached, or a candidate met a size budget."""


def _top1(model: keras.Model, x: Any, y: np.ndarray) -> float:
    return top1_accuracy(np.asarray(model.predict(x, batch_size=256, verbose=0)), y)


def _describe(node: Node, layer: str) -> str:
    parts = []
    if layer in node.prune:
        parts.append(f"{node.prune[layer]:.0%} sparse")
    if layer in node.cluster:
        clusters, per_channel = node.cluster[layer]
        parts.append(f"{clusters} clusters{' per channel' if per_channel else ''}")
    return ", ".join(parts) or "dense"


class Search:
    """One run of the automatic search (see the module docstring). Use :func:`search`."""

    def __init__(
        self,
        model: keras.Model,
        budget: Budget,
        training: Training,
        *,
        representative_data: Any,
        seed: int | None,
        log: Log,
    ) -> None:
        self.model = model
        self.budget = budget
        self.training = replace(training, eval_limit=None)
        self.representative_data = representative_data
        self.seed = 0 if seed is None else int(seed)
        self.log = log
        self.started = time.monotonic()
        self.trainings = 0
        self.quantization = "ptq"
        self.candidates: list[Candidate] = []
        self.artifacts: dict[int, Artifact] = {}
        self.sensitivity_tables: dict[str, str] = {}
        self.stop_reason = "every path was explored"
        self.layers: list[str] = []  # layers some technique applies to, in model order

    # ------------------------------------------------------------ limits
    def _check_limits(self) -> None:
        if self.budget.max_candidates is not None and len(self.candidates) >= self.budget.max_candidates:
            raise _StopSearch(f"the candidate limit ({self.budget.max_candidates}) was reached")
        if self.budget.max_seconds is not None and time.monotonic() - self.started >= self.budget.max_seconds:
            raise _StopSearch(f"the time limit ({self.budget.max_seconds:.0f} s) was reached")

    # ------------------------------------------------------------ policies
    def _policy(self, node: Node, *, stage: str | None = None, previous: Node | None = None,
                scheme: str = "default_8bit") -> Policy:
        """The policy of ``node``: all of it (``stage=None``) or the part one training stage needs."""
        rules: list[LayerRule] = []
        pruned = bool(node.prune)
        prune = cluster = quantize = None
        if stage in (None, "prune", "cluster") and node.prune:  # cluster: pruned layers keep their zeros
            prune = PruneSettings(sparsity=max(node.prune.values()), m_by_n=self.budget.m_by_n)
        if stage in (None, "cluster") and node.cluster:
            cluster = ClusterSettings(preserve_sparsity=pruned)
        if stage in (None, "quantize"):
            quantize = QuantizeSettings(mode=self.quantization if stage is None else "qat", scheme=scheme)
        for layer in self.layers:
            fields: dict[str, Any] = {}
            if prune is not None:
                sparsity = node.prune.get(layer)
                if sparsity is None:
                    fields["prune"] = False
                elif stage == "prune":
                    start = (previous.prune.get(layer, 0.0) if previous is not None else 0.0)
                    fields["prune"] = (
                        {"sparsity": sparsity, "schedule": "constant"}
                        if start >= sparsity
                        else {"sparsity": sparsity, "initial_sparsity": start}
                    )
                    if self.budget.m_by_n is not None:
                        fields["prune"]["m_by_n"] = self.budget.m_by_n
                else:
                    fields["prune"] = {"sparsity": sparsity}
            if cluster is not None:
                setting = node.cluster.get(layer)
                fields["cluster"] = (
                    False if setting is None else {"number_of_clusters": setting[0], "per_channel": setting[1]}
                )
            if fields:
                rules.append(LayerRule(match=f"name:{layer}", **fields))
        return Policy(
            name="auto", prune=prune, cluster=cluster, quantize=quantize, rules=tuple(rules),
            target="int8" if self.budget.target == "micro" else self.budget.target, validate=False,
        )

    def _scheme(self, node: Node) -> str:
        if node.cluster:
            return "prune_cluster_preserve" if node.prune else "cluster_preserve"
        return "prune_preserve" if node.prune else "default_8bit"

    # ------------------------------------------------------------ training
    def _train(self, parent: Node, child: Node, stage: str) -> Node:
        """Fine-tune ``parent``'s model into ``child`` for one stage (prune or cluster)."""
        self._check_limits()
        keras.utils.set_random_seed(self.seed + self.trainings)
        self.trainings += 1
        started = time.monotonic()
        policy = self._policy(child, stage=stage, previous=parent)
        plan = policy.resolve(parent.model)
        stopper = _StopHopeless(self.floor_hopeless, min_epochs=math.ceil(self.training.epochs_for(stage) * 2 / 3))
        training = replace(self.training, callbacks=[*self.training.callbacks, stopper])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stage's notes keep them
            result = train_stage(parent.model, plan, training, stage, seed=self.seed, log=self.log)
        child.model = result.model
        child.stages = [*parent.stages, result]
        child.steps = parent.steps + self._steps_run(result, stage)
        child.seconds = time.monotonic() - started
        child.stopped_early = stopper.stopped_at
        return child

    def _steps_run(self, result: StageResult, stage: str) -> int:
        planned = self.training.steps_for(stage) or 0
        epochs = self.training.epochs_for(stage)
        ran = len(next(iter(result.history.values()), [])) if result.history else epochs
        return planned * ran // epochs if epochs else 0

    # ------------------------------------------------------------ measuring
    def _measure(self, node: Node, parent: int | None, *, quantization: str | None = None) -> Candidate:
        """Lower ``node`` to int8 (after QAT when the search quantizes with QAT) and record it."""
        self._check_limits()
        quantization = quantization or self.quantization
        started = time.monotonic()
        stages = list(node.stages)
        model = node.model
        steps = node.steps
        notes: list[str] = []
        scheme = self._scheme(node)
        if quantization == "qat":
            keras.utils.set_random_seed(self.seed + self.trainings)
            self.trainings += 1
            result, scheme = self._quantize(node, scheme, notes)
            stages.append(result)
            model = result.model
            steps += self._steps_run(result, "quantize")
        policy = self._policy(node, scheme=scheme)
        if quantization != self.quantization:
            policy = replace(policy, quantize=replace(policy.quantize, mode=quantization))
        plan = policy.resolve(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Edge TPU mapping is reported in the status
            int8 = lower_stage(
                model, plan, representative_data=self.representative_data, eval_data=self.eval_data, log=self.log
            )
        stages.append(int8)
        accuracy = float(int8.report.int8_accuracy)
        zipped = int(int8.report.tflite_zipped_bytes)
        drop = self.baseline_accuracy - accuracy
        edgetpu = None
        status = WITHIN
        if self.budget.target == "edgetpu" and int8.edgetpu is not None:
            edgetpu = f"{int8.edgetpu.num_mapped}/{int8.edgetpu.num_ops} mapped"
        if drop > self.budget.max_accuracy_drop + 1e-12:
            status = f"accuracy drop {drop * 100:.2f} pt > budget {self.budget.max_accuracy_drop * 100:.2f} pt"
        elif not self.budget.fits_size(zipped):
            status = f"zipped {zipped:,} B > size budget {self.budget.max_size_bytes:,} B"
        elif self.budget.target == "edgetpu" and not (int8.edgetpu is not None and int8.edgetpu.fully_mapped):
            status = "not fully mapped to the Edge TPU"
        tflite, micro_report = int8.tflite, None
        if self.budget.target == "micro":
            tflite, micro_report, problem = self._micro(int8.tflite)
            if status == WITHIN and problem:
                status = problem
        if node.stopped_early:
            notes.append(f"fine-tuning stopped early after epoch {node.stopped_early}: validation accuracy far below budget")
        keras_accuracy = None
        if model is not self.model:
            keras_accuracy = _top1(model, *self.eval_data)
        index = len(self.candidates)
        candidate = Candidate(
            index=index,
            label=node.label + (" + QAT" if quantization == "qat" else " + PTQ"),
            path=[s.name for s in stages],
            parent=parent,
            quantization=quantization if quantization == "ptq" else f"qat ({scheme})",
            settings={layer: _describe(node, layer) for layer in self.layers},
            keras_accuracy=keras_accuracy,
            int8_accuracy=accuracy,
            drop=drop,
            tflite_bytes=int(int8.report.tflite_bytes),
            zipped_bytes=zipped,
            ratio=self.float_zipped / zipped if zipped else None,
            sparsity=float(int8.report.sparsity),
            steps=steps,
            seconds=round(node.seconds * (node.candidate is None) + time.monotonic() - started, 1),
            status=status,
            edgetpu=edgetpu,
            notes=notes,
            flash_bytes=None if micro_report is None else micro_report.flash_bytes,
            arena_bytes=None if micro_report is None else micro_report.arena_bytes,
        )
        node.candidate = index
        self.candidates.append(candidate)
        self.artifacts[index] = Artifact(model, tflite, stages, policy, plan, node)
        self.log(f"[kopt auto] {candidate.summary()}")
        if self.budget.has_size_limit and candidate.within_budget:
            raise _StopSearch("a candidate met the size and accuracy budget")
        return candidate

    def _micro(self, tflite: bytes) -> tuple[bytes, Any, str | None]:
        """The TFLM-compressed file (verified on validation inputs), its TFLM report and what misses the budget."""
        from kopt.export import micro

        x = self.eval_data[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tensors left uncompressed only cost flash, which is checked
            compressed = micro.compress(tflite, x=x, samples=micro.DEFAULT_VERIFY_SAMPLES).tflite
        report = micro.check_micro(compressed)
        return compressed, report, self.budget.micro_problem(report)

    def _quantize(self, node: Node, scheme: str, notes: list[str]) -> tuple[StageResult, str]:
        from kopt.quantization import NotClusteredError

        try:
            plan = self._policy(node, stage="quantize", scheme=scheme).resolve(node.model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return train_stage(node.model, plan, self.training, "quantize", seed=self.seed, log=self.log), scheme
        except NotClusteredError as error:
            fallback = "prune_preserve" if node.prune else "default_8bit"
            notes.append(f"{scheme} not applicable ({error}); quantized with {fallback}")
            plan = self._policy(node, stage="quantize", scheme=fallback).resolve(node.model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return train_stage(node.model, plan, self.training, "quantize", seed=self.seed, log=self.log), fallback

    # ------------------------------------------------------------ sensitivity
    def _sensitivity(self, model: keras.Model, technique: str, levels: tuple) -> Any:
        """The one-shot sensitivity table of ``technique``, or None when no layer can take it."""
        from kopt.analysis import sensitivity

        if not any(get_technique(technique).applies(layer) for layer in analyze(model).layers()):
            return None
        table = sensitivity(
            model, self.sensitivity_data, technique=technique, levels=levels, batch_size=256, seed=self.seed
        )
        self.sensitivity_tables[technique] = table.to_markdown()
        self.layers += [name for name in table.layer_names if name not in self.layers]
        return table

    # ------------------------------------------------------------ the walk
    def run(self) -> SearchOutcome:
        baseline = baseline_stage(self.model, self.training, log=self.log)
        self.eval_data = self.training.eval_arrays(self.model)
        self.sensitivity_data = (
            keras.tree.map_structure(lambda a: a[:SENSITIVITY_SAMPLES], self.eval_data[0]),
            self.eval_data[1][:SENSITIVITY_SAMPLES],
        )
        self.baseline_accuracy = _top1(self.model, *self.eval_data)
        self.float_zipped = int(baseline.report.zipped_bytes)
        self.floor_hopeless = hopeless_floor(self.baseline_accuracy, self.budget.max_accuracy_drop)
        self.log(
            f"[kopt auto] float model: validation accuracy {self.baseline_accuracy:.4f}; budget: int8 accuracy >= "
            f"{self.budget.accuracy_floor(self.baseline_accuracy):.4f}"
            + (f", zipped <= {self.budget.max_size_bytes:,} B" if self.budget.max_size_bytes else "")
            + f", target {self.budget.target}"
        )
        root = Node("float", map_layers(self.model, lambda layer: None))
        try:
            self._walk(root)
        except _StopSearch as stop:
            self.stop_reason = str(stop)
        return self._outcome(baseline)

    def _walk(self, root: Node) -> None:
        ptq = self._measure(root, None, quantization="ptq")
        if not ptq.within_budget and ptq.drop > self.budget.max_accuracy_drop:
            qat = self._measure(root, None, quantization="qat")
            self.quantization = "qat"
            if not qat.within_budget and qat.drop > self.budget.max_accuracy_drop:
                self.stop_reason = "neither post-training nor quantization-aware int8 meets the accuracy budget"
                return
        # TFLite Micro stores pruned zeros like any weight (its pruning compression is not implemented):
        # for a micro flash budget only clustering (LUT indices) shrinks the file.
        pruned, fallback = (root, None) if self.budget.target == "micro" else self._prune_ladder(root)
        clustered = self._cluster_ladder(pruned)
        if not clustered and fallback is not None:
            self._cluster_ladder(fallback)
        self._rescue()

    def _prune_ladder(self, root: Node) -> tuple[Node, Node | None]:
        """Prune harder rung by rung; returns the sparsest node within budget and the one before it."""
        table = self._sensitivity(root.model, "prune", PRUNE_LEVELS)
        best, before = root, None
        if table is None:
            return best, before
        if self.budget.m_by_n is not None:
            m, n = self.budget.m_by_n
            child = Node(f"prune {m}:{n}", root.model, prune={layer: m / n for layer in self.layers})
            self._train(root, child, "prune")
            return (child, root) if self._measure(child, root.candidate).within_budget else (root, None)
        params = {row.name: row.parameters for row in table.rows}
        drops = {row.name: [table.drop(row.name, level) for level in table.levels] for row in table.rows}
        savings = {name: [count * level for level in table.levels] for name, count in params.items()}
        total = sum(params.values())
        levels = {name: OFF for name in params}
        for target in PRUNE_TARGETS:
            chosen = allocate(drops, savings, target * total, start=levels)
            if chosen == levels:
                continue
            levels = chosen
            sparsities = {name: table.levels[i] for name, i in levels.items() if i != OFF}
            overall = sum(params[n] * s for n, s in sparsities.items()) / total
            child = Node(f"prune {overall:.0%}", best.model, prune=sparsities)
            self._train(best, child, "prune")
            if not self._measure(child, best.candidate).within_budget:
                break
            best, before = child, best
        return best, before

    def _cluster_ladder(self, start: Node) -> bool:
        """Cluster harder rung by rung from ``start``; True if any rung stayed within budget."""
        table = self._sensitivity(start.model, "cluster", CLUSTER_LEVELS)
        if table is None:
            return False
        nonzero = {row.name: row.parameters * (1 - start.prune.get(row.name, 0.0)) for row in table.rows}
        drops = {row.name: [table.drop(row.name, level) for level in table.levels] for row in table.rows}
        savings = {name: [count * (8 - math.log2(k)) for k in table.levels] for name, count in nonzero.items()}
        total = sum(nonzero.values())
        base, levels, any_within, per_channel = start, {name: OFF for name in nonzero}, False, False
        prefix = "" if start.label == "float" else f"{start.label} -> "
        for target in CLUSTER_TARGETS:
            chosen = allocate(drops, savings, target * total, start=levels)
            if chosen == levels:
                continue
            counts = {name: table.levels[i] for name, i in chosen.items() if i != OFF}
            spread = sorted(set(counts.values()))
            clusters = str(spread[0]) if len(spread) == 1 else f"{spread[0]}-{spread[-1]}"
            bits = sum(nonzero[n] * math.log2(k) for n, k in counts.items()) / max(sum(nonzero[n] for n in counts), 1)
            tries = [per_channel] if per_channel else [False, True]
            child = None
            for channelwise in tries:
                child = Node(
                    f"{prefix}cluster {clusters}{' per channel' if channelwise else ''} ({bits:.1f} bits)",
                    base.model,
                    prune=dict(start.prune),
                    cluster={name: (k, channelwise) for name, k in counts.items()},
                )
                self._train(base, child, "cluster")
                if self._climbs(self._measure(child, base.candidate)):
                    per_channel = channelwise
                    break
                child = None
            if child is None:
                break
            any_within, base, levels = True, child, chosen
        return any_within

    def _climbs(self, candidate: Candidate) -> bool:
        """Whether the cluster ladder goes on from ``candidate``: within budget, or (micro target)
        accurate enough and only too large for the device, which the next, smaller rung may fix."""
        if candidate.within_budget:
            return True
        accurate = candidate.drop <= self.budget.max_accuracy_drop + 1e-12
        return self.budget.target == "micro" and accurate and candidate.status.startswith(("flash", "arena"))

    def _rescue(self) -> None:
        """QAT for the smallest near misses that would beat the best candidate within budget."""
        if self.quantization == "qat":
            return  # every candidate already went through QAT
        best = min((c.zipped_bytes for c in self.candidates if c.within_budget), default=math.inf)
        margin = self.budget.max_accuracy_drop + rescue_margin(self.budget.max_accuracy_drop)
        near = sorted(
            (c for c in self.candidates if not c.within_budget and c.zipped_bytes < best and c.drop <= margin
             and c.quantization == "ptq"),
            key=lambda c: (c.zipped_bytes, c.index),
        )
        for candidate in near[:RESCUES]:
            self._measure(self.artifacts[candidate.index].node, candidate.index, quantization="qat")

    # ------------------------------------------------------------ outcome
    def _choose(self) -> tuple[int, list[str]]:
        within = [c for c in self.candidates if c.within_budget]
        if within and self.budget.target == "micro" and self.budget.has_size_limit:
            # Fitting the device is all that counts: the most accurate that fits, then the smallest flash.
            return min(within, key=lambda c: (-c.int8_accuracy, c.flash_bytes or 0, c.index)).index, []
        if within:
            return min(within, key=lambda c: (c.zipped_bytes, -c.int8_accuracy, c.index)).index, []
        accurate = [c for c in self.candidates if c.drop <= self.budget.max_accuracy_drop + 1e-12]
        if accurate:
            chosen = min(accurate, key=lambda c: (c.zipped_bytes, -c.int8_accuracy, c.index))
            why = (f"no candidate meets the whole budget ({chosen.status}); returning the smallest within the "
                   f"accuracy budget, #{chosen.index} {chosen.label}.")
        else:
            chosen = min(self.candidates, key=lambda c: (c.drop, c.zipped_bytes, c.index))
            why = (f"no candidate stays within the accuracy budget of {self.budget.max_accuracy_drop * 100:.2f} pt; "
                   f"returning the most accurate, #{chosen.index} {chosen.label} ({chosen.drop * 100:.2f} pt below "
                   "the float model). Loosen the budget, fine-tune longer (epochs=), or give more training data.")
        return chosen.index, [why]

    def _outcome(self, baseline: StageResult) -> SearchOutcome:
        chosen, notes = self._choose()
        for note in notes:
            warnings.warn(note, BudgetNotMetWarning, stacklevel=4)
        report = SearchReport(
            budget={
                "max_accuracy_drop": self.budget.max_accuracy_drop,
                "max_size_bytes": self.budget.max_size_bytes,
                "target": self.budget.target,
                "max_candidates": self.budget.max_candidates,
                "max_seconds": self.budget.max_seconds,
                "m_by_n": self.budget.m_by_n,
                "max_flash_bytes": self.budget.max_flash_bytes,
                "max_arena_bytes": self.budget.max_arena_bytes,
            },
            baseline_accuracy=self.baseline_accuracy,
            float_zipped_bytes=self.float_zipped,
            candidates=self.candidates,
            chosen=chosen,
            stop_reason=self.stop_reason,
            seconds=round(time.monotonic() - self.started, 1),
            warnings=notes,
            sensitivity=dict(self.sensitivity_tables),
        )
        self.log(f"[kopt auto] chose #{chosen} {self.candidates[chosen].label} after {len(self.candidates)} "
                 f"candidate(s) in {report.seconds:.0f}s; stopped because {self.stop_reason}")
        artifact = self.artifacts[chosen]
        stages = [baseline, *artifact.stages]
        stage_reports: list[StageReport] = [s.report for s in stages]
        pipeline_report = Report(
            model_name=self.model.name,
            policy=artifact.policy.to_dict(),
            stages=stage_reports,
            plan=artifact.plan.table(),
            eval_split=self.training.eval_split,
            warnings=list(notes),
        )
        return SearchOutcome(artifact.model, artifact.tflite, artifact.policy, artifact.plan, stages, pipeline_report, report)


def check_classifier(model: keras.Model) -> None:
    """The search ranks candidates by top-1 accuracy: the model must output one vector of class scores."""
    outputs = list(model.outputs)
    units = outputs[0].shape[-1] if len(outputs) == 1 and len(outputs[0].shape) >= 2 else None
    if units is None or units < 2:
        shapes = [tuple(o.shape) for o in outputs]
        raise InvalidArgumentError(
            f"policy='auto' measures every candidate by top-1 accuracy, so it needs a classifier with one output of "
            f"at least 2 class scores; model {model.name!r} has output shape(s) {shapes}. For a single sigmoid unit, "
            "output two classes (softmax), or run a named policy (e.g. 'pcqat') and check it yourself."
        )


def search(
    model: keras.Model,
    budget: Budget,
    training: Training,
    *,
    representative_data: Any = None,
    seed: int | None = None,
    log: Log = lambda line: None,
) -> SearchOutcome:
    """Run the automatic search (``kopt.optimize(model, "auto", budget=...)`` calls this)."""
    check_classifier(model)
    if budget.target == "micro":  # fail before any training if tflite-micro is missing
        from kopt.export.micro import _tflm

        _tflm()
    if training.validation_data is None:
        warnings.warn(
            "kopt.optimize(model, 'auto') got no validation_data: the accuracy budget is checked on the training "
            "data, which flatters every candidate. Pass validation_data=(x_val, y_val).",
            KoptWarning,
            stacklevel=3,
        )
    if representative_data is None:
        from kopt.pipeline.training import features

        representative_data = features(training.train_data)
    return Search(model, budget, training, representative_data=representative_data, seed=seed, log=log).run()


__all__ = ["Search", "SearchOutcome", "check_classifier", "hopeless_floor", "rescue_margin", "search"]
