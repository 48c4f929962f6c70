"""TFMOT's method-based ``QuantizeConfig``, turned into kopt's declarative one per layer.

TFMOT asks a config for ``(variable, quantizer)`` pairs and lets it swap the quantized
tensors into the layer (``set_quantize_weights``). kopt swaps weights itself, by attribute
name, so :class:`TfmotConfig` (what ``quantize_annotate_layer`` stores) reads the pairs once
the layer is built, finds each variable's attribute and builds a
:class:`kopt.quantization.QuantizeConfig`; ``set_quantize_*`` are never called.
"""

from __future__ import annotations

import abc
from typing import Any

import keras

from kopt.core.errors import UnsupportedLayerError
from kopt.quantization import QuantizeConfig as KoptQuantizeConfig
from kopt.tfmot.quantization.keras.quantizers import to_kopt_weight_quantizer


class QuantizeConfig(abc.ABC):
    """TFMOT's interface: which weights and activations of a layer to quantize, and how."""

    @abc.abstractmethod
    def get_weights_and_quantizers(self, layer: keras.layers.Layer) -> list:
        """``[(weight variable, quantizer), ...]``."""

    @abc.abstractmethod
    def get_activations_and_quantizers(self, layer: keras.layers.Layer) -> list:
        """``[(activation function, quantizer), ...]``."""

    @abc.abstractmethod
    def set_quantize_weights(self, layer: keras.layers.Layer, quantize_weights: list) -> None:
        """TFMOT swaps quantized weights in here; kopt does it itself and never calls this."""

    @abc.abstractmethod
    def set_quantize_activations(self, layer: keras.layers.Layer, quantize_activations: list) -> None:
        """TFMOT swaps quantized activations in here; kopt never calls this."""

    @abc.abstractmethod
    def get_output_quantizers(self, layer: keras.layers.Layer) -> list:
        """Quantizers for the layer's outputs."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """Serializable constructor arguments."""


def attribute_of(layer: keras.layers.Layer, variable: Any) -> str:
    """The attribute name under which ``layer`` holds ``variable`` (public name preferred)."""
    for name, value in vars(layer).items():
        if value is variable:
            public = name.lstrip("_")
            return public if getattr(layer, public, None) is variable else name
    raise UnsupportedLayerError(
        f"Layer {layer.name!r} ({type(layer).__name__}): its QuantizeConfig returned weight "
        f"{getattr(variable, 'path', variable)!r}, which is not an attribute of the layer; kopt quantizes weights "
        "the layer holds as attributes (e.g. self.kernel)."
    )


@keras.saving.register_keras_serializable(package="kopt.tfmot")
class TfmotConfig(KoptQuantizeConfig):
    """A user's TFMOT ``QuantizeConfig`` carried by a kopt annotation until the layer is known."""

    def __init__(self, tfmot_config: Any, **kwargs: Any):
        super().__init__()
        if isinstance(tfmot_config, dict):
            tfmot_config = keras.saving.deserialize_keras_object(tfmot_config)
        for method in ("get_weights_and_quantizers", "get_activations_and_quantizers", "get_output_quantizers"):
            if not callable(getattr(tfmot_config, method, None)):
                raise UnsupportedLayerError(
                    f"quantize_config {tfmot_config!r} has no {method}() method; subclass "
                    "tfmot.quantization.keras.QuantizeConfig."
                )
        self.tfmot_config = tfmot_config

    def for_layer(self, layer: keras.Operation) -> KoptQuantizeConfig:
        where = f"Layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__})"
        weights = {}
        for variable, quantizer in self.tfmot_config.get_weights_and_quantizers(layer):
            weights[attribute_of(layer, variable)] = to_kopt_weight_quantizer(quantizer, where)
        quantized_output = bool(self.tfmot_config.get_activations_and_quantizers(layer)) or bool(
            self.tfmot_config.get_output_quantizers(layer)
        )
        return KoptQuantizeConfig(weights=weights, output="range" if quantized_output else "passthrough")

    def get_config(self) -> dict[str, Any]:
        return {"tfmot_config": keras.saving.serialize_keras_object(self.tfmot_config)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TfmotConfig) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"TfmotConfig({self.tfmot_config!r})"
