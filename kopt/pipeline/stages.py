"""The stages of a deployment path, one small function each, driven by a resolved :class:`~kopt.policy.Plan`.

Wrapping (no training): :func:`wrap_prune`, :func:`wrap_cluster`, :func:`wrap_quantize` turn a
model into the wrapped model of one stage, giving each layer the settings its
:class:`~kopt.policy.LayerPlan` names (layers whose plan has the technique off stay as they are).

Running: :func:`baseline_stage` measures the model as given; :func:`train_stage` (and its
aliases :func:`prune_stage`, :func:`cluster_stage`, :func:`quantize_stage`) wraps, fine-tunes
with :class:`~kopt.training.Training`, strips and measures; :func:`lower_stage` converts to int8
TFLite, runs the Edge TPU check and measures the int8 model. :func:`kopt.pipeline.run_stages`
composes them; :func:`kopt.optimize` is that composition plus a report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import keras
import numpy as np

from kopt.core.errors import InvalidArgumentError, KoptWarning, NotFullyMappedError
from kopt.graph import analyze, clone_layer, map_layers
from kopt.graph.sublayers import block_of, is_sublayer_key
from kopt.pipeline.callbacks import for_model
from kopt.pipeline.training import STAGES, Training
from kopt.policy import Plan, PolicyError, QuantizeSettings
from kopt.quantization.technique import common_settings, scheme_for
from kopt.report.summary import DeployedLayer, StageReport, deployed_layers, keras_stage, main_kernel, tflite_stage
from kopt.sparsity.technique import prune_schedule
from kopt.technique import coverage
from kopt.technique.inplace import freeze_nested, wrapped_keys
from kopt.technique.registry import get_technique, technique_names, techniques
from kopt.technique.strip import strip

Log = Callable[[str], None]


@dataclass
class StageResult:
    """What one stage produced.

    ``model``: the stripped Keras model after the stage (``None`` for the int8 stage);
    ``tflite`` and ``edgetpu``: the int8 stage's flatbuffer and Edge TPU report;
    ``kernels``: each layer's largest kernel as the stage deploys it (for plots);
    ``history``: the Keras training history of the stage.
    """

    name: str
    model: keras.Model | None
    report: StageReport
    history: dict[str, list[float]] = field(default_factory=dict)
    kernels: dict[str, np.ndarray] = field(default_factory=dict)
    tflite: bytes | None = None
    edgetpu: Any = None


# ------------------------------------------------------------------- the plan
def per_layer_settings(plan: Plan, technique: str) -> dict[str, Any]:
    """``layer name -> settings`` of ``technique`` for the layers the plan applies it to."""
    return {name: settings for name, p in plan.layers.items() if (settings := getattr(p, technique)) is not None}


def stage_names(plan: Plan) -> list[str]:
    """The training stages the plan needs, in the registry's order (``"quantize"`` only for QAT)."""
    check_plan(plan)
    names = []
    for technique in techniques():
        per_layer = per_layer_settings(plan, technique.name)
        if per_layer and technique.trains(next(iter(per_layer.values()))):
            names.append(technique.name)
    return names


def quantize_settings(plan: Plan) -> QuantizeSettings | None:
    """The plan's quantization mode and scheme (the same for every quantized layer), or None."""
    per_layer = per_layer_settings(plan, "quantize")
    if not per_layer:
        return None
    common = common_settings(per_layer)
    base = plan.policy.quantize or common
    return replace(base, mode=common.mode, scheme=common.scheme)


def check_plan(plan: Plan) -> None:
    """Everything about the plan that can fail before training (one quantization mode and scheme per model).

    Settings were validated when the policy was made (the scheme is registered, counts are in range).
    """
    quantize_settings(plan)


def planned_clusters(plan: Plan) -> dict[str, tuple[int, bool]]:
    """``layer -> (most distinct kernel values, per channel)`` that the plan's clustering leaves for QAT.

    A layer clustered with ``preserve_sparsity`` may hold its zeros besides its clusters.
    """
    return {
        name: (p.cluster.number_of_clusters + int(p.cluster.preserve_sparsity), p.cluster.per_channel)
        for name, p in plan.layers.items()
        if p.cluster is not None and p.quantize is not None
    }


