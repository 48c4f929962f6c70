"""Which weights of a layer can be clustered, and along which axes its output channels lie.

Built-in Keras layers are described by a registry (class -> weight attribute -> channel
axes). Other layers opt in either by registration (:func:`register_clusterable`, no change
to their code) or through the :class:`ClusterableLayer` protocol: a method
``get_clusterable_weights()`` returning ``(name, variable)`` or
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

from kopt.clustering.errors import NotClusterableError

ChannelAxes = tuple[int, ...] | None


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


def _axes(value: int | Sequence[int] | None) -> ChannelAxes:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


_LAST = (-1,)
_TRANSPOSED = (-2,)
_DEPTHWISE = (-2, -1)
_RNN = {"cell.kernel": _LAST, "cell.recurrent_kernel": _LAST}

_REGISTRY: dict[type, dict[str, ChannelAxes]] = {
    keras.layers.Dense: {"kernel": _LAST},
    keras.layers.Conv1D: {"kernel": _LAST},
    keras.layers.Conv2D: {"kernel": _LAST},
    keras.layers.Conv3D: {"kernel": _LAST},
    keras.layers.Conv1DTranspose: {"kernel": _TRANSPOSED},
    keras.layers.Conv2DTranspose: {"kernel": _TRANSPOSED},
    keras.layers.Conv3DTranspose: {"kernel": _TRANSPOSED},
    keras.layers.DepthwiseConv1D: {"kernel": _DEPTHWISE},
    keras.layers.DepthwiseConv2D: {"kernel": _DEPTHWISE},
    keras.layers.SeparableConv1D: {"depthwise_kernel": _DEPTHWISE, "pointwise_kernel": _LAST},
    keras.layers.SeparableConv2D: {"depthwise_kernel": _DEPTHWISE, "pointwise_kernel": _LAST},
    keras.layers.Embedding: {"embeddings": None},
    keras.layers.LSTM: dict(_RNN),
    keras.layers.GRU: dict(_RNN),
    keras.layers.SimpleRNN: dict(_RNN),
}


def register_clusterable(layer_class: type, weights: Mapping[str, int | Sequence[int] | None]) -> None:
    """Declare ``layer_class`` clusterable: ``weights`` maps attribute paths (``"kernel"``,
    ``"cell.kernel"``) to their output-channel axes (``None``: per tensor only).

    Registration applies to subclasses too, unless they are registered themselves.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_clusterable expects a keras.layers.Layer subclass, got {layer_class!r}.")
    if not weights:
        raise ValueError(f"register_clusterable({layer_class.__name__}): give at least one weight attribute.")
    _REGISTRY[layer_class] = {str(name): _axes(axes) for name, axes in weights.items()}


def registered_weights(layer: keras.layers.Layer) -> dict[str, ChannelAxes] | None:
    """The registry entry for ``layer``'s class (nearest registered base class), or None."""
    for klass in type(layer).__mro__:
        if klass in _REGISTRY:
            return _REGISTRY[klass]
    return None


def is_clusterable(layer: keras.layers.Layer) -> bool:
    """Whether kopt can cluster ``layer`` (registered class or protocol; not a kopt wrapper)."""
    from kopt.wrapper import KoptWrapper

    if isinstance(layer, KoptWrapper) or not isinstance(layer, keras.layers.Layer):
        return False
    return hasattr(layer, "get_clusterable_weights") or registered_weights(layer) is not None


def _resolve(layer: keras.layers.Layer, path: str) -> object:
    target: object = layer
    for part in path.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


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
                axes: ChannelAxes = _LAST
            elif len(item) == 3:
                name, variable, axes = item
            else:
                raise NotClusterableError(
                    f"{type(layer).__name__}.get_clusterable_weights() of layer {layer.name!r} must return "
                    f"(name, variable) or (name, variable, channel_axes) tuples, got {item!r}."
                )
            entries.append((str(name), variable, _axes(axes)))
    else:
        spec = registered_weights(layer)
        if spec is None:
            raise NotClusterableError(
                f"Layer {layer.name!r} ({type(layer).__name__}) is not clusterable. Clusterable by default: "
                f"{', '.join(sorted(k.__name__ for k in _REGISTRY))}. Make a custom layer clusterable with "
                "`kopt.clustering.register_clusterable(LayerClass, {'kernel': -1})` or by giving it a "
                "`get_clusterable_weights()` method."
            )
        entries = [(name, _resolve(layer, name), axes) for name, axes in spec.items()]

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
