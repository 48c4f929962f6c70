"""Which weights of a layer can be clustered, and along which axes its output channels lie.

Built-in Keras layers are described by the layer-layout table (:mod:`kopt.core.layers`:
weight attribute -> channel axes). Other layers opt in either by registration
(:func:`kopt.register_layer`, or :func:`register_clusterable` which registers a row that only
clustering uses; no change to their code) or through the :class:`ClusterableLayer` protocol:
a method ``get_clusterable_weights()`` returning ``(name, variable)`` or
``(name, variable, channel_axes)`` tuples.

Channel axes say which axes of the weight index the *output* channel, the unit of
per-channel clustering (and of per-channel int8 quantization later): the last axis of a
Dense / Conv kernel, the last but one of a transposed-conv kernel, the last two of a
depthwise kernel (input channel x depth multiplier). ``None`` means the weight has no
channel axis and is always clustered per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import keras

from kopt.core.errors import InvalidArgumentError, NotClusterableError
from kopt.core.layers import (
    ChannelAxes,
    Kernel,
    class_layout,
    layout_of,
    register_layer,
    registered_classes,
    resolve_attribute,
)


@dataclass(frozen=True)
class ClusterableWeight:
    """One weight to cluster: ``name`` (attribute path, e.g. ``"cell.kernel"``), the variable,
    and the channel axes (``None``: per tensor only)."""

    name: str
    variable: keras.Variable
    channel_axes: ChannelAxes


@runtime_checkable
class ClusterableLayer(Protocol):
    """A custom layer that says which of its weights can be clustered."""

    def get_clusterable_weights(self) -> Sequence[tuple]:
        """``(name, variable)`` or ``(name, variable, channel_axes)`` tuples."""
        ...


def register_clusterable(layer_class: type, weights: Mapping[str, int | Sequence[int] | None]) -> None:
    """Declare ``layer_class`` clusterable: ``weights`` maps attribute paths (``"kernel"``,
    ``"cell.kernel"``) to their output-channel axes (``None``: per tensor only).

    A row of the layer-layout table that clustering uses (not pruning; see
    :func:`kopt.register_layer` for all techniques at once). Applies to subclasses too, unless
    they are registered themselves.
    """
    if not weights:
        raise InvalidArgumentError(f"register_clusterable({getattr(layer_class, '__name__', layer_class)}): give at least one "
                         "weight attribute.")
    base = class_layout(layer_class) if isinstance(layer_class, type) else None
    kernels = [
        Kernel(str(name), axes, base.kernel(str(name)).input_axis if base and base.kernel(str(name)) else None)
        for name, axes in weights.items()
    ]
    if base is None:
        register_layer(layer_class, kernels, prunable=False)
    else:  # e.g. a Dense subclass: pruned and folded as its base, clustered as registered here
        register_layer(layer_class, kernels, foldable=base.foldable, prunable=base.prunable,
                       prune_by_default=base.prune_by_default)


def registered_weights(layer: keras.layers.Layer) -> dict[str, ChannelAxes] | None:
    """The table's clusterable weights of ``layer`` (nearest registered base class), or None."""
    layout = layout_of(layer)
    if layout is None or not layout.clusterable:
        return None
    return {k.attribute: k.channel_axes for k in layout.kernels}


def is_clusterable(layer: keras.layers.Layer) -> bool:
    """Whether kopt can cluster ``layer`` (registered class or protocol; not a kopt wrapper)."""
    from kopt.technique.wrapper import KoptWrapper

    if isinstance(layer, KoptWrapper) or not isinstance(layer, keras.layers.Layer):
        return False
    return hasattr(layer, "get_clusterable_weights") or registered_weights(layer) is not None


def clusterable_weights(layer: keras.layers.Layer) -> list[ClusterableWeight]:
    """The built ``layer``'s weights to cluster; raises :class:`NotClusterableError` if none.

    Only float ``keras.Variable`` s qualify (an int8 kernel left by ``model.quantize`` or a
    LoRA-adjusted kernel property is refused with a message).
    """
    if hasattr(layer, "get_clusterable_weights"):
        entries = []
        for item in layer.get_clusterable_weights():
            if len(item) == 2:
                name, variable = item
                axes: ChannelAxes = (-1,)
            elif len(item) == 3:
                name, variable, axes = item
            else:
                raise NotClusterableError(
                    f"{type(layer).__name__}.get_clusterable_weights() of layer {layer.name!r} must return "
                    f"(name, variable) or (name, variable, channel_axes) tuples, got {item!r}."
                )
            entries.append((str(name), variable, Kernel(str(name), axes).channel_axes))
    else:
        if getattr(layer, "lora_enabled", False):
            raise NotClusterableError(
                f"Layer {layer.name!r} has LoRA enabled: its kernel is a sum with the low-rank update. "
                "Cluster before enabling LoRA."
            )
        spec = registered_weights(layer)
        if spec is None:
            raise NotClusterableError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is not clusterable. Clusterable by default: "
                f"{', '.join(sorted(k.__name__ for k in registered_classes()))}. Make a custom layer clusterable with "
                "`kopt.register_layer(LayerClass, {'kernel': -1})` (all techniques) or "
                "`kopt.clustering.register_clusterable(LayerClass, {'kernel': -1})`, or by giving it a "
                "`get_clusterable_weights()` method."
            )
        entries = [(name, resolve_attribute(layer, name), axes) for name, axes in spec.items()]

    weights = []
    for name, variable, axes in entries:
        if not isinstance(variable, keras.Variable):
            raise NotClusterableError(
                f"Layer {layer.name!r}: clusterable weight {name!r} is {type(variable).__name__}, not a keras.Variable "
                "(is the layer built? LoRA enabled?)."
            )
        if not keras.backend.is_float_dtype(variable.dtype):
            raise NotClusterableError(
                f"Layer {layer.name!r}: weight {name!r} has dtype {variable.dtype}; only float weights can be "
                "clustered (cluster before quantizing)."
            )
        if axes is not None:
            rank = len(variable.shape)
            bad = [a for a in axes if not -rank <= a < rank]
            if bad:
                raise NotClusterableError(
                    f"Layer {layer.name!r}: channel axes {axes} of weight {name!r} are out of range for its shape "
                    f"{tuple(variable.shape)}."
                )
        weights.append(ClusterableWeight(name, variable, axes))
    if not weights:
        raise NotClusterableError(f"Layer {layer.name!r} declares no clusterable weights.")
    return weights