def quantization_scheme(plan: Plan) -> Any:
    """The plan's scheme: a name, or a Scheme with per-layer bit widths and the strict planned-clusters check."""
    return scheme_for(per_layer_settings(plan, "quantize"), planned_clusters(plan))


def flattened(model: keras.Model) -> keras.Model:
    """``model`` itself when its layers' names are unique; else a flat copy with the plan's keys as names.

    A plan is keyed by flattened names (:class:`~kopt.policy.Plan`): two nested sub-models
    may each hold a ``"dense"``, and only in the flat copy are they ``"a_dense"`` and ``"b_dense"``.
    """
    graph = analyze(model)
    names = graph.flat_names()
    if all(names[id(layer)] == layer.name for layer in graph.layers()):
        return model
    return map_layers(model, lambda layer: None)


# ------------------------------------------------------- plan -> technique
def _stage_context(plan: Plan, stage: str) -> dict[str, Any]:
    """What a stage's technique needs from the rest of the plan besides its own per-layer settings."""
    if stage == "quantize":
        return {
            "keep_float": [name for name, p in plan.layers.items() if p.quantize is None],
            "planned_clusters": planned_clusters(plan),
        }
    return {}


def wrap(model: keras.Model, plan: Plan, stage: str, *, steps: int | None = None, seed: int | None = None,
         notes: list[str] | None = None) -> keras.Model:
    """The wrapped model of one training stage: the stage's registered technique with the plan's per-layer settings.

    In the clustering stage, layers pruned earlier in the path but not clustered keep their zeros
    (:func:`keep_zeros`): the stage's fine-tuning would otherwise regrow them. Sublayers of blocks kept whole
    (plan keys ``"block/path"``) that an earlier stage changed and this one does not wrap are frozen instead
    (:func:`~kopt.technique.inplace.freeze_nested`).
    """
    if stage not in technique_names():
        raise InvalidArgumentError(f"Unknown stage {stage!r}; stages: {list(STAGES)}.")
    model = flattened(model)
    per_layer = per_layer_settings(plan, stage)
    wrapped = get_technique(stage).wrap(
        model, per_layer, steps=steps, seed=seed, notes=notes, **_stage_context(plan, stage)
    )
    if stage == "cluster":
        pruned_only = {
            name for name, p in plan.layers.items() if "/" not in name and p.prune is not None and p.cluster is None
        }
        wrapped = keep_zeros(wrapped, pruned_only) if pruned_only else wrapped
    earlier = [t.name for t in techniques() if t.order < get_technique(stage).order]
    changed = {name for name, p in plan.layers.items() if is_sublayer_key(name) and any(getattr(p, t, None) for t in earlier)}
    unwrapped = changed - wrapped_keys(wrapped)  # a block kept float by QAT: none of its sublayers is wrapped
    if unwrapped:  # sublayers of closed blocks changed by an earlier stage, not by this one: keep their weights
        freeze_nested(wrapped, unwrapped)
    return wrapped


def wrap_prune(model: keras.Model, plan: Plan, *, steps: int | None = None, notes: list[str] | None = None) -> keras.Model:
    """``model`` with each layer planned for pruning in a PruneWrapper with its own schedule."""
    return wrap(model, plan, "prune", steps=steps, notes=notes)


def wrap_cluster(model: keras.Model, plan: Plan, *, seed: int | None = None) -> keras.Model:
    """``model`` with each layer planned for clustering in a ClusterWrapper with its own settings."""
    return wrap(model, plan, "cluster", seed=seed)


def wrap_quantize(model: keras.Model, plan: Plan, *, notes: list[str] | None = None) -> keras.Model:
    """The quantization-aware model for the plan (its scheme, per-layer bit widths, float layers left float)."""
    return wrap(model, plan, "quantize", notes=notes)


