"""What each technique does to *one* layer's weights, one-shot, for the sensitivity analysis.

The sensitivity analysis must measure what the real pipeline would do to a layer, so every
technique's registered entry (:mod:`kopt.technique.registry`, ``Technique.one_shot``) reuses the
code its stage uses, applied once to the current weights:

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

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from kopt import clustering, quantization, sparsity  # noqa: F401  their techniques register on import
from kopt.core.errors import InvalidArgumentError
from kopt.technique.registry import NotEligible, Target, get_technique, technique_names, techniques

TECHNIQUES: tuple[str, ...] = technique_names()

#: Levels used when none are given, mildest first.
DEFAULT_LEVELS: dict[str, tuple[float | int, ...]] = {t.name: t.default_levels for t in techniques()}

#: ``preserve_sparsity=None`` turns zero-preserving clustering on for a layer whose clusterable
#: weights are at least this share exact zeros (the model was pruned).
AUTO_PRESERVE_SHARE = 0.10


# ------------------------------------------------------------------ arguments
def check_technique(technique: Any) -> str:
    return get_technique(technique).name


def check_levels(technique: str, levels: Any) -> tuple[float | int, ...]:
    """The levels as plain Python numbers, duplicates removed, mildest first.

    Mildest first means ascending sparsity, descending cluster count, descending bit width.
    """
    entry = get_technique(technique)
    if levels is None:
        return entry.default_levels
    meaning = entry.level_meaning
    if isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, np.ndarray)):
        raise InvalidArgumentError(
            f"levels must be a sequence of {meaning}; got {levels!r} for technique {technique!r}."
        )
    values = list(np.asarray(levels).tolist()) if isinstance(levels, np.ndarray) else list(levels)
    if not values:
        raise InvalidArgumentError(f"levels is empty: give at least one of the {meaning} for technique {technique!r}.")
    checked: list[float | int] = []
    for value in values:
        converted = entry.level(value)
        if converted is None:
            raise InvalidArgumentError(
                f"Level {value!r} is not valid for technique {technique!r}: levels must be {meaning}; "
                f"got levels={tuple(values)!r}."
            )
        if converted not in checked:
            checked.append(converted)
    return tuple(sorted(checked, reverse=entry.levels_descend))


# ------------------------------------------------------------------ weights and changes
def targets(technique: str, layer: keras.layers.Layer) -> list[Target]:
    """The weights ``technique`` changes in the built ``layer``; raises :class:`NotEligible`."""
    return get_technique(technique).weights(layer)


def host_value(variable: keras.Variable) -> np.ndarray:
    """A NumPy copy of the variable's value (the snapshot restored afterwards)."""
    return np.array(ops.convert_to_numpy(variable.value), copy=True)


def zero_share(values: Sequence[np.ndarray]) -> float:
    total = sum(int(v.size) for v in values)
    return 0.0 if total == 0 else sum(int(np.count_nonzero(v == 0)) for v in values) / total


def applicable(technique: str, level: float | int, values: Sequence[np.ndarray], preserve_sparsity: bool) -> bool:
    """Whether the pipeline could apply ``level`` to weights of these sizes (only clustering has such limits)."""
    return get_technique(technique).level_applicable(level, values, preserve_sparsity)


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
    return get_technique(technique).one_shot(
        layer, weights, values, level, seed=seed, preserve_sparsity=preserve_sparsity
    )


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
