"""What each technique does to *one* layer's weights, one-shot, for the sensitivity analysis.

The sensitivity analysis must measure what the real pipeline would do to a layer, so every
technique reuses the code its stage uses, applied once to the current weights:

``"prune"``     the weights :func:`kopt.sparsity.prunable.prunable_weights` names (the ones
                ``PruneWrapper`` prunes) times :func:`kopt.sparsity.masks.magnitude_mask`
                at the level's sparsity.
``"cluster"``   the weights :func:`kopt.clustering.clusterable_weights` names, each replaced
                by its nearest of ``k`` per-tensor centroids initialised exactly as
                ``ClusterWrapper`` initialises them (k-means++, seed derived from the
                model-level seed and the layer name, one generator per weight index), so the
                values equal those of a freshly wrapped layer before any fine-tuning. With
                ``preserve_sparsity`` zeros keep an exact zero centroid.
``"quantize"``  the weights the ``default_8bit`` scheme fake-quantizes (its
                :class:`~kopt.quantization.WeightQuantizer` with the level's bit width:
                symmetric, narrow range, per output channel for convolutions and per tensor
                for Dense, as TFLite int8 does); activations stay float. A BatchNormalization
                folded into a convolution at export only rescales each output channel, which a
                per-channel grid absorbs, so the folded and unfolded kernels round alike.

Every function here works on host copies: :func:`transformed` returns new NumPy values and
never assigns them; :mod:`kopt.analysis.sensitivity` does the assigning and the restoring.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from kopt.core.errors import InvalidArgumentError

TECHNIQUES: tuple[str, ...] = ("prune", "cluster", "quantize")

#: Levels used when none are given, mildest first.
DEFAULT_LEVELS: dict[str, tuple[float | int, ...]] = {
    "prune": (0.5, 0.75, 0.9),
    "cluster": (32, 16, 8, 4),
    "quantize": (8, 4),
}

#: ``preserve_sparsity=None`` turns zero-preserving clustering on for a layer whose clusterable
#: weights are at least this share exact zeros (the model was pruned).
AUTO_PRESERVE_SHARE = 0.10

#: The scheme whose weight quantizers ``"quantize"`` mirrors.
QUANTIZE_SCHEME = "default_8bit"

_LEVEL_MEANING = {
    "prune": "sparsities (numbers strictly between 0 and 1), e.g. (0.5, 0.75, 0.9)",
    "cluster": "cluster counts (integers >= 1), e.g. (32, 16, 8, 4)",
    "quantize": "weight bit widths (integers from 2 to 8), e.g. (8, 4)",
}


class NotEligible(Exception):
    """Internal: the layer has nothing the technique can change (the message says why)."""


@dataclass(frozen=True)
class Target:
    """One weight a technique changes: a readable name, the variable, and technique details
    (the weight index for clustering's seed, the quantizer for quantization)."""

    name: str
    variable: keras.Variable
    index: int = 0
    quantizer: Any = None
    kernel_view: bool = False


# ------------------------------------------------------------------ arguments
def check_technique(technique: Any) -> str:
    if technique not in TECHNIQUES:
        raise InvalidArgumentError(f"Unknown technique {technique!r}; valid techniques: {list(TECHNIQUES)}.")
    return technique


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_levels(technique: str, levels: Any) -> tuple[float | int, ...]:
    """The levels as plain Python numbers, duplicates removed, mildest first.

    Mildest first means ascending sparsity, descending cluster count, descending bit width.
    """
    if levels is None:
        return DEFAULT_LEVELS[technique]
    meaning = _LEVEL_MEANING[technique]
    if isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, np.ndarray)):
        raise InvalidArgumentError(
            f"levels must be a sequence of {meaning}; got {levels!r} for technique {technique!r}."
        )
    values = list(np.asarray(levels).tolist()) if isinstance(levels, np.ndarray) else list(levels)
    if not values:
        raise InvalidArgumentError(f"levels is empty: give at least one of the {meaning} for technique {technique!r}.")
    checked: list[float | int] = []
    for value in values:
        if technique == "prune":
            valid = _is_real(value) and math.isfinite(float(value)) and 0.0 < float(value) < 1.0
            converted: float | int = float(value) if valid else 0.0
        elif technique == "cluster":
            valid = _is_integer(value) and int(value) >= 1
            converted = int(value) if valid else 0
        else:
            valid = _is_integer(value) and 2 <= int(value) <= 8
            converted = int(value) if valid else 0
        if not valid:
            raise InvalidArgumentError(
                f"Level {value!r} is not valid for technique {technique!r}: levels must be {meaning}; "
                f"got levels={tuple(values)!r}."
            )
        if converted not in checked:
            checked.append(converted)
    return tuple(sorted(checked, reverse=technique != "prune"))


# ------------------------------------------------------------------ which weights
def targets(technique: str, layer: keras.layers.Layer) -> list[Target]:
    """The weights ``technique`` changes in the built ``layer``; raises :class:`NotEligible`."""
    if technique == "prune":
        return _prune_targets(layer)
    if technique == "cluster":
        return _cluster_targets(layer)
    return _quantize_targets(layer)


def _prune_targets(layer: keras.layers.Layer) -> list[Target]:
    from kopt.sparsity.prunable import NotPrunable, prunable_weights

    try:
        weights = prunable_weights(layer)
    except NotPrunable as error:
        raise NotEligible(str(error)) from None
    found = [Target(w.name, w.variable) for w in weights if _float_variable(w.variable)]
    if not found:
        raise NotEligible("it has no float weight to prune")
    return found


