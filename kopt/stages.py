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
from typing import Any, Callable

import keras
import numpy as np

from kopt import coverage
from kopt.callbacks_for_model import for_model
from kopt.errors import KoptError
from kopt.graph import analyze, clone_layer, map_layers
from kopt.policy import ClusterSettings, LayerPlan, Plan, PolicyError, PruneSettings, QuantizeSettings
from kopt.report import DeployedLayer, StageReport, deployed_layers, keras_stage, main_kernel, tflite_stage
from kopt.strip import strip
from kopt.training import STAGES, Training

Log = Callable[[str], None]


class NotFullyMappedError(KoptError, RuntimeError):
    """The policy targets the Edge TPU and the int8 model is not fully mapped to it."""


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
def stage_names(plan: Plan) -> list[str]:
    """The training stages the plan needs, in order (``"quantize"`` only for QAT)."""
    names = []
    if any(p.prune is not None for p in plan.layers.values()):
        names.append("prune")
    if any(p.cluster is not None for p in plan.layers.values()):
        names.append("cluster")
    quantize = quantize_settings(plan)
    if quantize is not None and quantize.mode == "qat":
        names.append("quantize")
    return names


def quantize_settings(plan: Plan) -> QuantizeSettings | None:
    """The plan's quantization mode and scheme (the same for every quantized layer), or None."""
    settings = [p.quantize for p in plan.layers.values() if p.quantize is not None]
    if not settings:
        return None
    for attribute in ("mode", "scheme"):
        values = sorted({getattr(s, attribute) for s in settings})
        if len(values) > 1:
            layers = {getattr(s, attribute): name for name, p in plan.layers.items() if (s := p.quantize) is not None}
            raise PolicyError(
                f"quantize.{attribute} must be the same for every layer of a model, but the plan mixes {values} "
                f"(e.g. layers {sorted(layers.values())}). Set it in the policy's global quantize settings only."
            )
    base = plan.policy.quantize or settings[0]
    return replace(base, mode=settings[0].mode, scheme=settings[0].scheme)


def check_plan(plan: Plan) -> None:
    """Everything about the plan that can fail before training (one quantization mode and scheme per model).

    Settings were validated when the policy was made (the scheme is registered, counts are in range).
    """
    quantize_settings(plan)


def _plan_for(plan: Plan, layer: keras.layers.Layer) -> LayerPlan | None:
    return plan.layers.get(layer.name)


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


# ---------------------------------------------------------------- pruning
def prune_schedule(settings: PruneSettings, steps: int | None, *, layer: str = "") -> Any:
    """The :mod:`kopt.sparsity` schedule for ``settings``; ``end_step=None`` ends at 2/3 of ``steps``."""
    from kopt.sparsity import ConstantSparsity, PolynomialDecay

    end = settings.end_step
    if end is None:
        if settings.schedule == "constant":
            end = -1
        elif steps is None:
            raise PolicyError(
                f"Cannot place the end of the pruning schedule{f' of layer {layer!r}' if layer else ''}: "
                "prune.end_step is not set and the number of training steps is unknown. Pass steps_per_epoch= "
                "(or steps=), or set prune.end_step in the policy."
            )
        else:
            end = max(settings.begin_step + 1, round(steps * 2 / 3))
    if settings.schedule == "constant":
        return ConstantSparsity(settings.sparsity, settings.begin_step, end, settings.frequency)
    if end <= settings.begin_step:
        raise PolicyError(
            f"prune.end_step={end} must be after prune.begin_step={settings.begin_step} for a polynomial schedule."
        )
    return PolynomialDecay(settings.initial_sparsity, settings.sparsity, settings.begin_step, end, frequency=settings.frequency)


def wrap_prune(model: keras.Model, plan: Plan, *, steps: int | None = None, notes: list[str] | None = None) -> keras.Model:
    """``model`` with each layer planned for pruning in a PruneWrapper with its own schedule.

    ``steps`` (training steps of the stage) places schedules whose ``end_step`` is None.
    A layer whose weights cannot take its M:N pattern stays dense and is listed in ``notes``.
    """
    model = flattened(model)
    from kopt.sparsity import PruneWrapper
    from kopt.sparsity.prunable import NotPrunable, plan_layer

    graph = analyze(model)
    calls: dict[int, int] = {}
    for node in graph.layer_nodes():
        calls[id(graph.layer(node))] = calls.get(id(graph.layer(node)), 0) + 1
    chosen: dict[int, tuple[PruneSettings, Any]] = {}
    for layer in graph.layers():
        layer_plan = _plan_for(plan, layer)
        if layer_plan is None or layer_plan.prune is None:
            continue
        settings = layer_plan.prune
        try:
            weight_plan = plan_layer(layer, settings.m_by_n)
        except NotPrunable as reason:
            if notes is not None:
                notes.append(f"{layer.name}: not pruned ({reason})")
            continue
        if notes is not None:
            for weight, why in weight_plan.skipped.items():
                notes.append(f"{layer.name}.{weight}: stays dense ({why})")
        chosen[id(layer)] = (settings, prune_schedule(settings, steps, layer=layer.name))
    if not chosen:
        raise PolicyError(f"The policy prunes no layer of model {model.name!r}: no planned layer can be pruned.")

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if id(layer) not in chosen:
            return None
        settings, schedule = chosen[id(layer)]
        return PruneWrapper(
            clone_layer(layer),
            schedule=schedule,
            m_by_n=settings.m_by_n,
            calls_per_step=calls[id(layer)],
            name=f"prune_{layer.name}",
        )

    return map_layers(model, wrap)


