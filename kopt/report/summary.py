"""Compression and accuracy reports: per stage and per layer, as a dict, JSON and Markdown.

A :class:`Report` is a list of :class:`StageReport` (baseline, prune, cluster, quantize, int8),
each with model-level figures (accuracy in Keras and in the int8 TFLite interpreter, sizes)
and one :class:`LayerStats` per layer holding weights. Figures are measured on what a stage
*deploys*: for a wrapped model, the weights its wrappers would put in the stripped model
(masked, clustered, fake-quantized); for the int8 stage, the tensors stored in the ``.tflite``.

Sizes: ``float_bytes`` is the weights' size in their dtype (float32: 4 bytes each) and
``zipped_bytes`` their size after DEFLATE, the measure the TFLite model-optimization
documentation uses to show what pruning and clustering save; the int8 stage reports the
``.tflite`` file and its zipped size (:func:`kopt.export.zipped_size`).

:func:`compression` measures any Keras model or ``.tflite`` on its own.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import keras
import numpy as np

from kopt.core.errors import InvalidArgumentError, UnknownNameError
from kopt.core.layers import channel_axes_of
from kopt.metrics import top1_accuracy, zipped_bytes
from kopt.technique.wrapper import KoptWrapper


# --------------------------------------------------------------- weights
@dataclass
class DeployedLayer:
    """A layer's weights as its stage deploys them, by weight name; ``bits`` = weight bit width."""

    name: str
    class_name: str
    weights: dict[str, np.ndarray]
    bits: int = 32
    wrapper: str | None = None
    channel_axes: dict[str, Any] = field(default_factory=dict)  # per weight: its output-channel axes


def _top_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    seen: set[int] = set()
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model) and not isinstance(layer, KoptWrapper):
            stack.extend(reversed(layer.layers))
            continue
        yield layer


def _weight_bits(wrapper: KoptWrapper) -> int:
    config = getattr(wrapper, "quantize_config", None)
    if config is None or not getattr(config, "weights", None):
        return 32
    bits = [getattr(q, "num_bits", 8) for q in config.weights.values()]
    return int(max(bits)) if bits else 32


def _is_kopt_internal(layer: keras.layers.Layer) -> bool:
    return type(layer).__module__.startswith("kopt.")


def _weight_name(variable: keras.Variable) -> str:
    return variable.path.split("/")[-1]


def deployed_layers(model: keras.Model) -> dict[str, DeployedLayer]:
    """Every layer holding weights, keyed by the *user's* layer name (wrappers see through).

    Wrapped layers report ``transformed_weights(training=False)``: the masked, clustered or
    fake-quantized values the stripped / lowered model will hold.
    """
    result: dict[str, DeployedLayer] = {}
    for layer in _top_layers(model):
        wrapper = None
        inner = layer
        while isinstance(inner, KoptWrapper):
            wrapper = wrapper or inner
            inner = inner.layer
        if not inner.weights or (wrapper is None and _is_kopt_internal(layer)):
            continue  # activation fake-quants hold ranges, not weights
        substituted: dict[int, Any] = {}
        bits = 32
        if wrapper is not None:
            substituted = {id(v): t for v, t in wrapper.transformed_weights(training=False)}
            bits = _weight_bits(wrapper)
        weights = {}
        for variable in inner.weights:
            value = substituted.get(id(variable), variable.value)
            weights[_weight_name(variable)] = np.asarray(keras.ops.convert_to_numpy(value))
        result[inner.name] = DeployedLayer(
            inner.name, type(inner).__name__, weights, bits, None if wrapper is None else type(wrapper).__name__,
            {name: channel_axes_of(inner, name) for name in weights},
        )
    return result


def is_kernel(array: np.ndarray) -> bool:
    """Weights with at least two axes (kernels, embeddings): the ones pruning and clustering touch."""
    return array.ndim >= 2 and np.issubdtype(array.dtype, np.floating)


def unique_per_channel(array: np.ndarray, channel_axes: Any = (-1,)) -> int:
    """The most distinct values within one output channel (per tensor when ``channel_axes`` is None).

    The int8 file stores a scale per output channel, so this is the count that survives export
    and the one every stage reports, from clustering to the ``.tflite``.
    """
    if channel_axes is None or array.ndim < 2:
        return int(np.unique(array).size)
    axes = sorted(a % array.ndim for a in channel_axes)
    rows = np.moveaxis(array, axes, list(range(len(axes)))).reshape(int(np.prod([array.shape[a] for a in axes])), -1)
    return max(int(np.unique(row).size) for row in rows)