def _cluster_targets(layer: keras.layers.Layer) -> list[Target]:
    from kopt.clustering import NotClusterableError, clusterable_weights, is_clusterable

    if not is_clusterable(layer):
        raise NotEligible(f"kopt cannot cluster a {type(layer).__name__}")
    try:
        weights = clusterable_weights(layer)
    except NotClusterableError as error:
        raise NotEligible(str(error)) from None
    return [Target(w.name, w.variable, index=i) for i, w in enumerate(weights)]


def _quantize_targets(layer: keras.layers.Layer) -> list[Target]:
    from kopt.quantization import WeightQuantizer, get_scheme

    config = get_scheme(QUANTIZE_SCHEME).config_for(layer)
    if config is None:
        raise NotEligible(f"the {QUANTIZE_SCHEME} scheme has no int8 config for a {type(layer).__name__}")
    found = []
    for attr, quantizer in config.weights.items():
        variable = getattr(layer, attr, None)
        # A BatchNormalization's "kernel" only exists after it is folded (nothing to round here).
        if isinstance(quantizer, WeightQuantizer) and _float_variable(variable):
            found.append(Target(attr, variable, quantizer=quantizer, kernel_view=attr == "kernel"))
    if not found:
        raise NotEligible(f"the {QUANTIZE_SCHEME} scheme quantizes no weight variable of it")
    return found


def _float_variable(variable: Any) -> bool:
    return isinstance(variable, keras.Variable) and keras.backend.is_float_dtype(variable.dtype)


def host_value(variable: keras.Variable) -> np.ndarray:
    """A NumPy copy of the variable's value (the snapshot restored afterwards)."""
    return np.array(ops.convert_to_numpy(variable.value), copy=True)


def zero_share(values: Sequence[np.ndarray]) -> float:
    total = sum(int(v.size) for v in values)
    return 0.0 if total == 0 else sum(int(np.count_nonzero(v == 0)) for v in values) / total


# ------------------------------------------------------------------ the changes
def applicable(technique: str, level: float | int, values: Sequence[np.ndarray], preserve_sparsity: bool) -> bool:
    """Whether the pipeline could apply ``level`` to weights of these sizes.

    Only clustering has such limits: ``ClusterWrapper`` refuses more clusters than a weight
    has values, and a zero-preserving layer needs a second cluster for the non-zeros.
    """
    if technique != "cluster":
        return True
    if preserve_sparsity and level < 2:
        return False
    return all(int(level) <= int(v.size) for v in values)


def transformed(
    technique: str,
    layer: keras.layers.Layer,
    weights: Sequence[Target],
    values: Sequence[np.ndarray],
    level: float | int,
    *,
    seed: int = 0,
    preserve_sparsity: bool = False,
) -> list[np.ndarray]:
    """New values (NumPy, same shapes and dtypes as ``values``) of ``weights`` at ``level``."""
    if technique == "prune":
        return [_pruned(value, float(level)) for value in values]
    if technique == "cluster":
        from kopt.clustering.wrapper import derive_seed

        layer_seed = derive_seed(int(seed), layer.name)
        return [
            _clustered(value, int(level), np.random.default_rng([layer_seed, w.index]), preserve_sparsity)
            for w, value in zip(weights, values)
        ]
    return [_quantized(layer, w, value, int(level)) for w, value in zip(weights, values)]


def _pruned(value: np.ndarray, sparsity: float) -> np.ndarray:
    from kopt.sparsity.masks import magnitude_mask

    mask = np.asarray(ops.convert_to_numpy(magnitude_mask(ops.convert_to_tensor(value), sparsity)))
    return (value * mask.astype(value.dtype)).astype(value.dtype)


def _clustered(value: np.ndarray, k: int, rng: np.random.Generator, preserve_sparsity: bool) -> np.ndarray:
    """``ClusterWrapper``'s initial per-tensor clusters, then the gather its inference pass does."""
    from kopt.clustering.wrapper import initial_clusters

    centroids, indices = initial_clusters(value, (), k, "kmeans++", rng, preserve_sparsity=preserve_sparsity)
    return centroids[0][indices].astype(value.dtype)


def _quantized(layer: keras.layers.Layer, weight: Target, value: np.ndarray, bits: int) -> np.ndarray:
    from kopt.quantization import WeightQuantizer
    from kopt.quantization.kernels import from_view, kernel_view

    base = weight.quantizer
    quantizer = WeightQuantizer(bits, per_channel=base.per_channel, channel_dims=base.channel_dims)
    tensor = ops.convert_to_tensor(value)
    if weight.kernel_view:  # the layout the TFLite op consumes (a Conv1D's 4-D view)
        result = from_view(layer, quantizer(kernel_view(layer, tensor)))
    else:
        result = quantizer(tensor)
    return np.asarray(ops.convert_to_numpy(result)).astype(value.dtype).reshape(value.shape)


def transformed_weights(
    technique: str,
    layer: keras.layers.Layer,
    level: float | int,
    *,
    seed: int = 0,
    preserve_sparsity: bool = False,
) -> dict[str, np.ndarray]:
    """What ``technique`` at ``level`` makes of ``layer``'s weights, by weight name (nothing is assigned).

    For inspection and tests: the same values :func:`kopt.analysis.sensitivity` evaluates.
    """
    technique = check_technique(technique)
    (level,) = check_levels(technique, (level,))
    try:
        weights = targets(technique, layer)
    except NotEligible as error:
        raise InvalidArgumentError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be changed by {technique!r}: {error}."
        ) from None
    values = [host_value(w.variable) for w in weights]
    new = transformed(technique, layer, weights, values, level, seed=seed, preserve_sparsity=preserve_sparsity)
    return {w.name: v for w, v in zip(weights, new)}


__all__ = [
    "AUTO_PRESERVE_SHARE",
    "DEFAULT_LEVELS",
    "TECHNIQUES",
    "check_levels",
    "check_technique",
    "transformed_weights",
]
