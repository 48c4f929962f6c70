"""Weight clustering as a registered technique (:mod:`kopt.technique.registry`)."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from kopt.clustering.api import cluster_weights
from kopt.clustering.clusterable import clusterable_weights, is_clusterable
from kopt.clustering.settings import ClusterSettings
from kopt.clustering.wrapper import derive_seed, initial_clusters
from kopt.core.errors import NotClusterableError, PolicyError
from kopt.technique.registry import NotEligible, Target, Technique, register_technique


class Clustering(Technique):
    name = "cluster"
    order = 20
    settings_type = ClusterSettings
    default_levels = (32, 16, 8, 4)
    level_meaning = "cluster counts (integers >= 1), e.g. (32, 16, 8, 4)"
    wraps_in_place = True

    def applies(self, layer: keras.layers.Layer) -> bool:
        return bool(is_clusterable(layer))

    def weights(self, layer: keras.layers.Layer) -> list[Target]:
        if not is_clusterable(layer):
            raise NotEligible(f"kopt cannot cluster a {type(layer).__name__}")
        try:
            weights = clusterable_weights(layer)
        except NotClusterableError as error:
            raise NotEligible(str(error)) from None
        return [Target(w.name, w.variable, index=i) for i, w in enumerate(weights)]

    def wrap(
        self, model: keras.Model, per_layer: Mapping[str, ClusterSettings], *, seed: int | None = None, **_: Any
    ) -> keras.Model:
        """Each named layer in a ClusterWrapper with its own settings; the others stay as they are."""
        if not per_layer:
            raise PolicyError(f"The policy clusters no layer of model {model.name!r}.")
        first = next(iter(per_layer.values()))
        return cluster_weights(
            model,
            first.number_of_clusters,
            seed=seed,
            layer_filter=lambda layer: layer.name in per_layer,
            configs=per_layer,
        )

    def level(self, value: Any) -> int | None:
        integer = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        return int(value) if integer and int(value) >= 1 else None

    def level_applicable(self, level: float | int, values: Sequence[np.ndarray], preserve_sparsity: bool) -> bool:
        """``ClusterWrapper`` refuses more clusters than a weight has values; keeping zeros needs a second cluster."""
        if preserve_sparsity and level < 2:
            return False
        return all(int(level) <= int(v.size) for v in values)

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
        """``ClusterWrapper``'s initial per-tensor clusters (same seeds), then the gather its inference pass does."""
        layer_seed = derive_seed(int(seed), layer.name)
        clustered = []
        for weight, value in zip(weights, values):
            rng = np.random.default_rng([layer_seed, weight.index])
            centroids, indices = initial_clusters(value, (), int(level), "kmeans++", rng, preserve_sparsity=preserve_sparsity)
            clustered.append(centroids[0][indices].astype(value.dtype))
        return clustered


CLUSTERING = register_technique(Clustering())

__all__ = ["CLUSTERING", "Clustering"]