def main_kernel(layer: DeployedLayer) -> np.ndarray | None:
    """The layer's largest kernel (the one plots show)."""
    kernels = [w for w in layer.weights.values() if is_kernel(w)]
    return max(kernels, key=lambda a: a.size) if kernels else None


# ----------------------------------------------------------------- records
@dataclass
class LayerStats:
    """One layer (or, for the int8 stage, one weight tensor of the ``.tflite``) in one stage.

    ``unique_values`` counts the most distinct values within one output channel of the layer's
    largest kernel, in every stage: each channel of the int8 file has its own grid (and a folded
    BatchNormalization scales each channel), so a kernel clustered to N values keeps at most N
    per channel through QAT and export. ``bits`` is the deployed weight width; ``float_bytes``
    and ``zipped_bytes`` are the weights as this stage stores them (float32 in Keras, a QAT
    model included; int8 in a ``.tflite``).
    """

    name: str
    class_name: str
    parameters: int
    sparsity: float  # fraction of exact zeros in the kernels (weights with >= 2 axes)
    unique_values: int  # most distinct values in one output channel of the largest kernel
    bits: int
    float_bytes: int
    zipped_bytes: int
    kernel_parameters: int = 0  # values in the kernels, the denominator of ``sparsity``
    layer: str | None = None  # the Keras layer a .tflite tensor comes from (best effort)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageReport:
    """Figures of one stage: accuracies, sizes, sparsity, unique values, per-layer stats."""

    name: str
    keras_metrics: dict[str, float] = field(default_factory=dict)
    int8_accuracy: float | None = None
    parameters: int = 0
    sparsity: float = 0.0
    max_unique_values: int = 0
    float_bytes: int = 0
    zipped_bytes: int = 0
    tflite_bytes: int | None = None
    tflite_zipped_bytes: int | None = None
    layers: list[LayerStats] = field(default_factory=list)
    edgetpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    outputs: int = 1  # model outputs: several have one accuracy each, none of them "the" accuracy
    int8_output_accuracies: dict[str, float] = field(default_factory=dict)  # by output name, several outputs

    @property
    def keras_accuracy(self) -> float | None:
        """The Keras accuracy (the first accuracy-like metric); None for a multi-output model."""
        if self.outputs > 1:
            return None
        return next(iter(self.output_accuracies.values()), None)

    @property
    def output_accuracies(self) -> dict[str, float]:
        """Every accuracy-like Keras metric by name (one per output of a multi-output model)."""
        return {key: value for key, value in self.keras_metrics.items() if "acc" in key}

    @property
    def accuracy(self) -> float | None:
        """The stage's accuracy: int8 interpreter for the int8 stage, Keras otherwise."""
        return self.int8_accuracy if self.int8_accuracy is not None else self.keras_accuracy

    @property
    def deployed_bytes(self) -> int:
        return self.tflite_bytes if self.tflite_bytes is not None else self.float_bytes

    @property
    def deployed_zipped_bytes(self) -> int:
        return self.tflite_zipped_bytes if self.tflite_zipped_bytes is not None else self.zipped_bytes

    def summary(self) -> str:
        """The one-line summary printed after each stage."""
        parts = [f"{self.name:<9}"]
        if self.keras_accuracy is not None:
            parts.append(f"keras acc {self.keras_accuracy:.4f}")
        elif self.outputs > 1 and self.output_accuracies:
            parts.append("keras " + ", ".join(f"{k} {v:.4f}" for k, v in self.output_accuracies.items()))
        elif "loss" in self.keras_metrics:
            parts.append(f"loss {self.keras_metrics['loss']:.4f}")
        if self.int8_accuracy is not None:
            parts.append(f"int8 acc {self.int8_accuracy:.4f}")
        elif self.int8_output_accuracies:
            parts.append("int8 " + ", ".join(f"{k} acc {v:.4f}" for k, v in self.int8_output_accuracies.items()))
        parts.append(f"sparsity {self.sparsity:.1%}")
        parts.append(f"unique values/channel <= {self.max_unique_values}")
        if self.tflite_bytes is not None:
            parts.append(f".tflite {_kb(self.tflite_bytes)} (zipped {_kb(self.tflite_zipped_bytes or 0)})")
        else:
            parts.append(f"weights {_kb(self.float_bytes)} (zipped {_kb(self.zipped_bytes)})")
        if self.edgetpu is not None:
            mapped = "fully mapped" if self.edgetpu.get("fully_mapped") else "NOT fully mapped"
            parts.append(f"Edge TPU {self.edgetpu.get('num_mapped')}/{self.edgetpu.get('num_ops')} {mapped}")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["keras_accuracy"] = self.keras_accuracy
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def to_markdown(self) -> str:
        """The one-line summary, the notes, then one row per layer (per weight tensor of a ``.tflite``)."""
        notes = [f"- {note}" for note in self.notes]
        return "\n".join([self.summary(), "", *notes, *([""] if notes else []), Report.layer_table(self)])

    def __str__(self) -> str:  # printed, a stage reads as a table, not as a dataclass
        return self.to_markdown()


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def _aggregate(stage: StageReport) -> StageReport:
    """Model-level parameters, kernel sparsity and unique values from the per-layer stats."""
    stage.parameters = sum(layer.parameters for layer in stage.layers)
    total = sum(layer.kernel_parameters for layer in stage.layers)
    zeros = sum(layer.sparsity * layer.kernel_parameters for layer in stage.layers)
    stage.sparsity = float(zeros / total) if total else 0.0
    stage.max_unique_values = max((layer.unique_values for layer in stage.layers), default=0)
    return stage


