"""Which weights of which layers kopt prunes, and how custom layers opt in.

Built-in rules (kernels only; biases, normalization parameters and recurrent biases are never
pruned):

=========================================  ============================  ===========================
layer                                      pruned weights                M:N input-channel axis
=========================================  ============================  ===========================
Dense                                      kernel ``(in, out)``          0
Conv1D / Conv2D / Conv3D                   kernel ``(*k, in, out)``      -2
Conv1D/2D/3DTranspose                      kernel ``(*k, out, in)``      -1
DepthwiseConv1D / DepthwiseConv2D          depthwise kernel              none (no reduction axis)
SeparableConv1D / SeparableConv2D          depthwise and pointwise       none / -2
Embedding                                  embeddings ``(vocab, dim)``   none (a lookup table)
LSTM / GRU / SimpleRNN (and ``RNN`` of     ``cell.kernel``,              0, 0
their cells)                               ``cell.recurrent_kernel``
Bidirectional, TimeDistributed             the wrapped layers' weights   as above
=========================================  ============================  ===========================

The M:N axis is the input-channel axis *in Keras layout* of the axis TFLite stores innermost
(FULLY_CONNECTED ``[out, in]``, CONV_2D and TRANSPOSE_CONV ``OHWI``), so M:N groups are
consecutive in the deployed buffer.

Custom layers opt in by defining ``get_prunable_weights()`` (see :class:`PrunableLayer`); it
takes precedence over the built-in rules. Anything else is left alone and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras

from kopt.errors import UnsupportedLayerError
from kopt.sparsity.masks import m_by_n_incompatibility


@dataclass(frozen=True)
class PrunableWeight:
    """One weight to prune: the variable, a readable name, and its M:N input-channel axis."""

    variable: keras.Variable
    name: str
    input_axis: int | None


class PrunableLayer:
    """Mixin for custom layers that want to be pruned.

    Implement :meth:`get_prunable_weights`; ``prune_low_magnitude`` then wraps the layer like
    a built-in one. Subclassing this mixin is optional: any layer with a
    ``get_prunable_weights`` method is recognised.
    """

    def get_prunable_weights(self) -> Sequence[keras.Variable | tuple[keras.Variable, int | None]]:
        """The variables to prune, after ``build``.

        Each item is a variable, or ``(variable, input_axis)`` where ``input_axis`` is the
        input-channel axis M:N groups run along (``None``: the weight cannot take M:N).
        A bare variable means ``input_axis=None``.
        """
        raise NotImplementedError


class NotPrunable(Exception):
    """Internal: raised by :func:`prunable_weights` with the reason a layer is left alone."""


# Layers never pruned on purpose, with the reason reported to the user.
_NEVER_PRUNED: tuple[tuple[type, str], ...] = (
    (
        keras.layers.BatchNormalization,
        "normalization parameters are never pruned (BatchNormalization folds into the conv)",
    ),
    (keras.layers.LayerNormalization, "normalization parameters are never pruned"),
    (keras.layers.GroupNormalization, "normalization parameters are never pruned"),
    (keras.layers.RMSNormalization, "normalization parameters are never pruned"),
    (keras.layers.Normalization, "preprocessing statistics are never pruned"),
    (keras.layers.PReLU, "activation parameters are never pruned"),
)

# (layer class, [(attribute names to try in order, M:N input axis)]). The first attribute
# naming a ``keras.Variable`` is used: private names come first because the public
# property of some layers returns a computed tensor (LoRA, quantized modes).
_RULES: tuple[tuple[type, tuple[tuple[tuple[str, ...], int | None], ...]], ...] = (
    (keras.layers.Dense, ((("_kernel", "kernel"), 0),)),
    (keras.layers.Conv1D, ((("_kernel", "kernel"), -2),)),
    (keras.layers.Conv2D, ((("_kernel", "kernel"), -2),)),
    (keras.layers.Conv3D, ((("_kernel", "kernel"), -2),)),
    (keras.layers.Conv1DTranspose, ((("_kernel", "kernel"), -1),)),
    (keras.layers.Conv2DTranspose, ((("_kernel", "kernel"), -1),)),
    (keras.layers.Conv3DTranspose, ((("_kernel", "kernel"), -1),)),
    (keras.layers.DepthwiseConv1D, ((("_kernel", "kernel"), None),)),
    (keras.layers.DepthwiseConv2D, ((("_kernel", "kernel"), None),)),
    (keras.layers.SeparableConv1D, ((("depthwise_kernel",), None), (("pointwise_kernel",), -2))),
    (keras.layers.SeparableConv2D, ((("depthwise_kernel",), None), (("pointwise_kernel",), -2))),
    (keras.layers.Embedding, ((("_embeddings", "embeddings"), None),)),
)

_RNN_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)


def _variable(layer: keras.layers.Layer, names: Sequence[str]) -> tuple[str, keras.Variable]:
    for name in names:
        value = getattr(layer, name, None)
        if isinstance(value, keras.Variable):
            return name.lstrip("_"), value
    raise NotPrunable(
        f"its {names[-1]!r} is not a plain variable (a LoRA-enabled or quantized layer?); "
        "prune before enabling LoRA or quantizing"
    )


def _from_protocol(layer: keras.layers.Layer) -> list[PrunableWeight]:
    """Read ``get_prunable_weights()``; a malformed answer is the layer author's bug, so it raises."""

    def bad(message: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(
            f"Layer {layer.name!r} ({type(layer).__name__}): get_prunable_weights() {message}."
        )

    owned = {id(v) for v in layer.weights}
    result = []
    for index, item in enumerate(layer.get_prunable_weights()):
        variable, axis = item if isinstance(item, tuple) else (item, None)
        if not isinstance(variable, keras.Variable):
            raise bad(f"item {index} is a {type(variable).__name__}, not a keras.Variable")
        if id(variable) not in owned:
            raise bad(f"returned {variable.path!r}, which is not a weight of the layer")
        if axis is not None:
            rank = len(variable.shape)
            if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
                shape = tuple(variable.shape)
                raise bad(f"gave input axis {axis!r} for {variable.path!r}, out of range for shape {shape}")
        result.append(PrunableWeight(variable, variable.name, axis))
    return result


def prunable_weights(layer: keras.layers.Layer) -> list[PrunableWeight]:
    """The weights kopt prunes in a built ``layer``; raises :class:`NotPrunable` with the reason otherwise."""
    if hasattr(layer, "get_prunable_weights"):
        return _from_protocol(layer)
    if getattr(layer, "lora_enabled", False):
        raise NotPrunable("LoRA is enabled: its kernel is a sum with the low-rank update; prune before enabling LoRA")
    if getattr(layer, "quantization_mode", None):
        raise NotPrunable(f"it is already quantized ({layer.quantization_mode}); prune before quantizing")
    if isinstance(layer, keras.layers.Bidirectional):
        return _prefixed("forward_layer", layer.forward_layer) + _prefixed("backward_layer", layer.backward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return _prefixed("layer", layer.layer)
    if isinstance(layer, keras.layers.RNN):
        cell = layer.cell
        if not isinstance(cell, _RNN_CELLS):
            raise NotPrunable(f"its cell type {type(cell).__name__} is not one kopt knows how to prune")
        return [
            PrunableWeight(_variable(cell, (attr,))[1], f"cell.{attr}", 0) for attr in ("kernel", "recurrent_kernel")
        ]
    for cls, weights in _RULES:
        if isinstance(layer, cls):
            result = []
            for names, axis in weights:
                name, variable = _variable(layer, names)
                result.append(PrunableWeight(variable, name, axis))
            return result
    for cls, reason in _NEVER_PRUNED:
        if isinstance(layer, cls):
            raise NotPrunable(reason)
    if not layer.weights:
        raise NotPrunable("it has no weights")
    raise NotPrunable(
        f"kopt does not know which weights of a {type(layer).__name__} to prune; give the layer a "
        "`get_prunable_weights()` method (see kopt.sparsity.PrunableLayer) to opt in"
    )


def _prefixed(prefix: str, inner: keras.layers.Layer) -> list[PrunableWeight]:
    return [PrunableWeight(w.variable, f"{prefix}.{w.name}", w.input_axis) for w in prunable_weights(inner)]


def is_unknown_with_weights(layer: keras.layers.Layer) -> bool:
    """True for a layer holding weights that no rule covers (worth a warning, not just a report line)."""
    if hasattr(layer, "get_prunable_weights") or not layer.weights:
        return False
    try:
        prunable_weights(layer)
        return False
    except NotPrunable:
        return not any(isinstance(layer, cls) for cls, _ in _NEVER_PRUNED)


@dataclass(frozen=True)
class LayerPlan:
    """What pruning a layer would do: weights to prune, and weights left alone with the reason."""

    prune: list[PrunableWeight]
    skipped: dict[str, str]


def plan_layer(
    layer: keras.layers.Layer, m_by_n: Sequence[int] | None = None, block_size: Sequence[int] = (1, 1)
) -> LayerPlan:
    """Split a built layer's prunable weights into those that can take the requested pattern and the rest.

    Raises :class:`NotPrunable` when the layer has nothing to prune under that pattern.
    """
    weights = prunable_weights(layer)
    if not weights:
        raise NotPrunable("its get_prunable_weights() names no weights")
    prune, skipped = [], {}
    for weight in weights:
        shape = tuple(weight.variable.shape)
        if m_by_n:
            reason = m_by_n_incompatibility(shape, weight.input_axis, m_by_n)
            reason = reason and f"M:N {tuple(m_by_n)} not applicable: {reason}"
        elif tuple(block_size) != (1, 1) and len(shape) < 2:
            reason = f"block_size {tuple(block_size)} needs a weight of rank >= 2, its shape is {shape}"
        else:
            reason = None
        if reason:
            skipped[weight.name] = reason
        else:
            prune.append(weight)
    if not prune:
        raise NotPrunable("; ".join(f"{name}: {reason}" for name, reason in skipped.items()))
    return LayerPlan(prune, skipped)
