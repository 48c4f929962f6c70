"""Quantization as a registered technique (:mod:`kopt.technique.registry`): scheme, bit widths, one-shot.

A model has one quantization mode and scheme (TFLite lowers the whole graph one way); bit
widths may differ per layer. Cluster-preserving schemes check each clustered layer strictly
against the number of values its clustering planned (``planned_clusters``).
"""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import Any, Collection, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kopt.core.errors import PolicyError
from kopt.graph import analyze, clone_layer, map_layers
from kopt.graph.sublayers import block_of, is_sublayer_key
from kopt.quantization.api import quantize_annotate_layer, quantize_apply
from kopt.quantization.inplace import in_place_config
from kopt.quantization.kernels import from_view, kernel_view
from kopt.quantization.preserve import cluster_preserve_scheme
from kopt.quantization.quantizers import WeightQuantizer
from kopt.quantization.schemes import get_scheme
from kopt.quantization.settings import QuantizeSettings
from kopt.technique.registry import NotEligible, Target, Technique, float_variable, register_technique

#: The scheme whose weight quantizers the one-shot change mirrors.
ONE_SHOT_SCHEME = "default_8bit"

#: Built-in cluster-preserving schemes -> whether they also keep zeros (PCQAT).
CLUSTER_PRESERVING = {"cluster_preserve": False, "prune_cluster_preserve": True}


def common_settings(per_layer: Mapping[str, QuantizeSettings]) -> QuantizeSettings:
    """The one mode and scheme every quantized layer shares; a :class:`PolicyError` names a mix."""
    settings = list(per_layer.values())
    for attribute in ("mode", "scheme"):
        values = sorted({getattr(s, attribute) for s in settings})
        if len(values) > 1:
            layers = {getattr(s, attribute): name for name, s in per_layer.items()}
            raise PolicyError(
                f"quantize.{attribute} must be the same for every layer of a model, but the plan mixes {values} "
                f"(e.g. layers {sorted(layers.values())}). Set it in the policy's global quantize settings only."
            )
    return settings[0]


def _with_bits(quantizer: Any, bits: int, layer: str) -> Any:
    if getattr(quantizer, "num_bits", None) == bits:
        return quantizer
    if not hasattr(quantizer, "num_bits"):
        raise PolicyError(
            f"Layer {layer!r}: quantize.bits={bits} cannot be applied: its weight quantizer "
            f"{type(quantizer).__name__} has no bit width."
        )
    config = dict(quantizer.get_config())
    config["num_bits"] = bits
    return type(quantizer).from_config(config)


def scheme_for(
    per_layer: Mapping[str, QuantizeSettings], planned_clusters: Mapping[str, tuple[int, bool]] | None = None
) -> Any:
    """The scheme: its name, or a Scheme when layers need their own checks or bit widths.

    ``planned_clusters`` (``layer -> (most distinct values, per channel)``) turns on the strict
    check of a cluster-preserving scheme: a layer that reaches QAT with more values raises
    :class:`~kopt.quantization.NotClusteredError` instead of quietly training 256 centroids.
    """
    if not per_layer:
        raise PolicyError("The policy quantizes no layer.")
    settings = common_settings(per_layer)
    bits = {name: s.bits for name, s in per_layer.items()}
    planned = dict(planned_clusters or {}) if settings.scheme in CLUSTER_PRESERVING else {}
    if all(b == 8 for b in bits.values()) and not planned:
        return settings.scheme
    if planned:
        scheme = cluster_preserve_scheme(preserve_sparsity=CLUSTER_PRESERVING[settings.scheme], planned=planned)
    else:
        scheme = get_scheme(settings.scheme)
    if all(b == 8 for b in bits.values()):
        return scheme
    previous = scheme.weight_quantizer

    def hook(layer: keras.Operation, attr: str, quantizer: Any) -> Any:
        name = getattr(layer, "name", "")
        if name in bits:
            quantizer = _with_bits(quantizer, bits[name], name)
        return previous(layer, attr, quantizer) if previous is not None else quantizer

    return replace(scheme, weight_quantizer=hook)


