"""Public entry points: ``quantize_model``, ``quantize_annotate_layer`` + ``quantize_apply``.

The pipeline (each step in its own module):
analyze the model -> resolve a config per node (annotations, user registry, scheme table;
the whole plan is validated before anything is built) -> scheme transforms (separable
split, activation split, BatchNorm folding) -> wrap weighted layers -> place activation
fake-quants (range groups) -> rebuild. The user's model is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Union

import keras

from kopt.core.errors import (
    GraphRewriteError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from kopt.core.validation import check_finite_weights
from kopt.graph import ModelGraph, analyze, clone_layer
from kopt.graph.model_type import like_input
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.decompose import ScaleShift
from kopt.quantization.inplace import SublayerConfig, in_place_config, quantize_closed_blocks
from kopt.quantization.ranges import insert_activation_quantizers, plan_ranges
from kopt.quantization.schemes import Scheme, get_scheme
from kopt.quantization.transforms import TransformContext, clone_with, replace_calls
from kopt.quantization.wrapper import ActivationQuantize, ChannelAffine, QuantizeWrapper
from kopt.technique import coverage
from kopt.technique.inplace import InPlaceWrapped

AFFINE_LAYERS = (keras.layers.BatchNormalization, keras.layers.Rescaling, keras.layers.Normalization, ScaleShift)


@dataclass
class QuantizationReport:
    """What ``quantize_apply`` did: wrapped, folded, split, left in float, ranges placed."""

    scheme: str
    quantized_weights: list[str] = field(default_factory=list)
    folded_batch_norms: list[tuple[str, str]] = field(default_factory=list)
    float_layers: list[tuple[str, str]] = field(default_factory=list)
    #: Closed blocks (``ModelGraph.closed_composites``) whose weight sublayers are fake-quantized in place, and
    #: those sublayers (``"block/path"``); their inner activations are calibrated when lowered.
    in_place_blocks: list[str] = field(default_factory=list)
    in_place_sublayers: list[str] = field(default_factory=list)
    activation_quantizers: int = 0
    shared_ranges: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    coverage: Any = None  # kopt.coverage.Coverage: kernels with fake-quantized weights, over the whole model

    def __str__(self) -> str:
        lines = [
            f"Quantization scheme {self.scheme!r}:",
            f"  layers with fake-quantized weights: {len(self.quantized_weights)}",
            f"  BatchNorms folded into their conv/dense: {len(self.folded_batch_norms)}",
            f"  activation fake-quants: {self.activation_quantizers}"
            f" ({len(self.shared_ranges)} shared by several tensors)",
        ]
        if self.in_place_blocks:
            lines.append(
                f"  blocks kept whole, weights fake-quantized in place: {', '.join(self.in_place_blocks)} "
                f"({len(self.in_place_sublayers)} sublayers; their inner activations are calibrated on "
                "representative data when lowered)"
            )
        if self.float_layers:
            lines.append(f"  left in float (no config): {len(self.float_layers)}")
            lines += [f"    - {name} ({cls})" for name, cls in self.float_layers]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------- annotate
@keras.saving.register_keras_serializable(package="kopt")
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks a layer for ``quantize_apply`` (optionally with its own config); computes it unchanged."""

    def __init__(self, layer: keras.layers.Layer, quantize_config: QuantizeConfig | dict | None = None, **kwargs: Any):
        kwargs.setdefault("name", f"annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise InvalidArgumentTypeError(f"quantize_config must be a kopt.quantization.QuantizeConfig or None, got {quantize_config!r}.")
        self.quantize_config = quantize_config

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.layer.compute_output_spec(inputs, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["quantize_config"] = (
            None if self.quantize_config is None else keras.saving.serialize_keras_object(self.quantize_config)
        )
        return config


def quantize_annotate_layer(layer: keras.layers.Layer, config: QuantizeConfig | None = None) -> QuantizeAnnotate:
    """Mark ``layer`` for quantization; use the result in place of the layer when building the model.

    With ``config`` the layer is quantized as that config says (needed for custom layers
    no registry covers); without, the scheme's config for its class is used. When a model
    contains annotations, ``quantize_apply`` quantizes only the annotated layers.
    """
    if not isinstance(layer, keras.layers.Layer):
        raise UnsupportedModelError(f"quantize_annotate_layer needs a keras.layers.Layer, got {type(layer).__name__}.")
    if isinstance(layer, (QuantizeAnnotate, QuantizeWrapper)):
        raise InvalidArgumentError(f"Layer {layer.name!r} is already annotated or quantized.")
    if config is not None and not isinstance(config, QuantizeConfig):
        raise InvalidArgumentTypeError(f"config must be a kopt.quantization.QuantizeConfig or None, got {config!r}.")
    return QuantizeAnnotate(layer, config)


# -------------------------------------------------------------------- apply
def quantize_model(
    model: keras.Model,
    scheme: Union[str, Scheme] = "default_8bit",
    *,
    unsupported: str = "error",
    return_report: bool = False,
) -> Any:
    """A quantization-aware copy of ``model`` (every layer, or only the annotated ones).

    A composite block kopt cannot open (``analyze(model).closed_composites``) is quantized in place: its
    Dense / Conv / ... sublayers get fake-quantized weights, its inner activations are calibrated when
    lowered (pass ``representative_data`` to :func:`kopt.export.to_tflite`; see :mod:`kopt.quantization.inplace`).

    Args:
        model: Functional or Sequential Keras 3 model (nested models are flattened).
        scheme: ``"default_8bit"`` (TFLite int8) or a :class:`Scheme`.
        unsupported: ``"error"`` (default) raises :class:`UnsupportedLayerError` listing
            every layer without a config; ``"float"`` leaves them in float and lists them
            in the report (TFLite then runs them in float between QUANTIZE/DEQUANTIZE).
        return_report: also return a :class:`QuantizationReport`.

    Returns:
        The new model (train it with ``fit`` as usual), or ``(model, report)``.
    """
    return quantize_apply(model, scheme, unsupported=unsupported, return_report=return_report)


def quantize_apply(
    model: keras.Model,
    scheme: Union[str, Scheme] = "default_8bit",
    *,
    unsupported: str = "error",
    return_report: bool = False,
    sublayer_config: SublayerConfig | None = None,
    keep_float: Collection[str] = (),
) -> Any:
    """Quantize the annotated layers of ``model`` (all layers when none is annotated).

    See :func:`quantize_model` for the arguments. For the sublayers of closed blocks (quantized in place):
    ``sublayer_config(key, sublayer)`` gives the config of the sublayer keyed ``"block/path"`` (default: the
    scheme's, when it fake-quantizes weights), and ``keep_float`` names those left float on purpose.
    """
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"quantize_apply needs a keras.Model, got {type(model).__name__}.")
    if unsupported not in ("error", "float"):
        raise InvalidArgumentError(f"unsupported must be 'error' or 'float', got {unsupported!r}.")
    scheme = get_scheme(scheme)
    if any(isinstance(layer, (QuantizeWrapper, ActivationQuantize)) for layer in model._flatten_layers()):
        raise InvalidArgumentError(f"Model {model.name!r} is already quantization-aware; quantize the original model.")
    check_finite_weights(model, "kopt.quantization.quantize_apply")
    graph = analyze(model)
    report = QuantizationReport(scheme=scheme.name)

    configs, missing = _resolve_configs(graph, scheme)
    def scheme_config(key: str, sub: keras.layers.Layer) -> QuantizeConfig | None:
        return in_place_config(scheme.config_for, sub)

    in_place = quantize_closed_blocks(
        graph, missing, configs, sublayer_config or scheme_config, keep_float, scheme.activation_quantizer
    )
    report.in_place_blocks, report.in_place_sublayers = in_place.blocks, in_place.sublayers
    missing = [node for node in missing if configs.get(node) is None]
    if missing and unsupported == "error":
        raise UnsupportedLayerError(_missing_message(graph, missing, scheme, in_place.refused))
    for node in missing:
        layer = graph.layer(node)
        entry = (getattr(layer, "name", node), type(layer).__name__)
        if entry not in report.float_layers:
            report.float_layers.append(entry)

    context = TransformContext(graph=graph, configs=configs, lookup=scheme.config_for)
    for transform in scheme.transforms:
        transform(context)
    report.folded_batch_norms = list(context.folded)
    report.notes.extend(context.notes)

    for name in _wrap_layers(graph, configs):
        report.notes.append(
            f"layer {name!r} cannot be copied from its config: the quantized model shares it with the original "
            "(training one changes the other's weights)"
        )
    report.quantized_weights = _quantized_weight_layers(graph) + in_place.sublayers
    plan = plan_ranges(graph, configs, scheme.is_fusable_activation)
    insert_activation_quantizers(graph, plan, scheme.activation_quantizer)
    report.activation_quantizers = len(plan.groups)
    report.shared_ranges = [[node for node, _ in group] for group in plan.shared]

    _make_names_unique(graph)
    quantized = like_input(model, graph.rebuild(name=model.name), "quantize_apply")
    left_out = {
        getattr(graph.layer(n), "name", n) for n, c in configs.items() if c is None and n not in missing and n in graph.dag
    }
    reasons = {
        name: f"no quantization config for {cls}, left in float (unsupported='float'); register one with "
        "kopt.quantization.register or build the model from its sublayers"
        for name, cls in report.float_layers
    }
    reasons.update({
        name: f"kopt keeps this block whole and cannot quantize its sublayers in place ({why}); left in float "
        "(unsupported='float'): make its config round-trip (get_config / from_config) or register a QuantizeConfig for it"
        for name, why in in_place.refused.items() if name in reasons
    })
    excluded = left_out | set(keep_float)
    report.coverage = coverage.measure(quantized, "quantize", excluded=excluded, reasons=reasons)
    report.coverage.warn(stacklevel=3)
    return (quantized, report) if return_report else quantized


def _resolve_configs(graph: ModelGraph, scheme: Scheme) -> tuple[dict[str, QuantizeConfig | None], list[str]]:
    """Config per node; unwraps annotations. Returns ``(configs, nodes lacking a config)``."""
    annotated: dict[str, QuantizeConfig | None] = {}
    for annotation in {id(l): l for l in graph.layers() if isinstance(l, QuantizeAnnotate)}.values():
        annotation_calls = graph.nodes_of(annotation)
        replace_calls(graph, annotation_calls, annotation.layer)
        for node in annotation_calls:
            annotated[node] = annotation.quantize_config
    selective = bool(annotated)
    configs: dict[str, QuantizeConfig | None] = {}
    missing: list[str] = []
    for node in graph.topological_nodes():
        if graph.dag.nodes[node]["kind"] == "input":
            continue
        if selective and node not in annotated:
            configs[node] = None
            continue
        layer = graph.layer(node)
        explicit = annotated.get(node)
        if explicit is not None:
            explicit = explicit.for_layer(layer)
        config = scheme.finalize(layer, explicit) if explicit is not None else scheme.config_for(layer)
        if config is None:
            missing.append(node)
        configs[node] = config
    return configs, missing


def _missing_message(graph: ModelGraph, missing: list[str], scheme: Scheme, refused: dict[str, str]) -> str:
    seen: dict[int, keras.Operation] = {}
    for node in missing:
        seen.setdefault(id(graph.layer(node)), graph.layer(node))
    listed = ", ".join(f"{getattr(l, 'name', '?')!r} ({type(l).__name__})" for l in seen.values())
    first = next(iter(seen.values()))
    cls = type(first).__name__
    return (
        f"Scheme {scheme.name!r} has no quantization config for {len(seen)} layer(s): {listed}. "
        f"Tell kopt how to quantize them, e.g. for {cls}: "
        f"`kopt.quantization.register({cls}, QuantizeConfig(weights={{'kernel': WeightQuantizer()}}, output='range'))` "
        f"for every {cls}, or `quantize_annotate_layer(layer, config=QuantizeConfig(...))` for one layer "
        "(output='passthrough' for layers that only move values, e.g. reshapes). "
        "Or pass unsupported='float' to keep them in float (listed in the report)."
        + "".join(f" Block {name!r} is kept whole and its sublayers cannot be quantized in place: {why}"
                  for name, why in refused.items())
    )


def _make_names_unique(graph: ModelGraph) -> None:
    """Keras needs unique layer names: a kopt layer whose name a user layer already has gets a suffix."""
    layers = list({id(graph.layer(n)): graph.layer(n) for n in graph.layer_nodes()}.values())
    created = (QuantizeWrapper, ActivationQuantize)
    taken: set[str] = set()
    for layer in [l for l in layers if not isinstance(l, created)] + [l for l in layers if isinstance(l, created)]:
        name, k = layer.name, 1
        while name in taken:
            name, k = f"{layer.name}_{k}", k + 1
        if name != layer.name:
            layer.name = name
        taken.add(name)


def _quantized_weight_layers(graph: ModelGraph) -> list[str]:
    """Names of the (inner) layers whose weights are fake-quantized, in execution order."""
    names: list[str] = []
    for node in graph.layer_nodes():
        layer = graph.layer(node)
        if isinstance(layer, QuantizeWrapper) and layer.quantize_config.weights and layer.layer.name not in names:
            names.append(layer.layer.name)
    return names


def _wrap_layers(graph: ModelGraph, configs: dict[str, QuantizeConfig | None]) -> list[str]:
    """Wrap quantized weighted layers in place, copy the others. Returns the names of layers shared with the
    user's model (their config does not round-trip, see :func:`_float_copy`)."""
    shared: list[str] = []
    nodes_by_layer: dict[int, list[str]] = {}
    for node in graph.layer_nodes():
        nodes_by_layer.setdefault(id(graph.layer(node)), []).append(node)
    for nodes in nodes_by_layer.values():
        layer = graph.layer(nodes[0])
        if isinstance(layer, (QuantizeWrapper, ActivationQuantize, InPlaceWrapped)):
            continue  # created by a transform (e.g. FoldedBatchNorm) or a block quantized in place: a fresh copy
        config = configs.get(nodes[0])
        replacement: keras.layers.Layer | None = None
        if config is not None and isinstance(layer, AFFINE_LAYERS):
            replacement = ChannelAffine(clone_with(layer), config, name=f"quant_{layer.name}")
        elif config is not None and config.weights:
            replacement = QuantizeWrapper(clone_with(layer), config)
        elif isinstance(layer, keras.layers.Layer):
            replacement = _float_copy(layer)
        if replacement is layer:
            shared.append(layer.name)
        elif replacement is not None:
            replace_calls(graph, nodes, replacement)
    return shared


def _float_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of a layer left float, so the new model does not train the user's object; a layer whose config
    does not round-trip is never rebuilt from it (a wrong copy): it is shared, as ``kopt.graph.map_layers`` does."""
    try:
        return clone_layer(layer)
    except GraphRewriteError:
        return layer