# ------------------------------------------------------------- clustering
def wrap_cluster(model: keras.Model, plan: Plan, *, seed: int | None = None) -> keras.Model:
    """``model`` with each layer planned for clustering in a ClusterWrapper with its own settings."""
    model = flattened(model)
    from kopt.clustering import cluster_weights

    configs: dict[str, dict[str, Any]] = {}
    for layer in analyze(model).layers():
        layer_plan = _plan_for(plan, layer)
        if layer_plan is not None and layer_plan.cluster is not None:
            settings: ClusterSettings = layer_plan.cluster
            configs[layer.name] = {
                "number_of_clusters": settings.number_of_clusters,
                "init": settings.init,
                "per_channel": settings.per_channel,
                "preserve_sparsity": settings.preserve_sparsity,
            }
    if not configs:
        raise PolicyError(f"The policy clusters no layer of model {model.name!r}.")
    first = next(iter(configs.values()))
    clustered = cluster_weights(
        model,
        first["number_of_clusters"],
        seed=seed,
        layer_filter=lambda layer: False,  # only the layers named in configs
        configs=configs,
    )
    pruned_only = {
        name for name, p in plan.layers.items() if p.prune is not None and p.cluster is None and name not in configs
    }
    return keep_zeros(clustered, pruned_only) if pruned_only else clustered


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


# ----------------------------------------------------------- quantization
def _with_bits(quantizer: Any, bits: int, layer: str) -> Any:
    if getattr(quantizer, "num_bits", None) == bits:
        return quantizer
    if not hasattr(quantizer, "num_bits"):
        raise PolicyError(
            f"Layer {layer!r}: quantize.bits={bits} cannot be applied: its weight quantizer "
            f"{type(quantizer).__name__} has no bit width."
        )
    config = dict(quantizer.get_config())
    config["num_bits"] = bits
    return type(quantizer).from_config(config)


#: Built-in cluster-preserving schemes -> whether they also keep zeros (PCQAT).
CLUSTER_PRESERVING = {"cluster_preserve": False, "prune_cluster_preserve": True}


def planned_clusters(plan: Plan) -> dict[str, tuple[int, bool]]:
    """``layer -> (most distinct kernel values, per channel)`` that the plan's clustering leaves.

    A layer clustered with ``preserve_sparsity`` may hold its zeros besides its clusters.
    """
    return {
        name: (p.cluster.number_of_clusters + int(p.cluster.preserve_sparsity), p.cluster.per_channel)
        for name, p in plan.layers.items()
        if p.cluster is not None and p.quantize is not None
    }


def quantization_scheme(plan: Plan) -> Any:
    """The plan's scheme: a name, or a Scheme when layers need their own checks or bit widths.

    Cluster-preserving QAT checks each clustered layer strictly against its planned number of
    clusters (:func:`planned_clusters`): a layer that reaches QAT unclustered raises
    :class:`~kopt.quantization.NotClusteredError` instead of quietly training 256 centroids.
    """
    from kopt.quantization import cluster_preserve_scheme, get_scheme

    settings = quantize_settings(plan)
    if settings is None:
        raise PolicyError(f"Policy {plan.policy.name!r} quantizes no layer.")
    bits = {name: p.quantize.bits for name, p in plan.layers.items() if p.quantize is not None}
    planned = planned_clusters(plan) if settings.scheme in CLUSTER_PRESERVING else {}
    if all(b == 8 for b in bits.values()) and not planned:
        return settings.scheme
    if planned:
        scheme = cluster_preserve_scheme(preserve_sparsity=CLUSTER_PRESERVING[settings.scheme], planned=planned)
    else:
        scheme = get_scheme(settings.scheme)
    if all(b == 8 for b in bits.values()):
        return scheme
    previous = scheme.weight_quantizer

    def hook(layer: keras.Operation, attr: str, quantizer: Any) -> Any:
        name = getattr(layer, "name", "")
        if name in bits:
            quantizer = _with_bits(quantizer, bits[name], name)
        return previous(layer, attr, quantizer) if previous is not None else quantizer

    return replace(scheme, weight_quantizer=hook)


