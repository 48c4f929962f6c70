"""``cluster_weights`` / ``strip_clustering`` with TFMOT's arguments, on ``kopt.clustering``.

Follows TFMOT where its output differs from kopt's defaults: DepthwiseConv1D/2D are never
clustered, and a layer holding weights that neither registry nor ``ClusterableLayer`` covers
is an error. kopt's behaviour stays where it is better: BatchNormalization layers keep
training during clustering, and clustered models load without ``cluster_scope()``.
"""

from __future__ import annotations

import enum
import warnings
from typing import Any

import keras

from kopt.clustering import (
    ClusteringConfigError,
    ClusterWrapper,
    NotClusterableError,
    is_clusterable,
)
from kopt.clustering import cluster_weights as kopt_cluster_weights
from kopt.core.errors import KoptWarning
from kopt.graph import analyze
from kopt.technique.wrapper import KoptWrapper
from kopt.tfmot._common import check_no_kwargs, keep_input_shape, model_kind, scope, strip_wrappers

#: Layers TFMOT never clusters (kopt would).
NOT_CLUSTERED_BY_TFMOT = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
#: Layers with weights that TFMOT accepts in a clustered model and leaves alone.
LEFT_ALONE = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Normalization,
    keras.layers.PReLU,
    *NOT_CLUSTERED_BY_TFMOT,
)


class CentroidInitialization(str, enum.Enum):
    """TFMOT's centroid initialisations; each value is the name kopt uses (``init=``)."""

    LINEAR = "linear"
    RANDOM = "random"
    DENSITY_BASED = "density"
    KMEANS_PLUS_PLUS = "kmeans++"


class ClusterableLayer:
    """TFMOT's interface for custom layers: ``get_clusterable_weights()`` returns
    ``[(name, variable), ...]``. kopt clusters them with its own algorithm, per tensor, or per
    channel along the axes a third tuple item gives.
    """

    def get_clusterable_weights(self) -> list[tuple]:
        raise NotImplementedError("Implement get_clusterable_weights() -> [(name, variable), ...].")

    def get_clusterable_algorithm(self, weight_name: str) -> Any:
        """TFMOT's hook for a custom weight layout; kopt supports only ``None`` (its own algorithm)."""
        return None


def cluster_scope() -> keras.saving.CustomObjectScope:
    """TFMOT's deserialization scope. Not needed: kopt's wrappers load without it."""
    return scope()


def _init_name(value: Any) -> str:
    if isinstance(value, CentroidInitialization):
        return value.value
    if isinstance(value, str):
        text = value.split(".")[-1]
        for member in CentroidInitialization:
            if text in (member.name, member.value):
                return member.value
    raise ClusteringConfigError(
        f"Cluster centroid initialization {value!r} not supported; use one of "
        f"{', '.join('CentroidInitialization.' + m.name for m in CentroidInitialization)}."
    )


def cluster_weights(
    to_cluster: Any,
    number_of_clusters: int,
    cluster_centroids_init: Any = CentroidInitialization.KMEANS_PLUS_PLUS,
    preserve_sparsity: bool = False,
    cluster_per_channel: bool = False,
    **kwargs: Any,
) -> Any:
    """Wrap a model, a layer or a list of layers for weight clustering, as TFMOT does.

    Each clustered weight keeps ``number_of_clusters`` values (per output channel with
    ``cluster_per_channel=True``); ``preserve_sparsity=True`` keeps zeros at zero.
    Returns a model of the type given (a Sequential stays Sequential).
    """
    api = "cluster_weights"
    check_no_kwargs(kwargs, api)
    params = {
        "number_of_clusters": number_of_clusters,
        "init": _init_name(cluster_centroids_init),
        "per_channel": bool(cluster_per_channel),
        "preserve_sparsity": bool(preserve_sparsity),
    }
    kind = model_kind(to_cluster, api)
    if kind == "list":
        return [_cluster_layer(layer, params) for layer in to_cluster]
    if kind == "layer":
        return _cluster_layer(to_cluster, params)
    layers = [layer for layer in analyze(to_cluster).layers() if isinstance(layer, keras.layers.Layer)]
    for layer in layers:
        _check_layer(layer)

    def wanted(layer: keras.layers.Layer) -> bool:
        return not isinstance(layer, NOT_CLUSTERED_BY_TFMOT)

    return kopt_cluster_weights(to_cluster, layer_filter=wanted, **params)


def _check_layer(layer: keras.layers.Layer) -> None:
    """TFMOT's refusals: weights nobody knows how to cluster, and custom clustering algorithms."""
    if isinstance(layer, (KoptWrapper, *LEFT_ALONE)) or not layer.weights:
        return  # kopt's cluster_weights explains an already wrapped layer (strip first)
    if not is_clusterable(layer) and not isinstance(layer, keras.layers.InputLayer):
        raise NotClusterableError(
            f"cluster_weights: layer {layer.name!r} ({type(layer).__name__}) holds weights no clustering rule covers "
            "(TFMOT raises here too). Give it a get_clusterable_weights() method "
            "(tfmot.clustering.keras.ClusterableLayer), or cluster the other layers only with "
            "kopt.clustering.cluster_weights(..., layer_filter=...)."
        )
    algorithm = getattr(layer, "get_clusterable_algorithm", None)
    if algorithm is not None and hasattr(layer, "get_clusterable_weights"):
        custom = [name for name, *_ in layer.get_clusterable_weights() if algorithm(name) is not None]
        if custom:
            raise NotClusterableError(
                f"cluster_weights: layer {layer.name!r} returns a custom clustering algorithm for {custom}; kopt "
                "clusters with its own algorithm only. Return None from get_clusterable_algorithm and give the "
                "weight's output-channel axes as a third item of get_clusterable_weights() if it is not last."
            )


def _cluster_layer(layer: Any, params: dict) -> Any:
    if isinstance(layer, (ClusterWrapper, keras.layers.InputLayer)):
        return layer
    if not isinstance(layer, keras.layers.Layer):
        raise ClusteringConfigError(f"cluster_weights: list items must be keras layers, got {type(layer).__name__}.")
    if isinstance(layer, NOT_CLUSTERED_BY_TFMOT):
        warnings.warn(
            f"cluster_weights: layer {layer.name!r} ({type(layer).__name__}) is left unclustered, as in TFMOT "
            "(kopt.clustering.cluster_weights clusters depthwise kernels).",
            KoptWarning,
            stacklevel=3,
        )
        return layer
    if isinstance(layer, LEFT_ALONE):
        return layer
    if not is_clusterable(layer):
        raise NotClusterableError(
            f"cluster_weights: layer {layer.name!r} ({type(layer).__name__}) cannot be clustered; give it a "
            "get_clusterable_weights() method (tfmot.clustering.keras.ClusterableLayer)."
        )
    if layer.built:
        _check_layer(layer)
    return keep_input_shape(kopt_cluster_weights(layer, **params), layer)


def strip_clustering(to_strip: Any) -> Any:
    """Remove the clustering wrappers (centroids baked into the kernels); other wrappers stay."""
    return strip_wrappers(to_strip, ClusterWrapper, "strip_clustering", ClusteringConfigError)
