"""Recurrent layers are lowered unrolled: TF 2.21's int8 calibration crashes on a rolled Keras RNN.

A Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` with ``unroll=False`` (the default) exports its time
loop as a TensorFlow ``While`` loop. Converting that graph to full int8 with representative data
kills the whole Python process with a segmentation fault inside the TFLite converter (measured
with TF 2.21 for LSTM and GRU: exit code 139, no Python exception). The same layer with
``unroll=True`` exports one cell per time step (matmuls, sigmoid, tanh, add, mul) and converts to
a fully int8 model that LiteRT runs. Unrolling needs a fixed sequence length; a layer without one
is refused with an error before the converter starts.
"""

from __future__ import annotations

import keras

from kopt.core.errors import UnsupportedLayerError

RECURRENT = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)


def _rolled(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, RECURRENT):
        return not layer.unroll
    if isinstance(layer, keras.layers.Bidirectional):
        return _rolled(layer.forward_layer) or _rolled(layer.backward_layer)
    return False


def rolled_recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers anywhere in the model (nested ones too) that run an LSTM / GRU / SimpleRNN as a time loop."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True) if _rolled(layer)]


def _timesteps(layer: keras.layers.Layer) -> int | None:
    shape = (layer.get_build_config() or {}).get("input_shape")
    if not shape or isinstance(shape[0], (list, tuple)):
        return None
    return shape[1] if len(shape) >= 3 else None


def _unrolled_config(config: dict) -> dict:
    config = dict(config)
    if "unroll" in config:
        config["unroll"] = True
    for key in ("layer", "backward_layer"):  # Bidirectional: the wrapped layers' configs
        if isinstance(config.get(key), dict) and isinstance(config[key].get("config"), dict):
            config[key] = {**config[key], "config": _unrolled_config(config[key]["config"])}
    return config


def unrolled_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of a recurrent layer (or Bidirectional) with ``unroll=True`` and the same weights."""
    if _timesteps(layer) is None:
        raise UnsupportedLayerError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no fixed number of time steps. TF 2.21's converter "
            "crashes (segmentation fault) calibrating a rolled Keras RNN to int8, so kopt lowers recurrent layers "
            "unrolled, which needs the sequence length: build the model with keras.Input((timesteps, features))."
        )
    copy = layer.__class__.from_config(_unrolled_config(layer.get_config()))
    copy.build_from_config(layer.get_build_config())
    copy.set_weights(layer.get_weights())
    return copy


def unroll_recurrent_layers(model: keras.Model) -> keras.Model:
    """``model`` itself when it has no rolled RNN, else a model calling unrolled copies (other layers shared).

    Only layers of the model's graph are replaced; a recurrent layer inside a custom composite layer
    stays rolled (:func:`rolled_recurrent_layers` still lists it).
    """
    if not rolled_recurrent_layers(model):
        return model
    from kopt.graph import map_layers

    return map_layers(model, lambda layer: unrolled_copy(layer) if _rolled(layer) else None, clone=False)