def wrap_quantize(model: keras.Model, plan: Plan, *, notes: list[str] | None = None) -> keras.Model:
    """The quantization-aware model for the plan (its scheme, per-layer bit widths).

    Layers whose plan turns quantization off stay in float: the other layers are annotated
    and only they are quantized (the int8 lowering then fails if a float layer remains, and
    says which).
    """
    model = flattened(model)
    from kopt.quantization import quantize_annotate_layer, quantize_apply

    scheme = quantization_scheme(plan)
    layers = analyze(model).layers()
    off = [layer.name for layer in layers if (p := _plan_for(plan, layer)) is not None and p.quantize is None]
    if off:
        if notes is not None:
            notes.append(f"left in float by the policy: {', '.join(off)}")
        keep = set(off)
        model = map_layers(
            model, lambda layer: None if layer.name in keep else quantize_annotate_layer(clone_layer(layer))
        )
    quantized, report = quantize_apply(model, scheme, return_report=True)
    if notes is not None:
        notes.extend(line.strip() for line in str(report).splitlines()[1:])
    return quantized


# ------------------------------------------------------------------ running
def wrap(model: keras.Model, plan: Plan, stage: str, *, steps: int | None = None, seed: int | None = None,
         notes: list[str] | None = None) -> keras.Model:
    """The wrapped model of one training stage (``"prune"``, ``"cluster"`` or ``"quantize"``)."""
    if stage == "prune":
        return wrap_prune(model, plan, steps=steps, notes=notes)
    if stage == "cluster":
        return wrap_cluster(model, plan, seed=seed)
    if stage == "quantize":
        return wrap_quantize(model, plan, notes=notes)
    raise ValueError(f"Unknown stage {stage!r}; stages: {list(STAGES)}.")


def left_dense_by_plan(model: keras.Model, plan: Plan) -> set[str]:
    """Layers the plan does not prune although they could be: a choice, not a coverage gap."""
    from kopt.sparsity.prunable import NotPrunable, plan_layer

    excluded = set()
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
    return [name for name, p in plan.layers.items() if p.quantize is None and p.rule is not None]


def lower_stage(
    model: keras.Model,
    plan: Plan,
    *,
    representative_data: Any = None,
    eval_data: tuple[Any, Any] | None = None,
    accuracy: bool = True,
    strict: bool = False,
    log: Log = _quiet,
) -> StageResult:
    """Convert to int8 TFLite (int8 I/O, batch 1), check it for the Edge TPU, measure it.

    A quantization-aware model lowers from its trained ranges; any other model is calibrated
    post-training on ``representative_data``. With ``target="edgetpu"`` a model that is not fully
    mapped gets a warning naming the first op left on the CPU (an error with ``strict``).
    """
    from kopt.export import check_edgetpu, evaluate, to_tflite

    notes: list[str] = []
    qat = _is_quantization_aware(model)
    left_float = excluded_from_qat(plan) if qat else []
    if qat and left_float:
        if representative_data is None:
            raise PolicyError(
                f"Layer(s) {left_float} are excluded from quantization-aware training, so an int8 file needs "
                "their ranges calibrated post-training: pass representative_data (a few hundred input samples)."
            )
        tflite = to_tflite(model, representative_data=representative_data, int8_io=True, batch_size=1)
        notes.append(f"int8 ranges from quantization-aware training; {', '.join(left_float)} (excluded from "
                     "QAT) calibrated post-training on representative data")
    elif qat:
        tflite = to_tflite(model, int8_io=True, batch_size=1)
        notes.append("int8 ranges from quantization-aware training")
    else:
        if representative_data is None:
            raise PolicyError(
                "Post-training int8 quantization needs representative_data (a few hundred input samples)."
            )
        tflite = to_tflite(model, representative_data=representative_data, int8_io=True, batch_size=1)
        notes.append("int8 ranges calibrated post-training on representative data")
    edgetpu = check_edgetpu(tflite)
    int8_accuracy = None
    if accuracy and eval_data is not None:
        int8_accuracy = evaluate(tflite, eval_data[0], eval_data[1])
    names = list(plan.layers)
    report = tflite_stage("int8", tflite, layer_names=names, int8_accuracy=int8_accuracy, edgetpu=edgetpu, notes=notes)
    if plan.policy.target == "edgetpu" and not edgetpu.fully_mapped:
        message = edgetpu_problem(edgetpu)
        if strict:
            raise NotFullyMappedError(message)
        report.notes.append(message)
        warnings.warn(message, stacklevel=2)
    plain = tflite  # per-layer kernels (plots) are read from the uncompressed file: DECODE inputs are indices
    if plan.policy.target == "micro":  # accuracy above is LiteRT's on the uncompressed file
        tflite = _micro_file(tflite, eval_data or (representative_data, None), report)
    log(f"[kopt] {report.summary()}")
    kernels: dict[str, np.ndarray] = {}
    from kopt.report import tflite_weights

    for tensor, layer, values in tflite_weights(plain, names):
        if layer is not None and values.ndim >= 2 and values.size > kernels.get(layer, np.zeros(0)).size:
            kernels[layer] = values
    return StageResult("int8", None, report, kernels=kernels, tflite=tflite, edgetpu=edgetpu)


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
    "stage_names",
    "train_stage",
    "wrap",
    "wrap_cluster",
    "wrap_prune",
    "wrap_quantize",
]
