"""What the ``kopt.tfmot`` modules share: TFMOT's input checks and a no-op deserialization scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from kopt.core.errors import InvalidArgumentError


def model_kind(value: Any, api: str) -> str:
    """``"model"``, ``"layer"`` or ``"list"``; raises what TFMOT raises (a ValueError) otherwise."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, keras.Sequential) or (isinstance(value, keras.Model) and _is_functional(value)):
        if not value.built or not value.inputs:
            raise InvalidArgumentError(
                f"{api}: model {value.name!r} is not built; give it an input shape (keras.Input or "
                "input_shape= on its first layer) or call it on data first."
            )
        return "model"
    if isinstance(value, keras.Model):
        raise InvalidArgumentError(
            f"{api}: subclassed model {type(value).__name__} is not supported (as in TFMOT); rebuild it as a "
            "Sequential or Functional model."
        )
    if isinstance(value, keras.layers.Layer):
        return "layer"
    raise InvalidArgumentError(
        f"{api} can only take a keras Sequential or Functional model, a keras.layers.Layer or a list of "
        f"layers; you passed an object of type {type(value).__name__}."
    )


def _is_functional(model: keras.Model) -> bool:
    from kopt.core.keras_compat import Functional

    return isinstance(model, Functional)


def check_no_kwargs(kwargs: dict, api: str, known: tuple[str, ...] = ()) -> None:
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise InvalidArgumentError(
            f"{api} got unexpected keyword argument(s) {unknown}; kopt.tfmot takes TFMOT's named arguments only "
            "(see docs/migrating-from-tfmot.md)."
        )


def scope(*args: dict) -> keras.saving.CustomObjectScope:
    """A custom-object scope holding the user's objects (kopt's own layers load without one)."""
    objects: dict[str, Any] = {}
    for mapping in args:
        if not isinstance(mapping, dict):
            raise InvalidArgumentError(f"A scope takes dicts of name -> object, got {type(mapping).__name__}.")
        objects.update(mapping)
    return keras.saving.CustomObjectScope(objects)


def map_list(layers: list, fn: Callable[[keras.layers.Layer], Any]) -> list:
    return [fn(layer) for layer in layers]


def keep_input_shape(wrapper: keras.layers.Layer, layer: keras.layers.Layer) -> keras.layers.Layer:
    """Let ``keras.Sequential([wrap(Dense(20, input_shape=(20,))), ...])`` build, as TFMOT's guides write it:
    Keras 3's Sequential reads the first layer's ``input_shape`` argument, which the wrapper must carry."""
    shape = getattr(layer, "_input_shape_arg", None)
    if wrapper is not layer and shape is not None and getattr(wrapper, "_input_shape_arg", None) is None:
        wrapper._input_shape_arg = shape
    return wrapper


def strip_wrappers(to_strip: Any, wrapper: type, api: str, error: type[Exception]) -> Any:
    """TFMOT's ``strip_pruning`` / ``strip_clustering``: unwrap only ``wrapper`` layers; a Sequential stays one."""
    from kopt.graph import map_layers
    from kopt.graph.model_type import like_input

    if isinstance(to_strip, wrapper):
        return to_strip.strip()
    if isinstance(to_strip, keras.Model):
        model_kind(to_strip, api)
        stripped = map_layers(to_strip, lambda layer: layer.strip() if isinstance(layer, wrapper) else None)
        return like_input(to_strip, stripped, api)
    if isinstance(to_strip, keras.layers.Layer):
        return to_strip
    raise error(f"{api} expects a keras Model or Layer, got an object of type {type(to_strip).__name__}.")

