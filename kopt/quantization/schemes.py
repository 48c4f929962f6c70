"""Schemes: *for which target* — a registry of layer configs + graph transforms + quantizer choices.

``"default_8bit"`` mirrors the TFLite int8 spec. Collaborative optimization adds schemes
without touching the rest: a scheme can swap the weight quantizer of every config
through ``weight_quantizer`` (e.g. wrap it in a sparsity- or cluster-preserving one),
change the activation quantizer, or add transforms. Register a new scheme under a name
with :func:`register_scheme`; :func:`get_scheme` resolves names for ``quantize_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Union

import keras

from kopt.core.errors import InvalidArgumentError
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.hard_activations import decompose_hard_activations
from kopt.quantization.quantizers import ActivationQuantizer, Quantizer
from kopt.quantization.registry import USER_REGISTRY, QuantizeRegistry, default_8bit_registry, is_fusable_activation
from kopt.quantization.transforms import DEFAULT_TRANSFORMS, Transform

#: ``(layer, weight attribute, quantizer the config chose) -> quantizer to use``.
WeightQuantizerHook = Callable[[keras.Operation, str, Quantizer], Quantizer]


@dataclass(frozen=True)
class Scheme:
    """Everything that makes quantization target-specific.

    Attributes:
        name: what reports and errors call it.
        registry: layer class -> QuantizeConfig table (user registrations take precedence).
        transforms: graph rewrites run before wrapping, in order.
        activation_quantizer: template of every activation fake-quant.
        weight_quantizer: optional hook replacing the weight quantizer each config picks.
        is_fusable_activation: which activations TFLite fuses into their producer.
    """

    name: str
    registry: QuantizeRegistry
    transforms: tuple[Transform, ...] = DEFAULT_TRANSFORMS
    activation_quantizer: ActivationQuantizer = field(default_factory=ActivationQuantizer)
    weight_quantizer: WeightQuantizerHook | None = None
    is_fusable_activation: Callable[[keras.Operation], bool] = is_fusable_activation

    def config_for(self, layer: keras.Operation) -> QuantizeConfig | None:
        """The layer's config: the user registry first, then this scheme's table; hook applied."""
        config = USER_REGISTRY.lookup(layer)
        if config is None:
            config = self.registry.lookup(layer)
        return None if config is None else self.finalize(layer, config)

    def finalize(self, layer: keras.Operation, config: QuantizeConfig) -> QuantizeConfig:
        """Apply the scheme's weight-quantizer hook to a config (also to annotation configs)."""
        if self.weight_quantizer is None or not config.weights:
            return config
        weights = {attr: self.weight_quantizer(layer, attr, q) for attr, q in config.weights.items()}
        return config.replace(weights=weights)

    def with_weight_quantizer(self, hook: WeightQuantizerHook, name: str | None = None) -> "Scheme":
        """A scheme whose weight quantizers are ``hook(layer, attr, quantizer)`` of this one's."""
        previous = self.weight_quantizer

        def composed(layer: keras.Operation, attr: str, quantizer: Quantizer) -> Quantizer:
            return hook(layer, attr, previous(layer, attr, quantizer) if previous else quantizer)

        return replace(self, name=name or self.name, weight_quantizer=composed)


def default_8bit_scheme(
    *,
    weight_bits: int = 8,
    activation_bits: int = 8,
    activation_mode: str = "moving_average",
    decay: float = 0.99,
    dense_per_channel: bool = False,
    hard_activations: str = "relu6",
) -> Scheme:
    """The TFLite int8 scheme, with its options.

    ``activation_bits=16`` is TFLite's 16x8 scheme (symmetric int16 activations, int8 weights;
    registered as ``"int16x8"``), lowered by ``to_tflite(mode="int16x8")`` without
    representative data. Other ``weight_bits`` / ``activation_bits`` are experimental: ``weight_bits=4``
    lowers to TFLite INT4 weights (CPU kernels only, not the Edge TPU); 4-bit activations
    train in Keras but do not lower (TFLite kernels run 8-bit activations).
    ``dense_per_channel`` quantizes Dense kernels per output unit (TF 2.21's converter
    default) instead of per tensor (the TFLite spec and the Edge TPU's reference models).
    ``hard_activations="relu6"`` (default) writes hard-swish / hard-sigmoid as ADD + RELU6 +
    MUL, ops the Edge TPU maps; ``"native"`` keeps TFLite's HARD_SWISH op (one op instead of
    three on a CPU, but the Edge TPU compiler stops at it).
    """
    if hard_activations not in ("relu6", "native"):
        raise InvalidArgumentError(f"hard_activations must be 'relu6' or 'native', got {hard_activations!r}.")
    transforms = DEFAULT_TRANSFORMS
    if hard_activations == "native":
        transforms = tuple(t for t in DEFAULT_TRANSFORMS if t is not decompose_hard_activations)
    bits = "" if (weight_bits, activation_bits) == (8, 8) else f"_w{weight_bits}a{activation_bits}"
    name = "int16x8" if (weight_bits, activation_bits) == (8, 16) else f"default_8bit{bits}"
    return Scheme(
        name=name,
        registry=default_8bit_registry(weight_bits=weight_bits, dense_per_channel=dense_per_channel),
        transforms=transforms,
        activation_quantizer=ActivationQuantizer(
            num_bits=activation_bits, mode=activation_mode, decay=decay, symmetric=activation_bits == 16
        ),
    )


def int16x8_scheme() -> Scheme:
    """TFLite's 16x8 scheme for quantization-aware training: int8 weights as in ``default_8bit``,
    symmetric int16 activation fake-quants (for models that lose too much with 8-bit activations)."""
    return default_8bit_scheme(activation_bits=16)


_BUILT_IN_SCHEMES: dict[str, Callable[[], Scheme]] = {"default_8bit": default_8bit_scheme, "int16x8": int16x8_scheme}
_SCHEMES: dict[str, Callable[[], Scheme]] = dict(_BUILT_IN_SCHEMES)


def register_scheme(name: str, factory: Callable[[], Scheme]) -> None:
    """Make ``quantize_model(model, scheme=name)`` use ``factory()``."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"A scheme name must be a non-empty string, got {name!r}.")
    _SCHEMES[name] = factory


def register_built_in_scheme(name: str, factory: Callable[[], Scheme]) -> None:
    """Register a scheme kopt itself ships (``unregister_scheme`` refuses to remove it)."""
    register_scheme(name, factory)
    _BUILT_IN_SCHEMES[name] = factory


def unregister_scheme(name: str) -> None:
    """Forget a scheme added with :func:`register_scheme` (built-in schemes stay)."""
    if name in _BUILT_IN_SCHEMES:
        raise InvalidArgumentError(f"{name!r} is a built-in scheme and cannot be unregistered.")
    if name not in _SCHEMES:
        raise InvalidArgumentError(f"No scheme named {name!r} is registered. Registered: {available_schemes()}.")
    del _SCHEMES[name]


def available_schemes() -> list[str]:
    return sorted(_SCHEMES)


def get_scheme(scheme: Union[str, Scheme]) -> Scheme:
    """Resolve a scheme name (or pass a Scheme through)."""
    if isinstance(scheme, Scheme):
        return scheme
    if isinstance(scheme, str) and scheme in _SCHEMES:
        return _SCHEMES[scheme]()
    raise InvalidArgumentError(f"Unknown quantization scheme {scheme!r}. Available: {available_schemes()} (or pass a Scheme).")