def layer_stats(layer: DeployedLayer) -> LayerStats:
    arrays = list(layer.weights.values())
    kernels = [a for a in arrays if is_kernel(a)]
    kernel_size = sum(a.size for a in kernels)
    zeros = sum(int(np.count_nonzero(a == 0)) for a in kernels)
    kernel_name = max((n for n, a in layer.weights.items() if is_kernel(a)), key=lambda n: layer.weights[n].size,
                      default=None)
    biggest = None if kernel_name is None else layer.weights[kernel_name]
    stats = LayerStats(
        name=layer.name,
        class_name=layer.class_name,
        parameters=int(sum(a.size for a in arrays)),
        sparsity=float(zeros / kernel_size) if kernel_size else 0.0,
        unique_values=unique_per_channel(biggest, layer.channel_axes.get(kernel_name, (-1,))) if biggest is not None else 0,
        bits=layer.bits,
        float_bytes=int(sum(a.nbytes for a in arrays)),
        zipped_bytes=zipped_bytes(arrays),
        kernel_parameters=int(kernel_size),
    )
    return stats


def keras_stage(
    name: str,
    model: keras.Model,
    *,
    metrics: Mapping[str, float] | None = None,
    notes: Sequence[str] = (),
    layers: Mapping[str, DeployedLayer] | None = None,
) -> StageReport:
    """Figures of a Keras model (plain or wrapped) as a stage of a report."""
    deployed = layers if layers is not None else deployed_layers(model)
    stage = StageReport(name=name, keras_metrics=dict(metrics or {}), notes=list(notes),
                        outputs=len(getattr(model, "outputs", None) or [None]))
    stage.layers = [layer_stats(layer) for layer in deployed.values()]
    _aggregate(stage)
    stage.float_bytes = sum(layer.float_bytes for layer in stage.layers)
    stage.zipped_bytes = zipped_bytes([w for layer in deployed.values() for w in layer.weights.values()])
    return stage


# ------------------------------------------------------------------- int8
_SUFFIX = re.compile(r"_\d+$")


def tflite_layer_name(tensor_name: str, layer_names: Sequence[str]) -> str | None:
    """The Keras layer a ``.tflite`` weight tensor comes from, read from its name (best effort).

    The converter names tensors after the ops that made them (``model_1/quant_conv_1/conv_1/...``;
    Keras adds ``_1`` suffixes when it re-traces), so the last path component that is a layer
    name, with or without such a suffix or a ``quant_`` prefix, wins.
    """
    known = set(layer_names)
    first = tensor_name.split(";")[0]
    found = None
    for part in first.split("/"):
        for candidate in (part, _SUFFIX.sub("", part)):
            if candidate in known:
                found = candidate
                break
            if candidate.startswith("quant_") and candidate[6:] in known:
                found = candidate[6:]
                break
    return found


def tflite_weights(tflite: bytes, layer_names: Sequence[str] = ()) -> list[tuple[Any, str | None, np.ndarray]]:
    """``(WeightTensor, Keras layer name or None, dequantized values)`` of every weight tensor."""
    from kopt.export import weight_tensors

    return [(t, tflite_layer_name(t.name, layer_names), t.dequantized()) for t in weight_tensors(tflite)]


