"""QuantizeConfig: *what* to quantize in one layer (which weights, what its output needs).

The *how* is a :class:`~kopt.quantization.quantizers.Quantizer`; the *for which target*
is a :class:`~kopt.quantization.schemes.Scheme`. A config says, for a layer:

``weights``
    attribute name of a weight variable -> the quantizer to apply to it (biases are
    never listed: the converter derives the int32 bias from the input and weight scales);
``output``
    how the layer's output tensor gets its int8 parameters in TFLite, one of

    * ``"range"``: its own range, tracked by an activation fake-quant placed after it
      (Conv, Dense, Add, Multiply, Mean, ...);
    * ``"passthrough"``: the input's parameters, no fake-quant (pooling, reshape, pad,
      resize, dropout: TFLite keeps the input scale on the output);
    * ``"shared"``: all inputs and the output share one range (Concatenate, Maximum,
      Minimum: TFLite requires equal scales);
    * ``"fixed"``: TFLite imposes the output parameters (softmax, sigmoid, tanh), so no
      fake-quant may follow;
    * ``"none"``: the output is not a float activation (shapes, indices).
``fuses_activation``
    TFLite fuses a following ReLU / ReLU6 into this op, so the pair is quantized once,
    after the activation (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL).
"""

from __future__ import annotations

from typing import Any, Mapping

import keras

from kopt.quantization.quantizers import Quantizer, deserialize, serialize

OUTPUT_RULES = ("range", "passthrough", "shared", "fixed", "none")


@keras.saving.register_keras_serializable(package="kopt")
class QuantizeConfig:
    """What to quantize in one layer. See the module docstring for the fields.

    Example, for a custom layer holding a ``kernel`` and producing a new activation::

        QuantizeConfig(weights={"kernel": WeightQuantizer(per_channel=True)}, output="range")
    """

    def __init__(
        self,
        weights: Mapping[str, Quantizer] | None = None,
        output: str = "range",
        fuses_activation: bool = False,
    ):
        if output not in OUTPUT_RULES:
            raise ValueError(f"QuantizeConfig output must be one of {OUTPUT_RULES}, got {output!r}.")
        weights = dict(weights or {})
        for name, quantizer in weights.items():
            quantizer = deserialize(quantizer)
            if not isinstance(name, str) or not isinstance(quantizer, Quantizer):
                raise TypeError(
                    f"QuantizeConfig weights must map attribute names to Quantizer objects, got {name!r}: {quantizer!r}."
                )
            weights[name] = quantizer
        self.weights: dict[str, Quantizer] = weights
        self.output = output
        self.fuses_activation = bool(fuses_activation)

    def for_layer(self, layer: keras.Operation) -> "QuantizeConfig":
        """The config to use for ``layer``. This one serves every layer; a subclass whose
        contents depend on the layer (an adapter reading a layer's variables) overrides it.
        ``quantize_apply`` calls it on each annotation config before use."""
        return self

    def replace(self, **changes: Any) -> "QuantizeConfig":
        """A copy with some fields changed (``config.replace(output="passthrough")``)."""
        fields = {"weights": dict(self.weights), "output": self.output, "fuses_activation": self.fuses_activation}
        fields.update(changes)
        return QuantizeConfig(**fields)

    def get_config(self) -> dict[str, Any]:
        return {
            "weights": {name: serialize(q) for name, q in self.weights.items()},
            "output": self.output,
            "fuses_activation": self.fuses_activation,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "QuantizeConfig":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantizeConfig) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"QuantizeConfig(weights={self.weights!r}, output={self.output!r}, fuses_activation={self.fuses_activation})"