class Quantization(Technique):
    name = "quantize"
    order = 30
    settings_type = QuantizeSettings
    default_levels = (8, 4)
    level_meaning = "weight bit widths (integers from 2 to 8), e.g. (8, 4)"

    wraps_in_place = True

    def applies(self, layer: keras.layers.Layer) -> bool:
        """Every layer: whether the scheme knows how is decided by ``quantize_apply``, which names the ones it cannot."""
        return True

    def applies_in_place(self, layer: keras.layers.Layer) -> bool:
        """Inside a block kept whole: the layers whose weights the ``default_8bit`` scheme fake-quantizes
        (:mod:`kopt.quantization.inplace`); the block's other sublayers are calibrated when lowered."""
        return in_place_config(get_scheme(ONE_SHOT_SCHEME).config_for, layer) is not None

    def trains(self, settings: QuantizeSettings) -> bool:
        return settings.mode == "qat"

    def weights(self, layer: keras.layers.Layer) -> list[Target]:
        """The weights the ``default_8bit`` scheme fake-quantizes (a folded BatchNormalization has none yet)."""
        config = get_scheme(ONE_SHOT_SCHEME).config_for(layer)
        if config is None:
            raise NotEligible(f"the {ONE_SHOT_SCHEME} scheme has no int8 config for a {type(layer).__name__}")
        found = []
        for attr, quantizer in config.weights.items():
            variable = getattr(layer, attr, None)
            if isinstance(quantizer, WeightQuantizer) and float_variable(variable):
                found.append(Target(attr, variable, quantizer=quantizer, kernel_view=attr == "kernel"))
        if not found:
            raise NotEligible(f"the {ONE_SHOT_SCHEME} scheme quantizes no weight variable of it")
        return found

    def wrap(
        self,
        model: keras.Model,
        per_layer: Mapping[str, QuantizeSettings],
        *,
        keep_float: Collection[str] = (),
        planned_clusters: Mapping[str, tuple[int, bool]] | None = None,
        notes: list[str] | None = None,
        **_: Any,
    ) -> keras.Model:
        """The quantization-aware model: the layers of ``per_layer`` with their bit widths, ``keep_float`` left float.

        Only the other layers are annotated and quantized (the int8 lowering then fails if a float
        layer remains, and says which). Sublayers of blocks kept whole (keys ``"block/path"``) are
        fake-quantized in place with their own bit widths and cluster plans.
        """
        scheme = scheme_for(per_layer, planned_clusters)
        nested = {key: settings for key, settings in per_layer.items() if is_sublayer_key(key)}

        def sublayer_config(key: str, sub: keras.layers.Layer) -> Any:
            if key not in nested:
                return None
            planned = {sub.name: planned_clusters[key]} if planned_clusters and key in planned_clusters else None
            own = get_scheme(scheme_for({sub.name: nested[key]}, planned))  # its bits and cluster plan
            return in_place_config(own.config_for, sub)

        # A block left float whose sublayers a rule names for QAT is reached (in place) for those only.
        keep = {layer.name for layer in analyze(model).layers()} & set(keep_float) - {block_of(key) for key in nested}
        if keep:
            if notes is not None:
                notes.append(f"left in float by the policy: {', '.join(sorted(keep))}")
            model = map_layers(
                model, lambda layer: None if layer.name in keep else quantize_annotate_layer(clone_layer(layer))
            )
        quantized, report = quantize_apply(
            model,
            scheme,
            return_report=True,
            sublayer_config=sublayer_config,
            keep_float={key for key in keep_float if is_sublayer_key(key)},
        )
        if notes is not None:
            notes.extend(line.strip() for line in str(report).splitlines()[1:])
        return quantized

    def level(self, value: Any) -> int | None:
        integer = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        return int(value) if integer and 2 <= int(value) <= 8 else None

    def one_shot(
        self,
        layer: keras.layers.Layer,
        weights: Sequence[Target],
        values: Sequence[np.ndarray],
        level: float | int,
        *,
        seed: int = 0,
        preserve_sparsity: bool = False,
    ) -> list[np.ndarray]:
        """Each weight through its scheme quantizer at ``level`` bits (per channel for convolutions)."""
        rounded = []
        for weight, value in zip(weights, values):
            base = weight.quantizer
            quantizer = WeightQuantizer(int(level), per_channel=base.per_channel, channel_dims=base.channel_dims)
            tensor = ops.convert_to_tensor(value)
            if weight.kernel_view:  # the layout the TFLite op consumes (a Conv1D's 4-D view)
                result = from_view(layer, quantizer(kernel_view(layer, tensor)))
            else:
                result = quantizer(tensor)
            rounded.append(np.asarray(ops.convert_to_numpy(result)).astype(value.dtype).reshape(value.shape))
        return rounded



QUANTIZATION = register_technique(Quantization())

__all__ = ["CLUSTER_PRESERVING", "QUANTIZATION", "Quantization", "common_settings", "scheme_for"]
