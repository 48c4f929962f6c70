"""Transforms that rewrite transformer and keras-hub layers into ops TFLite runs in int8.

* :func:`grouped_convs_as_depthwise` — ``Conv2D(groups=in_channels)`` (keras-hub MobileNet's
  depthwise convolutions) -> ``DepthwiseConv2D`` with the same weights (a grouped CONV_2D has
  no int8 kernel in TFLite, and a BatchNormalization then folds into it);
* :func:`einsum_dense_as_dense` — an ``EinsumDense`` that contracts the trailing input axes
  (MultiHeadAttention's projections) -> ``Reshape`` + ``Dense`` + ``Reshape``, so the
  converter emits one FULLY_CONNECTED whose kernel and bias are int8/int32;
* :func:`decompose_layer_norms` — ``LayerNormalization`` over the last axis -> MEAN, SUB,
  MUL, MEAN, ADD, RSQRT (:class:`SaturatingRsqrt`), MUL and a per-channel :class:`ScaleShift`
  (gamma, beta), each output with its own range: the converter's fused form leaves a float NEG.

Each keeps the float function (up to float rounding).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from kopt.core.keras_compat import ops_numpy
from kopt.graph import find_nodes

if TYPE_CHECKING:
    from kopt.quantization.transforms import TransformContext


@keras.saving.register_keras_serializable(package="kopt")
class ScaleShift(keras.layers.Layer):
    """``x * gamma + beta`` over the last axis: the affine part of a decomposed LayerNormalization."""

    def __init__(self, channels: int, center: bool = True, scale: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.channels, self.center, self.scale = int(channels), bool(center), bool(scale)
        self.gamma = self.add_weight(shape=(self.channels,), initializer="ones", name="gamma") if scale else None
        self.beta = self.add_weight(shape=(self.channels,), initializer="zeros", name="beta") if center else None
        self.built = True

    def build(self, input_shape: Any) -> None:
        self.built = True

    def call(self, inputs: Any) -> Any:
        x = inputs
        if self.gamma is not None:
            x = x * keras.ops.cast(self.gamma, x.dtype)
        if self.beta is not None:
            x = x + keras.ops.cast(self.beta, x.dtype)
        return x

    def coefficients(self) -> tuple[Any, Any]:
        ones = keras.ops.ones((self.channels,), "float32")
        a = keras.ops.cast(self.gamma, "float32") if self.gamma is not None else ones
        b = keras.ops.cast(self.beta, "float32") if self.beta is not None else 0.0 * ones
        return a, b

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "center": self.center, "scale": self.scale}


@keras.saving.register_keras_serializable(package="kopt")
class SaturatingRsqrt(keras.layers.Layer):
    """``1 / sqrt(x)`` of a decomposed LayerNormalization, saturating where TFLite's int8 RSQRT does.

    Its input (variance + epsilon) is fake-quantized, so it is either 0 or at least one step
    of the input range. A near-constant token (DeiT's class and distillation tokens) has a
    variance + epsilon far below that step: it quantizes to 0. TFLite's int8 RSQRT kernel
    (``RsqrtEvalQuantized``) maps an input code equal to the zero point to the output's
    maximum code ("any value close to 0 represents the max output value"); a plain float
    ``rsqrt(0)`` is ``inf``, whose range and gradient turn QAT into NaN.

    * Inference (what the converter reads): ``rsqrt(x)``, one RSQRT op. ``rsqrt(0) = inf``,
      and the output's fake-quant clamps it to the range maximum — TFLite's saturation.
    * Training: the same values, ``inf`` where ``x <= 0``, written so that the gradient stays
      finite (``rsqrt`` is never evaluated at 0; a saturated entry gets gradient 0, as
      TFLite's output there does not depend on the input). The output's activation
      quantizer is ``saturating`` (:mod:`kopt.quantization.ranges` sets it from
      :attr:`saturating_output`): it quantizes ``inf`` to its maximum and learns its range
      from the finite values only.

    Away from 0 the values are those of ``keras.ops.rsqrt``, bit for bit.
    """

    #: The output holds ``+inf`` where the int8 kernel saturates to the output's maximum.
    saturating_output = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = keras.ops.convert_to_tensor(inputs)
        if not training:
            return keras.ops.rsqrt(x)
        positive = keras.ops.greater(x, 0.0)
        finite = keras.ops.rsqrt(keras.ops.where(positive, x, keras.ops.ones_like(x)))
        return keras.ops.where(positive, finite, keras.ops.full_like(x, float("inf")))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


# ------------------------------------------------------------ grouped convs
def is_depthwise_grouped_conv(layer: keras.Operation) -> bool:
    if type(layer) is not keras.layers.Conv2D or getattr(layer, "groups", 1) == 1:
        return False
    channels = layer.kernel.shape[-2] * layer.groups
    return layer.groups == channels and layer.filters % channels == 0 and layer.data_format == "channels_last"


def depthwise_of(layer: keras.layers.Conv2D) -> keras.layers.DepthwiseConv2D:
    channels = layer.groups
    multiplier = layer.filters // channels
    depthwise = keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding, depth_multiplier=multiplier,
        dilation_rate=layer.dilation_rate, activation=layer.activation, use_bias=layer.use_bias, name=layer.name,
    )
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (kh, kw, 1, channels * multiplier)
    depthwise.build((None, None, None, channels))
    weights = [kernel.reshape(*kernel.shape[:2], channels, multiplier)]
    if layer.use_bias:
        weights.append(keras.ops.convert_to_numpy(layer.bias))
    depthwise.set_weights(weights)
    return depthwise


def grouped_convs_as_depthwise(ctx: "TransformContext") -> None:
    nodes = [n for n in find_nodes(ctx.graph, is_depthwise_grouped_conv) if ctx.quantized(n)]
    done: dict[int, keras.layers.Layer] = {}
    for node in nodes:
        layer = ctx.graph.layer(node)
        if id(layer) not in done:
            done[id(layer)] = depthwise_of(layer)
            ctx.graph.replace_layer(layer, done[id(layer)])
        ctx.set_config(node, done[id(layer)])
    if nodes:
        ctx.notes.append(f"ran {len(nodes)} grouped Conv2D(groups=channels) as DepthwiseConv2D")


# ------------------------------------------------------------- EinsumDense
def dense_form(layer: keras.layers.EinsumDense, input_shape: tuple) -> tuple[list[int], int, tuple] | None:
    """``(input sizes kept, contracted size, output trailing sizes)`` when the einsum is a Dense
    on the trailing input axes, else None."""
    equation = layer.equation.replace(" ", "")
    if "..." in equation or "->" not in equation:
        return None
    left, out = equation.split("->")
    inp, ker = left.split(",")
    contracted = [c for c in inp if c in ker and c not in out]
    kept = [c for c in inp if c not in ker]
    free = [c for c in ker if c not in inp]
    if inp != "".join(kept + contracted) or ker != "".join(contracted + free) or out != "".join(kept + free):
        return None
    if len(input_shape) != len(inp) or any(d is None for d in input_shape[len(kept):]):
        return None
    kernel_shape = tuple(layer.kernel.shape)
    bias = getattr(layer, "bias", None)
    if bias is not None and tuple(bias.shape) != kernel_shape[len(contracted):]:
        return None
    return list(input_shape[1:len(kept)]), math.prod(input_shape[len(kept):]), kernel_shape[len(contracted):]


def _einsum_functional(layer: keras.layers.EinsumDense, spec: keras.KerasTensor, name: str) -> keras.Model | None:
    form = dense_form(layer, tuple(spec.shape))
    if form is None or sum(d is None for d in form[0]) > 1:
        return None
    kept, contracted, free = form
    units = math.prod(free)
    dense = keras.layers.Dense(units, activation=layer.activation, use_bias=getattr(layer, "bias", None) is not None,
                               name=layer.name)
    dense.build((None, contracted))
    weights = [keras.ops.convert_to_numpy(layer.kernel).reshape(contracted, units)]
    if dense.use_bias:
        weights.append(keras.ops.convert_to_numpy(layer.bias).reshape(units))
    dense.set_weights(weights)
    x = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype)
    kept_sizes = [-1 if d is None else d for d in kept]
    needs_flat = len(spec.shape) != len(kept) + 2  # more than one contracted axis
    y = keras.layers.Reshape((*kept_sizes, contracted), name=f"{name}_flat_in")(x) if needs_flat else x
    y = dense(y)
    if len(free) != 1:
        y = keras.layers.Reshape((*kept_sizes, *free), name=f"{name}_split_out")(y)
    return keras.Model(x, y, name=f"{name}_as_dense")


def einsum_dense_as_dense(ctx: "TransformContext") -> None:
    nodes = [n for n in find_nodes(ctx.graph, lambda l: type(l) is keras.layers.EinsumDense) if ctx.quantized(n)]
    rewritten = 0
    for node in nodes:
        layer = ctx.graph.layer(node)
        if len(ctx.graph.nodes_of(layer)) != 1:
            continue  # a shared EinsumDense stays as is (one copy of its kernel)
        (spec,) = ctx.graph.dag.nodes[node]["tensors"]
        functional = _einsum_functional(layer, spec, node.replace("/", "_").replace(":", "_"))
        if functional is None:
            continue
        ctx.configs.pop(node, None)
        for new in ctx.graph.inline(node, functional):
            ctx.set_config(new, ctx.graph.layer(new))
        rewritten += 1
    if rewritten:
        ctx.notes.append(f"ran {rewritten} EinsumDense layer(s) as Reshape + Dense (FULLY_CONNECTED)")


# ------------------------------------------------------- LayerNormalization
def is_last_axis_layer_norm(layer: keras.Operation) -> bool:
    if type(layer) is not keras.layers.LayerNormalization or getattr(layer, "rms_scaling", False):
        return False
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(layer.get_build_config()["input_shape"]) if layer.get_build_config() else None
    return rank is not None and [a % rank for a in axes] == [rank - 1]


def _layer_norm_functional(layer: keras.layers.LayerNormalization, spec: keras.KerasTensor, name: str) -> keras.Model:
    channels = int(spec.shape[-1])
    x = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype)
    mean = ops_numpy.Mean(axis=-1, keepdims=True, name=f"{name}_mean")(x)
    centered = ops_numpy.Subtract(name=f"{name}_centered")(x, mean)
    squared = ops_numpy.Multiply(name=f"{name}_squared")(centered, centered)
    variance = ops_numpy.Mean(axis=-1, keepdims=True, name=f"{name}_variance")(squared)
    variance = ops_numpy.Add(name=f"{name}_epsilon")(variance, float(layer.epsilon))
    inverse = SaturatingRsqrt(name=f"{name}_rsqrt")(variance)
    normalized = ops_numpy.Multiply(name=f"{name}_normalized")(centered, inverse)
    affine = ScaleShift(channels, center=layer.center, scale=layer.scale, name=layer.name)
    affine.set_weights([np.asarray(keras.ops.convert_to_numpy(w)) for w in (layer.gamma, layer.beta) if w is not None])
    return keras.Model(x, affine(normalized), name=f"{name}_decomposed")


def decompose_layer_norms(ctx: "TransformContext") -> None:
    nodes = [n for n in find_nodes(ctx.graph, is_last_axis_layer_norm) if ctx.quantized(n)]
    for node in nodes:
        (spec,) = ctx.graph.dag.nodes[node]["tensors"]
        functional = _layer_norm_functional(ctx.graph.layer(node), spec, node.replace("/", "_").replace(":", "_"))
        ctx.configs.pop(node, None)
        for new in ctx.graph.inline(node, functional):
            ctx.set_config(new, ctx.graph.layer(new))
    if nodes:
        ctx.notes.append(f"wrote {len(nodes)} LayerNormalization(s) as MEAN/SUB/MUL/RSQRT ops + a per-channel affine")
