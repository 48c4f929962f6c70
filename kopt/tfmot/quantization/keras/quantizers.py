"""``tfmot.quantization.keras.quantizers``: TFMOT's quantizer classes, run by kopt's quantizers.

TFMOT's interface: ``build(tensor_shape, name, layer) -> dict of variables`` and
``__call__(inputs, training, weights, **kwargs)``. A user subclass of :class:`Quantizer` runs
as is inside kopt's wrappers (:class:`KoptQuantizer` adapts the call convention); the three
built-in classes map to kopt's :class:`~kopt.quantization.WeightQuantizer` (as weight
quantizers) and :class:`~kopt.quantization.ActivationQuantizer` (as activation quantizers).
"""

from __future__ import annotations

from typing import Any

import keras

from kopt.core.errors import UnsupportedLayerError
from kopt.quantization import ActivationQuantizer, WeightQuantizer
from kopt.quantization import Quantizer as _KoptQuantizerBase


class Quantizer:
    """TFMOT's quantizer interface: subclass it for a custom fake-quant."""

    def build(self, tensor_shape: Any, name: str, layer: keras.layers.Layer) -> dict:
        """Create the variables the quantizer needs on ``layer``; return them by name."""
        return {}

    def __call__(self, inputs: Any, training: Any, weights: dict, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Quantizer:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


class _BuiltIn(Quantizer):
    mode = "moving_average"

    def __init__(self, num_bits: int, per_axis: bool, symmetric: bool, narrow_range: bool):
        self.num_bits = num_bits
        self.per_axis = per_axis
        self.symmetric = symmetric
        self.narrow_range = narrow_range

    def weight_quantizer(self) -> WeightQuantizer:
        """kopt's weight quantizer for this one: symmetric narrow range (the TFLite int8 weight spec)."""
        return WeightQuantizer(num_bits=self.num_bits, per_channel=bool(self.per_axis))

    def activation_quantizer(self) -> ActivationQuantizer:
        return ActivationQuantizer(num_bits=self.num_bits, mode=self.mode)

    def build(self, tensor_shape: Any, name: str, layer: keras.layers.Layer) -> dict:
        return self.activation_quantizer().build(layer, name, tuple(tensor_shape or ()))

    def __call__(self, inputs: Any, training: Any, weights: dict, **kwargs: Any) -> Any:
        return self.activation_quantizer()(inputs, weights, training=bool(training))

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits, "per_axis": self.per_axis, "symmetric": self.symmetric,
                "narrow_range": self.narrow_range}


@keras.saving.register_keras_serializable(package="kopt.tfmot")
class LastValueQuantizer(_BuiltIn):
    """Range of the latest batch (TFMOT's weight quantizer)."""

    mode = "last_value"


@keras.saving.register_keras_serializable(package="kopt.tfmot")
class MovingAverageQuantizer(_BuiltIn):
    """Exponential moving average of batch ranges (TFMOT's activation quantizer)."""

    mode = "moving_average"


@keras.saving.register_keras_serializable(package="kopt.tfmot")
class AllValuesQuantizer(_BuiltIn):
    """Extremes over every batch seen."""

    mode = "all_values"


@keras.saving.register_keras_serializable(package="kopt.tfmot")
class KoptQuantizer(_KoptQuantizerBase):
    """Runs a user's TFMOT-style :class:`Quantizer` inside kopt's wrappers (call convention only)."""

    def __init__(self, quantizer: Any):
        if isinstance(quantizer, dict):
            quantizer = keras.saving.deserialize_keras_object(quantizer)
        self.quantizer = quantizer

    def build(self, host: keras.layers.Layer, name: str, shape: tuple, weight: Any = None) -> dict:
        return dict(self.quantizer.build(shape, name, host) or {})

    def __call__(self, x: Any, state: dict, training: bool = False) -> Any:
        return self.quantizer(x, training, state)

    def get_config(self) -> dict:
        return {"quantizer": keras.saving.serialize_keras_object(self.quantizer)}


def to_kopt_weight_quantizer(quantizer: Any, where: str) -> _KoptQuantizerBase:
    """kopt's quantizer for a weight, from what a TFMOT ``QuantizeConfig`` returned."""
    if isinstance(quantizer, _BuiltIn):
        return quantizer.weight_quantizer()
    if isinstance(quantizer, _KoptQuantizerBase):
        return quantizer
    if isinstance(quantizer, Quantizer) or (callable(quantizer) and hasattr(quantizer, "build")):
        return KoptQuantizer(quantizer)
    raise UnsupportedLayerError(
        f"{where}: expected a tfmot.quantization.keras.quantizers.Quantizer, got {quantizer!r}."
    )