def tflite_stage(
    name: str,
    tflite: bytes,
    *,
    layer_names: Sequence[str] = (),
    int8_accuracy: float | None = None,
    edgetpu: Any = None,
    notes: Sequence[str] = (),
) -> StageReport:
    """Figures of a ``.tflite`` as a stage: one :class:`LayerStats` per stored weight tensor."""
    from kopt.export import tflite_size, zipped_size

    stage = StageReport(name=name, int8_accuracy=int8_accuracy, notes=list(notes))
    tensors = tflite_weights(tflite, layer_names)
    for tensor, layer, _ in tensors:
        values = tensor.values
        bits = values.dtype.itemsize * 8
        stats = LayerStats(
            name=tensor.name.split(";")[0],
            class_name=tensor.op,
            parameters=int(values.size),
            sparsity=float(tensor.sparsity),
            unique_values=int(tensor.max_unique_per_channel),
            bits=bits,
            float_bytes=int(values.nbytes),
            zipped_bytes=zipped_bytes([values]),
            kernel_parameters=int(values.size) if values.ndim >= 2 else 0,
            layer=layer,
        )
        stage.layers.append(stats)
    _aggregate(stage)
    stage.float_bytes = sum(layer.float_bytes for layer in stage.layers)
    stage.zipped_bytes = zipped_bytes([t.values for t, _, _ in tensors])
    stage.tflite_bytes = tflite_size(tflite)
    stage.tflite_zipped_bytes = zipped_size(tflite)
    if edgetpu is not None:
        stage.edgetpu = _edgetpu_summary(edgetpu)
    return stage


def _edgetpu_summary(report: Any) -> dict[str, Any]:
    first = report.first_unsupported
    return {
        "fully_mapped": bool(report.fully_mapped),
        "num_mapped": int(report.num_mapped),
        "num_ops": int(report.num_ops),
        "errors": list(report.errors),
        "first_unsupported": None
        if first is None
        else {"index": first.index, "op": first.op, "tensor": first.tensor.split(";")[0], "reason": first.reasons[0]},
        "unmapped": [
            {"index": v.index, "op": v.op, "tensor": v.tensor.split(";")[0], "reason": v.reasons[0]} for v in report.unmapped
        ],
        "table": report.table(),
    }


def compression(
    model_or_tflite: keras.Model | bytes | str | Path,
    *,
    name: str = "model",
    data: tuple[Any, Any] | None = None,
) -> StageReport:
    """Sizes, sparsity and unique values of a Keras model or a ``.tflite`` (bytes or path).

    With ``data=(x, y)`` the accuracy is measured too (``model.predict`` / the LiteRT
    interpreter; top-1 against integer or one-hot labels), and a ``.tflite`` is checked for
    the Edge TPU.
    """
    if data is not None and (not isinstance(data, tuple) or len(data) != 2):
        raise InvalidArgumentError(f"compression(data=...) must be a tuple (x, y), got {type(data).__name__}.")
    if isinstance(model_or_tflite, keras.Model):
        metrics = {}
        if data is not None:
            from kopt.core.data import check_data

            check_data(model_or_tflite, data, argument="compression data")
            x, y = data
            predictions = np.asarray(model_or_tflite.predict(x, verbose=0))
            metrics["accuracy"] = top1_accuracy(predictions, y)
        return keras_stage(name, model_or_tflite, metrics=metrics)
    from kopt.export import check_edgetpu, evaluate
    from kopt.export.flatbuffer import read_bytes

    raw = read_bytes(model_or_tflite)
    if data is not None:
        from kopt.core.data import check_arrays

        check_arrays(data[0], data[1], argument="compression data")
    accuracy = evaluate(raw, data[0], data[1]) if data is not None else None
    return tflite_stage(name, raw, int8_accuracy=accuracy, edgetpu=check_edgetpu(raw))