def keep_zeros(model: keras.Model, names: set[str]) -> keras.Model:
    """``model`` with the named layers' current zeros held by a fixed pruning mask while it trains.

    A layer pruned earlier in the path but not clustered would otherwise regrow its pruned
    weights during the clustering stage's fine-tuning. The mask is set once, at the first step,
    to exactly the zeros the layer has (``ConstantSparsity`` at its zero fraction, never updated).
    """
    from kopt.sparsity import ConstantSparsity, PruneWrapper
    from kopt.sparsity.prunable import NotPrunable, prunable_weights

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if layer.name not in names:
            return None
        try:
            weights = prunable_weights(layer)
        except NotPrunable:
            return None
        fractions = [
            float(np.mean(np.asarray(keras.ops.convert_to_numpy(w.variable)) == 0)) for w in weights
        ]
        if not fractions or min(fractions) == 0.0:
            return None
        schedule = ConstantSparsity(min(fractions), begin_step=0, end_step=0)
        return PruneWrapper(clone_layer(layer), schedule=schedule, name=f"prune_{layer.name}")

    return map_layers(model, wrap)


# ------------------------------------------------------------------ running

def left_dense_by_plan(model: keras.Model, plan: Plan) -> set[str]:
    """Layers the plan does not prune although they could be: a choice, not a coverage gap."""
    from kopt.sparsity.prunable import NotPrunable, plan_layer

    excluded = {name for name, p in plan.layers.items() if is_sublayer_key(name) and p.prune is None}
    for layer in analyze(model).layers():
        entry = plan.layers.get(layer.name)
        if entry is None or entry.prune is not None or getattr(layer, "kopt_internal", False):
            continue
        try:
            plan_layer(layer)
        except NotPrunable:
            continue
        excluded.add(layer.name)
    return excluded


def _kernels(layers: dict[str, DeployedLayer]) -> dict[str, np.ndarray]:
    return {name: k for name, layer in layers.items() if (k := main_kernel(layer)) is not None}


def _quiet(_: str) -> None:
    return None


def baseline_stage(model: keras.Model, training: Training, *, log: Log = _quiet) -> StageResult:
    """Measure the model as given (evaluated on a copy: the user's model is not compiled or changed)."""
    copy = map_layers(model, lambda layer: None)
    metrics = training.evaluate(copy)
    layers = deployed_layers(model)
    report = keras_stage("baseline", model, metrics=metrics, layers=layers)
    log(f"[kopt] {report.summary()}")
    return StageResult("baseline", copy, report, kernels=_kernels(layers))


