"""The layer-layout table: the one place that says where a layer's kernels are and how they are laid out.

Every technique reads it: pruning (which weights, the M:N input-channel axis), clustering
(which weights, the output-channel axes of per-channel clustering), quantization (the
output-channel axes of per-channel fake-quant, whether a following BatchNormalization folds
in) and policies (whether a layer is pruned unless a rule asks).

One row per layer class; a layer uses the row of its nearest registered base class (its own
class first, then up the MRO). A ``keras.layers.RNN`` without a row of its own uses its
cell's row, with ``cell.`` before each attribute. Custom layers get a row with
:func:`register_layer` (``kopt.register_layer`` also registers a quantize config).

=========================================  ==================================  ===========  ========  ========
layer                                      kernels (output-channel axes)        M:N axis     folds BN  pruned by
                                                                                                       default
=========================================  ==================================  ===========  ========  ========
Dense                                      kernel ``(in, out)`` (-1)            0            yes       yes
Conv1D / Conv2D / Conv3D                   kernel ``(*k, in, out)`` (-1)        -2           1D, 2D    yes
Conv1D/2D/3DTranspose                      kernel ``(*k, out, in)`` (-2)        -1           2D        yes
DepthwiseConv1D / DepthwiseConv2D          kernel ``(*k, in, mult)`` (-2, -1)   none         2D        no
SeparableConv1D / SeparableConv2D          depthwise (-2, -1), pointwise (-1)   none, -2     no        yes
Embedding                                  embeddings (per tensor only)         none         no        yes
EinsumDense                                kernel (per tensor only)             none         no        yes
LSTMCell / GRUCell / SimpleRNNCell         kernel, recurrent_kernel (-1)        0, 0         no        yes
=========================================  ==================================  ===========  ========  ========

The M:N axis is the input-channel axis *in Keras layout* of the axis TFLite stores innermost
(FULLY_CONNECTED ``[out, in]``, CONV_2D and TRANSPOSE_CONV ``OHWI``), so M:N groups are
consecutive in the deployed buffer. Output-channel axes: a depthwise kernel's TFLite channel
is ``in * multiplier`` (its last two axes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import keras

from kopt.core.errors import InvalidArgumentError, InvalidArgumentTypeError

ChannelAxes = tuple[int, ...] | None


@dataclass(frozen=True)
class Kernel:
    """One weight a technique may act on.

    ``attribute``: the attribute path of the variable (``"kernel"``, ``"cell.kernel"``; a private
    ``_kernel`` is preferred to a ``kernel`` property when both exist). ``channel_axes``: the
    axes that index the output channel (``None``: per tensor only). ``input_axis``: the M:N
    input-channel axis (``None``: the weight cannot take M:N sparsity).
    """

    attribute: str
    channel_axes: ChannelAxes = (-1,)
    input_axis: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise InvalidArgumentTypeError(f"Kernel.attribute must be a non-empty attribute path, got {self.attribute!r}.")
        object.__setattr__(self, "channel_axes", _axes(self.channel_axes))
        if self.input_axis is not None and (isinstance(self.input_axis, bool) or not isinstance(self.input_axis, int)):
            raise InvalidArgumentTypeError(f"Kernel {self.attribute!r}: input_axis must be an int or None, got {self.input_axis!r}.")


@dataclass(frozen=True)
class LayerLayout:
    """One row of the table: the layer's kernels and what each technique does with it by default."""

    kernels: tuple[Kernel, ...]
    foldable: bool = False  # a following BatchNormalization folds into its kernel (linear, one channel per slice)
    prunable: bool = True
    clusterable: bool = True
    prune_by_default: bool = True  # False: a policy prunes it only when a rule asks

    def kernel(self, attribute: str) -> Kernel | None:
        return next((k for k in self.kernels if k.attribute == attribute), None)


def _axes(value: int | Sequence[int] | None) -> ChannelAxes:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    axes = tuple(value)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise InvalidArgumentTypeError(f"Channel axes must be an int, a non-empty sequence of ints, or None; got {value!r}.")
    return axes


_LAST, _TRANSPOSED, _DEPTHWISE = (-1,), (-2,), (-2, -1)
_L = keras.layers