# ------------------------------------------------------------------ report
@dataclass
class Report:
    """The whole pipeline: stages in order, the policy and its per-layer plan, warnings and errors."""

    model_name: str
    policy: dict[str, Any]
    stages: list[StageReport] = field(default_factory=list)
    plan: str = ""
    eval_split: str = "validation"
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def stage(self, name: str) -> StageReport:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UnknownNameError(f"No stage {name!r} in this report; stages: {[s.name for s in self.stages]}.")

    @property
    def final(self) -> StageReport:
        return self.stages[-1]

    @property
    def edgetpu(self) -> dict[str, Any] | None:
        for stage in reversed(self.stages):
            if stage.edgetpu is not None:
                return stage.edgetpu
        return None

    # ---------------------------------------------------------- formats
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "policy": self.policy,
            "eval_split": self.eval_split,
            "stages": [stage.to_dict() for stage in self.stages],
            "edgetpu": self.edgetpu,
            "warnings": list(self.warnings),
            "errors": list(self.errors),
            "plan": self.plan,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def stage_table(self) -> str:
        """Markdown: one row per stage."""
        rows = [
            "| stage | Keras acc | int8 acc | params | kernel sparsity | max unique values / channel | float32 weights "
            "| zipped float32 weights | .tflite | zipped .tflite |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.stages:
            rows.append(
                f"| {s.name} | {_num(s.keras_accuracy)} | {_num(s.int8_accuracy)} | {s.parameters} | {s.sparsity:.1%} | "
                f"{s.max_unique_values} | {s.float_bytes} | {s.zipped_bytes} | {_opt(s.tflite_bytes)} | "
                f"{_opt(s.tflite_zipped_bytes)} |"
            )
        return "\n".join(rows)

    @staticmethod
    def layer_table(stage: StageReport) -> str:
        """Markdown: one row per layer (per weight tensor for the int8 stage)."""
        tensor_rows = stage.tflite_bytes is not None
        head = "| tensor | op | layer |" if tensor_rows else "| layer | class |"
        rows = [
            head + " params | sparsity | unique values / channel | deployed bits | stored bytes | zipped stored bytes |",
            "|---|---|" + ("---|" if tensor_rows else "") + "---|---|---|---|---|---|",
        ]
        for layer in stage.layers:
            lead = f"| {layer.name} | {layer.class_name} |" + (f" {layer.layer or '?'} |" if tensor_rows else "")
            rows.append(
                f"{lead} {layer.parameters} | {layer.sparsity:.1%} | {layer.unique_values} | {layer.bits} | "
                f"{layer.float_bytes} | {layer.zipped_bytes} |"
            )
        return "\n".join(rows)

    def to_markdown(self) -> str:
        lines = [
            f"# kopt report: {self.model_name}",
            "",
            f"Policy `{self.policy.get('name', 'custom')}`, target `{self.policy.get('target', 'int8')}`. "
            f"Accuracies on the {self.eval_split} data; sizes in bytes (zipped: DEFLATE).",
            "",
            self.stage_table(),
            "",
        ]
        edgetpu = self.edgetpu
        if edgetpu is not None:
            verdict = "fully mapped" if edgetpu["fully_mapped"] else "**NOT fully mapped**"
            lines += ["## Edge TPU", "", f"{edgetpu['num_mapped']}/{edgetpu['num_ops']} operations mapped ({verdict}).", ""]
            first = edgetpu.get("first_unsupported")
            if first:
                lines += [f"First op left on the CPU: #{first['index']} {first['op']} [{first['tensor']}]: {first['reason']}", ""]
            lines += ["```", edgetpu["table"], "```", ""]
        if self.warnings or self.errors:
            lines += ["## Warnings and errors", ""]
            lines += [f"- error: {e}" for e in self.errors] + [f"- warning: {w}" for w in self.warnings] + [""]
        for stage in self.stages:
            lines += [f"## Stage `{stage.name}`", "", stage.summary(), ""]
            lines += [f"- {note}" for note in stage.notes]
            if stage.notes:
                lines.append("")
            lines += [self.layer_table(stage), ""]
        if self.plan:
            lines += ["## Per-layer plan", "", self.plan, ""]
        return "\n".join(lines)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``report.json`` and ``report.md`` into ``directory``; returns the paths."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "report.json", out / "report.md"]
        paths[0].write_text(self.to_json() + "\n")
        paths[1].write_text(self.to_markdown())
        return paths

    def __str__(self) -> str:
        return "\n".join(stage.summary() for stage in self.stages)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


__all__ = [
    "DeployedLayer",
    "LayerStats",
    "Report",
    "StageReport",
    "compression",
    "deployed_layers",
    "keras_stage",
    "layer_stats",
    "tflite_stage",
    "unique_per_channel",
    "zipped_bytes",
]
