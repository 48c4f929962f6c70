"""How each supported weighted layer is computed from a substitute kernel and bias.

Quantization needs the layer's output with a fake-quantized (and possibly BatchNorm-folded)
kernel. Usually that is the layer itself run with substituted variables. Two layouts need
care so that the TFLite converter sees a FakeQuant feeding the TFLite op directly:

* ``Conv1D`` lowers to EXPAND_DIMS + CONV_2D; a per-channel FakeQuant on the 3-D kernel
  does not survive the expand (the converter fails on the quantized axis). The kernel is
  therefore quantized in its 4-D view ``(1, k, in, out)`` and the convolution runs as a
  2-D one, which lowers to the same TFLite ops.
* per-channel axes come from the layer-layout table (:mod:`kopt.core.layers`): the last
  kernel axis except for ``DepthwiseConv2D`` (last two, flattened: TFLite channel
  ``in * multiplier``) and ``Conv2DTranspose`` (axis -2, per-channel unsupported by the
  converter: per tensor). Which layers a BatchNormalization folds into: the table's
  ``foldable`` (:func:`kopt.core.layers.is_foldable`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kopt.core.layers import channel_axes_of
from kopt.core.substitution import call_with_weights


def uses_conv2d_view(layer: keras.layers.Layer) -> bool:
    """A Conv1D computed as a 2-D convolution on its ``(1, k, in, out)`` kernel view."""
    return (
        type(layer) is keras.layers.Conv1D
        and layer.data_format == "channels_last"
        and getattr(layer, "groups", 1) == 1
    )


def kernel_view(layer: keras.layers.Layer, kernel: Any) -> Any:
    """The kernel in the layout the TFLite op consumes (the one to fake-quantize)."""
    return ops.expand_dims(kernel, 0) if uses_conv2d_view(layer) else kernel


def from_view(layer: keras.layers.Layer, view: Any) -> Any:
    """Inverse of :func:`kernel_view`: back to the Keras variable's shape."""
    return ops.squeeze(view, 0) if uses_conv2d_view(layer) else view


def channel_broadcast_shape(layer: keras.layers.Layer, kernel_shape: tuple) -> tuple:
    """Shape that makes a per-output-channel vector broadcast against the kernel view.

    From the kernel's output-channel axes in the layer-layout table: ``(out,)`` for the last
    axis, ``(in, mult)`` for a depthwise kernel, ``(out, 1)`` for a transposed-conv kernel.
    """
    axes = channel_axes_of(layer, "kernel") or (-1,)
    return tuple(kernel_shape[a] if a in axes else 1 for a in range(min(axes), 0))


def scale_kernel(layer: keras.layers.Layer, view: Any, per_channel: Any) -> Any:
    """Multiply each output channel of the kernel view by ``per_channel[c]``."""
    return view * ops.reshape(per_channel, channel_broadcast_shape(layer, tuple(view.shape)))


def run_linear(layer: keras.layers.Layer, inputs: Any, view: Any, bias: Any | None, **kwargs: Any) -> Any:
    """``layer(inputs)`` with kernel ``from_view(view)`` and ``bias`` (None: the layer's own)."""
    if uses_conv2d_view(layer):
        return _conv1d_as_conv2d(layer, inputs, view, layer.bias if bias is None else bias)
    substitutions = [(layer.kernel, from_view(layer, view))]
    if bias is not None:
        substitutions.append((layer.bias, bias))
    return call_with_weights(layer, substitutions, inputs, **kwargs)


def _conv1d_as_conv2d(layer: keras.layers.Conv1D, inputs: Any, kernel4: Any, bias: Any | None) -> Any:
    """Keras ``Conv1D.call`` (channels_last, groups 1) written as a 2-D convolution."""
    padding = layer.padding
    if padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        inputs = ops.pad(inputs, [[0, 0], [left, 0], [0, 0]])
        padding = "valid"
    outputs = ops.conv(
        ops.expand_dims(inputs, 1),
        kernel4,
        strides=(1, layer.strides[0]),
        padding=padding,
        dilation_rate=(1, layer.dilation_rate[0]),
        data_format="channels_last",
    )
    outputs = ops.squeeze(outputs, 1)
    if bias is not None:
        outputs = outputs + bias
    return layer.activation(outputs) if layer.activation is not None else outputs
