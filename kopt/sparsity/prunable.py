"""Which weights of which layers kopt prunes, and how custom layers opt in.

The kernels and their M:N input-channel axes come from the layer-layout table
(:mod:`kopt.core.layers`): biases, normalization parameters and recurrent biases are never
pruned. ``Bidirectional`` and ``TimeDistributed`` prune the weights of the layers they wrap.

Custom layers opt in with a row in that table (``kopt.register_layer``) or by defining
``get_prunable_weights()`` (see :class:`PrunableLayer`), which takes precedence over the
table. Anything else is left alone and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras

from kopt.core.errors import UnsupportedLayerError
from kopt.core.layers import layout_of, resolve_attribute
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

def _variable(layer: keras.layers.Layer, attribute: str) -> keras.Variable:
    variable = resolve_attribute(layer, attribute)
    if isinstance(variable, keras.Variable):
        return variable
    raise NotPrunable(
        f"its {attribute!r} is not a plain variable (a LoRA-enabled or quantized layer?); "
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
    layout = layout_of(layer)
    if layout is not None and layout.prunable:
        return [PrunableWeight(_variable(layer, k.attribute), k.attribute, k.input_axis) for k in layout.kernels]
    if isinstance(layer, keras.layers.RNN):
        raise NotPrunable(f"its cell type {type(layer.cell).__name__} is not one kopt knows how to prune")
    for cls, reason in _NEVER_PRUNED:
        if isinstance(layer, cls):
            raise NotPrunable(reason)
    if not layer.weights:
        raise NotPrunable("it has no weights")
    raise NotPrunable(
        f"kopt does not know which weights of a {type(layer).__name__} to prune; give the layer a "
        "`get_prunable_weights()` method (see kopt.sparsity.PrunableLayer) or register it with "
        "`kopt.register_layer(LayerClass, {'kernel': kopt.Kernel('kernel', channel_axes=-1, input_axis=0)})` to opt in"
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
