"""Graph rewrites run before wrapping, so that the quantized graph has TFLite's op boundaries.

Each transform takes a :class:`TransformContext` (the graph, the per-node configs, the
scheme's lookup and the report) and edits them in place:

* :func:`split_separable_convs` — SeparableConv2D -> DepthwiseConv2D + 1x1 Conv2D (TFLite
  runs two ops, and the tensor between them needs its own range);
* :func:`split_activations` — a layer whose ``activation`` TFLite cannot fuse (sigmoid,
  swish, softmax...) becomes the linear layer + an ``Activation`` layer, so the layer's
  own output gets a range and the activation gets its rule;
* :func:`~kopt.quantization.hard_activations.decompose_hard_activations` — hard-swish /
  hard-sigmoid -> ADD + ReLU6 + MUL ops (the Edge TPU has no HARD_SWISH);
* :func:`fold_batch_norms` — Conv1D/Conv2D/DepthwiseConv2D/Conv2DTranspose/Dense followed
  by BatchNormalization -> one :class:`FoldedBatchNorm`, whose fake-quant sees the folded
  kernel.

Range sharing (Concatenate), activation fusing and pass-through layers are handled when
activation quantizers are placed (:mod:`kopt.quantization.ranges`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np

from kopt.core.errors import InvalidArgumentError
from kopt.core.keras_compat import ops_math
from kopt.core.layers import is_foldable
from kopt.graph import ModelGraph, Pattern, find_matches, find_nodes
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.decompose import (
    SaturatingRsqrt,
    decompose_layer_norms,
    einsum_dense_as_dense,
    grouped_convs_as_depthwise,
)
from kopt.quantization.hard_activations import decompose_hard_activations
from kopt.quantization.registry import activation_name, layer_activation_fusable
from kopt.quantization.wrapper import FoldedBatchNorm


@dataclass
class TransformContext:
    """What a transform may read and edit.

    ``configs`` maps every non-input node to its QuantizeConfig, or None for a node left
    in float. ``lookup`` gives the config of a layer a transform creates. ``notes``
    collects human-readable lines for the report.
    """

    graph: ModelGraph
    configs: dict[str, QuantizeConfig | None]
    lookup: Callable[[keras.Operation], QuantizeConfig | None]
    notes: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)

    def quantized(self, node: str) -> bool:
        return self.configs.get(node) is not None

    def set_config(self, node: str, layer: keras.Operation) -> None:
        config = self.lookup(layer)
        if config is None:
            raise InvalidArgumentError(
                f"Internal error: no quantization config for layer {layer.name!r} ({type(layer).__name__}) "
                "created by a kopt transform."
            )
        self.configs[node] = config


Transform = Callable[[TransformContext], None]


def clone_with(layer: keras.layers.Layer, name: str | None = None, **changes: Any) -> keras.layers.Layer:
    """A copy of ``layer`` (own variables, host copies of the values) with some config entries changed.

    Weights are copied in order; when a change adds variables (``use_bias=True``) they are
    matched by name and the new ones start at zero.
    """
    config = {**layer.get_config(), **changes}
    if name is not None:
        config["name"] = name
    copy = layer.__class__.from_config(config)
    build_config = layer.get_build_config()
    if build_config is not None:
        _build_cheaply(copy, build_config)
    if len(copy.weights) == len(layer.weights):
        sources = list(layer.weights)
    else:  # e.g. a bias added by use_bias=True: match by variable name, missing ones start at zero
        by_name = {_short_name(v): v for v in layer.weights}
        sources = [by_name.get(_short_name(v)) for v in copy.weights]
    for variable, source in zip(copy.weights, sources):
        variable.assign(_copy_of(source) if source is not None else np.zeros(variable.shape, variable.dtype))
    return copy


def _build_cheaply(layer: keras.layers.Layer, build_config: dict) -> None:
    """Build with zero initializers (every value is overwritten next): random init of big kernels is slow."""
    saved = {k: v for k, v in vars(layer).items() if isinstance(v, keras.initializers.Initializer)}
    for key in saved:
        object.__setattr__(layer, key, keras.initializers.Zeros())
    try:
        layer.build_from_config(build_config)
    finally:
        for key, value in saved.items():
            object.__setattr__(layer, key, value)




def replace_calls(graph: ModelGraph, nodes: list[str], new: keras.Operation) -> None:
    """``ModelGraph.replace_layer`` for known call nodes."""
    for node in nodes:
        data = graph.dag.nodes[node]
        data["layer"] = new
        if data["kind"] == "op" and isinstance(new, keras.layers.Layer):
            data["kind"] = "layer"
    graph.changed()


def _copy_of(variable: keras.Variable) -> np.ndarray:
    """A host copy: assigning the variable itself would share its buffer (JAX donates buffers)."""
    return np.array(keras.ops.convert_to_numpy(variable))


def _short_name(variable: keras.Variable) -> str:
    return variable.path.split("/")[-1]


def _call_counts(graph: ModelGraph) -> Counter:
    return Counter(id(data["layer"]) for _, data in graph.dag.nodes(data=True))


# ---------------------------------------------------------------- separable
def split_separable_convs(ctx: TransformContext) -> None:
    """SeparableConv2D -> DepthwiseConv2D (no bias) followed by a 1x1 Conv2D."""
    graph = ctx.graph
    done: set[int] = set()
    for node in find_nodes(graph, keras.layers.SeparableConv2D):
        layer = graph.layer(node)
        if not ctx.quantized(node) or id(layer) in done:
            continue
        done.add(id(layer))
        depthwise, pointwise = _separable_parts(layer)
        layer_calls = graph.nodes_of(layer)
        replace_calls(graph, layer_calls, depthwise)
        for call in layer_calls:
            ctx.set_config(call, depthwise)
            new = graph.insert_after(call, pointwise, name=pointwise.name)
            ctx.set_config(new, pointwise)
        ctx.notes.append(f"split SeparableConv2D {layer.name!r} into {depthwise.name!r} + {pointwise.name!r}")


def _separable_parts(layer: keras.layers.SeparableConv2D) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    depthwise = keras.layers.DepthwiseConv2D(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=layer.depth_multiplier,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        use_bias=False,
        name=f"{layer.name}_depthwise",
    )
    pointwise = keras.layers.Conv2D(
        layer.filters,
        1,
        activation=layer.activation,
        use_bias=layer.use_bias,
        data_format=layer.data_format,
        name=f"{layer.name}_pointwise",
    )
    input_shape = layer.get_build_config()["input_shape"]
    _build_cheaply(depthwise, {"input_shape": input_shape})
    _build_cheaply(pointwise, {"input_shape": depthwise.compute_output_shape(input_shape)})
    depthwise.kernel.assign(_copy_of(layer.depthwise_kernel))
    pointwise.kernel.assign(_copy_of(layer.pointwise_kernel))
    if layer.use_bias:
        pointwise.bias.assign(_copy_of(layer.bias))
    return depthwise, pointwise


# --------------------------------------------------------------- activations
def split_activations(ctx: TransformContext) -> None:
    """Move an activation TFLite cannot fuse out of its layer, into an ``Activation`` layer."""
    graph = ctx.graph
    done: set[int] = set()
    for node in graph.layer_nodes():
        layer = graph.layer(node)
        config = ctx.configs.get(node)
        if config is None or id(layer) in done or not hasattr(layer, "activation"):
            continue
        if isinstance(layer, keras.layers.Activation):
            continue
        name = activation_name(layer.activation)
        if name == "linear" or (config.fuses_activation and layer_activation_fusable(layer)):
            continue
        done.add(id(layer))
        linear = clone_with(layer, activation="linear")
        activation = keras.layers.Activation(layer.activation, name=f"{layer.name}_activation")
        layer_calls = graph.nodes_of(layer)
        replace_calls(graph, layer_calls, linear)
        for call in layer_calls:
            ctx.configs[call] = ctx.lookup(linear) or config
            new = graph.insert_after(call, activation, name=activation.name)
            ctx.configs[new] = ctx.lookup(activation)
        ctx.notes.append(f"moved activation {name or layer.activation!r} of {layer.name!r} into its own layer")


# ---------------------------------------------------------------- batchnorm
def _foldable(layer: keras.Operation) -> bool:
    return is_foldable(layer) and activation_name(getattr(layer, "activation", None)) == "linear"


def fold_batch_norms(ctx: TransformContext) -> None:
    """Conv/Dense -> BatchNormalization (channel axis last) becomes one FoldedBatchNorm."""
    graph = ctx.graph
    counts = _call_counts(graph)
    for match in find_matches(graph, Pattern.chain(_foldable, keras.layers.BatchNormalization)):
        conv_node, bn_node = match["p0"], match["p1"]
        conv, bn = graph.layer(conv_node), graph.layer(bn_node)
        conv_config, bn_config = ctx.configs.get(conv_node), ctx.configs.get(bn_node)
        if conv_config is None or bn_config is None:
            continue
        if counts[id(conv)] != 1 or counts[id(bn)] != 1:
            continue
        rank = len(graph.output_shapes(conv_node)[0])
        if bn.axis not in (-1, rank - 1) or getattr(bn, "renorm", False):
            continue
        folded = FoldedBatchNorm(clone_with(conv), clone_with(bn), conv_config.replace(output="range", fuses_activation=True))
        new = graph.fuse([conv_node, bn_node], folded, name=folded.name)
        ctx.configs.pop(conv_node, None)
        ctx.configs.pop(bn_node, None)
        ctx.configs[new] = folded.quantize_config
        ctx.folded.append((conv.name, bn.name))
    graph.changed()


# ---------------------------------------------------------------- rsqrt
def saturating_rsqrts(ctx: TransformContext) -> None:
    """A model's own ``keras.ops.rsqrt`` -> :class:`~kopt.quantization.decompose.SaturatingRsqrt`: the
    same single RSQRT op in the file, but training saturates where TFLite's int8 kernel does (an input
    that quantizes to 0 gives the output maximum) instead of reaching ``rsqrt(0) = inf`` and NaN."""
    nodes = [n for n in find_nodes(ctx.graph, lambda layer: type(layer) is ops_math.Rsqrt) if ctx.quantized(n)]
    for node in nodes:
        saturating = SaturatingRsqrt(name=node.replace("/", "_").replace(":", "_"))
        replace_calls(ctx.graph, [node], saturating)
        ctx.set_config(node, saturating)
    if nodes:
        ctx.notes.append(f"made {len(nodes)} rsqrt op(s) saturate at 0 as TFLite's int8 RSQRT does")


#: The transforms of the default 8-bit scheme, in order.
DEFAULT_TRANSFORMS: tuple[Transform, ...] = (
    grouped_convs_as_depthwise,
    einsum_dense_as_dense,
    saturating_rsqrts,
    decompose_layer_norms,
    split_separable_convs,
    split_activations,
    decompose_hard_activations,
    fold_batch_norms,
)
