"""``prune_low_magnitude`` / ``strip_pruning`` with TFMOT's arguments, on ``kopt.sparsity``.

Follows TFMOT where its output differs from kopt's defaults: DepthwiseConv1D/2D are never
pruned, a layer holding weights that no rule covers is an error (not a warning), and
``block_pooling_type`` only accepts ``"AVG"`` (kopt scores blocks by mean magnitude).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras

from kopt.core.errors import InvalidArgumentError, KoptWarning, UnsupportedLayerError
from kopt.graph import analyze
from kopt.sparsity import ConstantSparsity, PruneWrapper, PruningSchedule
from kopt.sparsity import prune_low_magnitude as kopt_prune_low_magnitude
from kopt.sparsity.prunable import is_unknown_with_weights
from kopt.technique.wrapper import KoptWrapper
from kopt.tfmot._common import check_no_kwargs, keep_input_shape, model_kind, scope, strip_wrappers
from kopt.tfmot.sparsity.keras.pruning_policy import PruningPolicy

#: Layers TFMOT's pruning registry accepts but never prunes (kopt would).
NOT_PRUNED_BY_TFMOT = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def prune_scope() -> keras.saving.CustomObjectScope:
    """TFMOT's deserialization scope. Not needed: kopt's wrappers load without it."""
    return scope()


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: Sequence[int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_policy: PruningPolicy | None = None,
    sparsity_m_by_n: Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """Wrap a model, a layer or a list of layers for magnitude pruning, as TFMOT does.

    ``pruning_schedule`` defaults to ``ConstantSparsity(0.5, 0)`` (TFMOT's default);
    ``sparsity_m_by_n=(2, 4)`` keeps at least 2 zeros in every 4 consecutive input-channel
    weights; ``pruning_policy`` (e.g. :class:`PruneForLatencyOnXNNPack`) checks the model and
    picks the layers. Returns a model of the type given (a Sequential stays Sequential).
    """
    api = "prune_low_magnitude"
    check_no_kwargs(kwargs, api)
    if block_pooling_type != "AVG":
        raise InvalidArgumentError(
            f"{api}: block_pooling_type={block_pooling_type!r} is not supported; kopt scores each block by its "
            "mean magnitude, which is TFMOT's 'AVG' (the default)."
        )
    if pruning_policy is not None and not isinstance(pruning_policy, PruningPolicy):
        raise InvalidArgumentError(f"{api}: pruning_policy must be a PruningPolicy, got {pruning_policy!r}.")
    schedule = ConstantSparsity(0.5, 0) if pruning_schedule is None else pruning_schedule
    options = {"schedule": schedule, "m_by_n": sparsity_m_by_n, "block_size": block_size}
    kind = model_kind(to_prune, api)
    if kind == "list":
        return [_prune_layer(layer, pruning_policy, options) for layer in to_prune]
    if kind == "layer":
        return _prune_layer(to_prune, pruning_policy, options)
    if pruning_policy is not None:
        pruning_policy.ensure_model_supports_pruning(to_prune)
    _check_known_layers(to_prune)

    def wanted(layer: keras.layers.Layer) -> bool:
        if isinstance(layer, NOT_PRUNED_BY_TFMOT):
            return False
        return pruning_policy is None or bool(pruning_policy.allow_pruning(layer))

    return kopt_prune_low_magnitude(to_prune, layer_filter=wanted, **options)


def _prune_layer(layer: Any, policy: PruningPolicy | None, options: dict) -> Any:
    if isinstance(layer, PruneWrapper):
        return layer  # TFMOT keeps an already wrapped layer as is
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    if not isinstance(layer, keras.layers.Layer):
        raise InvalidArgumentError(f"prune_low_magnitude: list items must be keras layers, got {type(layer).__name__}.")
    if isinstance(layer, NOT_PRUNED_BY_TFMOT) or (policy is not None and not policy.allow_pruning(layer)):
        why = "TFMOT never prunes it" if isinstance(layer, NOT_PRUNED_BY_TFMOT) else "the pruning policy excludes it"
        warnings.warn(
            f"prune_low_magnitude: layer {layer.name!r} ({type(layer).__name__}) is left dense: {why}. "
            "kopt.sparsity.prune_low_magnitude prunes depthwise kernels.",
            KoptWarning,
            stacklevel=3,
        )
        return layer
    if layer.built and is_unknown_with_weights(layer):
        raise _unknown_error([layer])
    return keep_input_shape(kopt_prune_low_magnitude(layer, **options), layer)


def _check_known_layers(model: keras.Model) -> None:
    unknown = [layer for layer in analyze(model).layers() if isinstance(layer, keras.layers.Layer)
               and not isinstance(layer, KoptWrapper) and is_unknown_with_weights(layer)]
    if unknown:
        raise _unknown_error(unknown)


def _unknown_error(layers: list[keras.layers.Layer]) -> UnsupportedLayerError:
    names = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)
    return UnsupportedLayerError(
        f"prune_low_magnitude: layer(s) {names} hold weights no pruning rule covers (TFMOT raises here too). "
        "Give the layer class a get_prunable_weights() method (tfmot.sparsity.keras.PrunableLayer), or prune "
        "the other layers only with kopt.sparsity.prune_low_magnitude, which leaves unknown layers dense."
    )


def strip_pruning(to_strip: Any) -> Any:
    """Remove the pruning wrappers (zeros baked in); other wrappers stay. A Sequential stays Sequential."""
    return strip_wrappers(to_strip, PruneWrapper, "strip_pruning", InvalidArgumentError)