_TABLE: dict[type, LayerLayout] = {
    _L.Dense: LayerLayout((Kernel("kernel", _LAST, 0),), foldable=True),
    _L.Conv1D: LayerLayout((Kernel("kernel", _LAST, -2),), foldable=True),
    _L.Conv2D: LayerLayout((Kernel("kernel", _LAST, -2),), foldable=True),
    _L.Conv3D: LayerLayout((Kernel("kernel", _LAST, -2),)),
    _L.Conv1DTranspose: LayerLayout((Kernel("kernel", _TRANSPOSED, -1),)),
    _L.Conv2DTranspose: LayerLayout((Kernel("kernel", _TRANSPOSED, -1),), foldable=True),
    _L.Conv3DTranspose: LayerLayout((Kernel("kernel", _TRANSPOSED, -1),)),
    _L.DepthwiseConv1D: LayerLayout((Kernel("kernel", _DEPTHWISE),), prune_by_default=False),
    _L.DepthwiseConv2D: LayerLayout((Kernel("kernel", _DEPTHWISE),), foldable=True, prune_by_default=False),
    _L.SeparableConv1D: LayerLayout((Kernel("depthwise_kernel", _DEPTHWISE), Kernel("pointwise_kernel", _LAST, -2))),
    _L.SeparableConv2D: LayerLayout((Kernel("depthwise_kernel", _DEPTHWISE), Kernel("pointwise_kernel", _LAST, -2))),
    _L.Embedding: LayerLayout((Kernel("embeddings", None),)),
    _L.EinsumDense: LayerLayout((Kernel("kernel", None),)),
    _L.LSTMCell: LayerLayout((Kernel("kernel", _LAST, 0), Kernel("recurrent_kernel", _LAST, 0))),
    _L.GRUCell: LayerLayout((Kernel("kernel", _LAST, 0), Kernel("recurrent_kernel", _LAST, 0))),
    _L.SimpleRNNCell: LayerLayout((Kernel("kernel", _LAST, 0), Kernel("recurrent_kernel", _LAST, 0))),
}


def register_layer(
    layer_class: type,
    kernels: Mapping[str, Kernel | int | Sequence[int] | None] | Sequence[Kernel],
    *,
    foldable: bool = False,
    prunable: bool = True,
    clusterable: bool = True,
    prune_by_default: bool = True,
) -> LayerLayout:
    """Add (or replace) the row of ``layer_class``; it applies to subclasses without a row of their own.

    ``kernels`` is a sequence of :class:`Kernel`, or a mapping ``attribute -> Kernel`` or
    ``attribute -> output-channel axes`` (no M:N), e.g. ``{"kernel": -1}``.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidArgumentTypeError(f"register_layer expects a keras.layers.Layer subclass, got {layer_class!r}.")
    if isinstance(kernels, Mapping):
        rows = tuple(
            replace(value, attribute=str(name)) if isinstance(value, Kernel) else Kernel(str(name), value)
            for name, value in kernels.items()
        )
    else:
        rows = tuple(kernels)
        if not all(isinstance(k, Kernel) for k in rows):
            raise InvalidArgumentTypeError(f"register_layer({layer_class.__name__}): kernels must be Kernel objects, got {rows!r}.")
    if not rows:
        raise InvalidArgumentError(f"register_layer({layer_class.__name__}): give at least one kernel attribute.")
    layout = LayerLayout(rows, foldable=foldable, prunable=prunable, clusterable=clusterable,
                         prune_by_default=prune_by_default)
    _TABLE[layer_class] = layout
    return layout


def unregister_layer(layer_class: type) -> None:
    """Remove ``layer_class``'s own row (its subclasses fall back to the next registered base)."""
    _TABLE.pop(layer_class, None)


def registered_classes() -> list[type]:
    return list(_TABLE)


def class_layout(layer_class: type) -> LayerLayout | None:
    """The row of ``layer_class``'s nearest registered base class (itself first), or None."""
    for klass in layer_class.__mro__:
        if klass in _TABLE:
            return _TABLE[klass]
    return None


def layout_of(layer: keras.layers.Layer) -> LayerLayout | None:
    """The row of ``layer``'s nearest registered base class; an RNN falls back to its cell's row (``cell.*``)."""
    layout = class_layout(type(layer))
    if layout is not None:
        return layout
    if isinstance(layer, keras.layers.RNN):
        cell = layout_of(layer.cell) if isinstance(layer.cell, keras.layers.Layer) else None
        if cell is not None:
            return replace(cell, kernels=tuple(replace(k, attribute=f"cell.{k.attribute}") for k in cell.kernels))
    return None


def resolve_attribute(layer: object, attribute: str) -> object:
    """The object at ``attribute`` (dotted path); for the last part a private ``_name`` comes first.

    Private first because the public property of some layers returns a computed tensor (LoRA,
    quantized modes) while the variable lives in ``_kernel``.
    """
    target: object = layer
    *parents, last = attribute.split(".")
    for part in parents:
        target = getattr(target, part, None)
        if target is None:
            return None
    private = getattr(target, f"_{last}", None)
    return private if isinstance(private, keras.Variable) else getattr(target, last, None)


def channel_axes_of(layer: keras.layers.Layer, attribute: str) -> ChannelAxes:
    """Output-channel axes of ``layer.<attribute>`` (the last axis when the table does not say)."""
    layout = layout_of(layer) if isinstance(layer, keras.layers.Layer) else None
    kernel = layout.kernel(attribute) if layout is not None else None
    return kernel.channel_axes if kernel is not None else _LAST


def is_foldable(layer: keras.Operation) -> bool:
    """A following BatchNormalization folds into this layer's kernel."""
    layout = layout_of(layer) if isinstance(layer, keras.layers.Layer) else None
    return layout is not None and layout.foldable


__all__ = [
    "ChannelAxes",
    "Kernel",
    "LayerLayout",
    "channel_axes_of",
    "class_layout",
    "is_foldable",
    "layout_of",
    "register_layer",
    "registered_classes",
    "resolve_attribute",
    "unregister_layer",
]