def train_stage(
    model: keras.Model,
    plan: Plan,
    training: Training,
    stage: str,
    *,
    seed: int | None = None,
    log: Log = _quiet,
) -> StageResult:
    """Wrap ``model`` for ``stage``, fine-tune it, strip it and measure it."""
    notes: list[str] = []
    steps = training.steps_for(stage)
    epochs = training.epochs_for(stage)
    log(f"[kopt] == stage {stage}: {epochs} epoch(s){f', {steps} steps' if steps else ''}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = wrap(model, plan, stage, steps=steps, seed=seed, notes=notes)
        if stage == "prune":  # the policy wraps layers itself: say when that reaches too little of the model
            coverage.warn_pruning(wrapped, excluded=left_dense_by_plan(wrapped, plan))
        history = training.fit(wrapped, stage, extra_callbacks=for_model(wrapped))
    for warning in caught:
        if issubclass(warning.category, UserWarning) and str(warning.message) not in notes:
            notes.append(str(warning.message))
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    stripped = strip(wrapped)
    metrics = training.evaluate(stripped)
    layers = deployed_layers(stripped)
    report = keras_stage(stage, stripped, metrics=metrics, notes=notes, layers=layers)
    log(f"[kopt] {report.summary()}")
    return StageResult(stage, stripped, report, history=history, kernels=_kernels(layers))


def prune_stage(model: keras.Model, plan: Plan, training: Training, **kwargs: Any) -> StageResult:
    """Prune with each layer's schedule while fine-tuning, then strip (zeros baked into the kernels)."""
    return train_stage(model, plan, training, "prune", **kwargs)


def cluster_stage(model: keras.Model, plan: Plan, training: Training, **kwargs: Any) -> StageResult:
    """Cluster each planned layer while fine-tuning (keeping zeros with preserve_sparsity), then strip."""
    return train_stage(model, plan, training, "cluster", **kwargs)


def quantize_stage(model: keras.Model, plan: Plan, training: Training, **kwargs: Any) -> StageResult:
    """Quantization-aware training with the plan's scheme; the result keeps its fake-quant ranges."""
    return train_stage(model, plan, training, "quantize", **kwargs)


def _is_quantization_aware(model: keras.Model) -> bool:
    from kopt.quantization import ActivationQuantize, QuantizeWrapper

    return any(isinstance(layer, (QuantizeWrapper, ActivationQuantize)) for layer in model._flatten_layers())


def excluded_from_qat(plan: Plan) -> list[str]:
    """Layers a rule keeps out of the policy's quantization-aware training (``exclude`` or ``"quantize": false``).

    An int8 file has no float layers, so these are calibrated post-training when lowered.
    """
    if plan.policy.quantize is None or plan.policy.quantize.mode != "qat":
        return []
    excluded = [name for name, p in plan.layers.items() if p.quantize is None and p.rule is not None]
    return [name for name in excluded if not is_sublayer_key(name) or block_of(name) not in excluded]  # a block once


def quantized_in_place(plan: Plan) -> list[str]:
    """Blocks kept whole whose weight sublayers the policy's QAT fake-quantizes in place (plan keys
    ``"block/path"``): the activations inside them have no trained range, so they are calibrated when lowered."""
    if plan.policy.quantize is None or plan.policy.quantize.mode != "qat":
        return []
    excluded = set(excluded_from_qat(plan))
    blocks = {block_of(name) for name, p in plan.layers.items() if is_sublayer_key(name) and p.quantize is not None}
    return sorted(blocks - excluded)


def lower_stage(
    model: keras.Model,
    plan: Plan,
    *,
    representative_data: Any = None,
    eval_data: tuple[Any, Any] | None = None,
    accuracy: bool = True,
    strict: bool = False,
    log: Log = _quiet,
    classified_outputs: Sequence[str] | None = None,
) -> StageResult:
    """Convert to int8 TFLite (int8 I/O, batch 1), check it for the Edge TPU, measure it.

    A quantization-aware model lowers from its trained ranges; any other model is calibrated
    post-training on ``representative_data``. With ``target="edgetpu"`` a model that is not fully
    mapped gets a warning naming the first op left on the CPU (an error with ``strict``).
    A multi-output model's ``eval_data`` holds one label array per output; the int8 accuracy is
    measured for the ``classified_outputs`` (names) and reported per output.
    """
    from kopt.export import check_edgetpu, evaluate, to_tflite

    notes: list[str] = []
    qat = _is_quantization_aware(model)
    left_float = excluded_from_qat(plan) if qat else []
    in_place = quantized_in_place(plan) if qat else []
    if qat and (left_float or in_place):
        if representative_data is None:
            what = [f"Layer(s) {left_float} are excluded from quantization-aware training"] if left_float else []
            what += [f"block(s) {in_place} are kept whole (QAT trained their weights in place, not the "
                     "activations inside them)"] if in_place else []
            raise PolicyError(
                f"{' and '.join(what)}, so an int8 file needs their ranges calibrated post-training: pass "
                "representative_data (a few hundred input samples)."
            )
        tflite = to_tflite(model, representative_data=representative_data, int8_io=True, batch_size=1)
        calibrated = [f"{', '.join(left_float)} (excluded from QAT)"] if left_float else []
        calibrated += [f"the activations inside {', '.join(in_place)} (weights trained in place)"] if in_place else []
        notes.append(f"int8 ranges from quantization-aware training; {' and '.join(calibrated)} calibrated "
                     "post-training on representative data")
    elif qat:
        from kopt.export.lowering import qat_mode

        mode = qat_mode(model)  # "int16x8" after QAT with the 'int16x8' scheme
        tflite = to_tflite(model, int8_io=True, batch_size=1, mode=mode)
        notes.append(f"{'16x8' if mode == 'int16x8' else 'int8'} ranges from quantization-aware training")
    else:
        if representative_data is None:
            raise PolicyError(
                "Post-training int8 quantization needs representative_data (a few hundred input samples)."
            )
        tflite = to_tflite(model, representative_data=representative_data, int8_io=True, batch_size=1)
        notes.append("int8 ranges calibrated post-training on representative data")
    edgetpu = check_edgetpu(tflite)
    int8_accuracy, per_output = None, {}
    if accuracy and eval_data is not None and classified_outputs is not None:
        per_output = _accuracy_per_output(tflite, model, eval_data, classified_outputs)
        if not per_output:
            notes.append("int8 accuracy not measured: no output of the model has an accuracy metric")
    elif accuracy and eval_data is not None:
        int8_accuracy = evaluate(tflite, eval_data[0], eval_data[1])
    names = list(plan.layers)
    report = tflite_stage("int8", tflite, layer_names=names, int8_accuracy=int8_accuracy, edgetpu=edgetpu, notes=notes)
    report.int8_output_accuracies, report.outputs = per_output, len(model.outputs)
    if plan.policy.target == "edgetpu" and not edgetpu.fully_mapped:
        message = edgetpu_problem(edgetpu)
        if strict:
            raise NotFullyMappedError(message)
        report.notes.append(message)
        warnings.warn(message, KoptWarning, stacklevel=2)
    plain = tflite  # per-layer kernels (plots) are read from the uncompressed file: DECODE inputs are indices
    if plan.policy.target == "micro":  # accuracy above is LiteRT's on the uncompressed file
        tflite = _micro_file(tflite, eval_data or (representative_data, None), report)
    log(f"[kopt] {report.summary()}")
    kernels: dict[str, np.ndarray] = {}
    from kopt.report.summary import tflite_weights

    for tensor, layer, values in tflite_weights(plain, names):
        if layer is not None and values.ndim >= 2 and values.size > kernels.get(layer, np.zeros(0)).size:
            kernels[layer] = values
    return StageResult("int8", None, report, kernels=kernels, tflite=tflite, edgetpu=edgetpu)


def _accuracy_per_output(
    tflite: bytes, model: keras.Model, eval_data: tuple[Any, list[Any]], classified: Sequence[str]
) -> dict[str, float]:
    """Top-1 accuracy of each classified output of the int8 file (outputs come back in the model's order)."""
    from kopt.export import run
    from kopt.metrics import top1_accuracy

    x, labels = eval_data
    outputs = run(tflite, x)
    return {
        name: top1_accuracy(outputs[index], labels[index])
        for index, name in enumerate(model.output_names)
        if name in classified
    }


def _micro_file(tflite: bytes, data: tuple, report: Any) -> bytes:
    """The TFLM-compressed file (:func:`kopt.export.micro.compress`), its figures in the report's notes."""
    from kopt.export.micro import check_micro, compress

    result = compress(tflite, x=data[0])
    micro = check_micro(result.tflite)
    report.notes.append(f"TFLite Micro: {result.original_bytes:,} -> {result.flash_bytes:,} B flash "
                        f"({len(result.compressed)} tensor(s) LUT-compressed, bit-identical in TFLM), "
                        f"arena {micro.arena_bytes or 0:,} B")
    report.notes.extend(f"TFLite Micro: '{s.name}' left uncompressed: {s.reason}" for s in result.skipped)
    return result.tflite


def edgetpu_problem(report: Any) -> str:
    """One sentence on why a model is not fully mapped to the Edge TPU, naming the op."""
    head = f"The int8 model is NOT fully mapped to the Edge TPU ({report.num_mapped}/{report.num_ops} ops mapped)"
    if report.errors:
        return f"{head}: {report.errors[0]}"
    first = report.first_unsupported or (report.unmapped[0] if report.unmapped else None)
    if first is None:
        return head + "."
    return f"{head}: op #{first.index} {first.op} [{first.tensor.split(';')[0]}] stays on the CPU: {first.reasons[0]}."


__all__ = [
    "NotFullyMappedError",
    "StageResult",
    "baseline_stage",
    "check_plan",
    "cluster_stage",
    "edgetpu_problem",
    "keep_zeros",
    "lower_stage",
    "prune_schedule",
    "prune_stage",
    "quantization_scheme",
    "quantize_settings",
    "quantize_stage",
    "quantized_in_place",
    "stage_names",
    "train_stage",
    "wrap",
    "wrap_cluster",
    "wrap_prune",
    "wrap_quantize",
]
