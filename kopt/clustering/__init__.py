"""Weight clustering (weight sharing): each weight tensor, or each output channel, keeps
at most N distinct values, trained with the N centroids as parameters.

``cluster_weights(model, 16)`` wraps every clusterable layer in a :class:`ClusterWrapper`;
train as usual; ``kopt.strip(model)`` gives plain layers whose kernels hold the centroid
values.
"""

from kopt.clustering.api import cluster_layer, cluster_weights
from kopt.clustering.assign import gather_centroids, nearest_centroid
from kopt.clustering.clusterable import (
    ClusterableLayer,
    ClusterableWeight,
    clusterable_weights,
    is_clusterable,
    register_clusterable,
)
from kopt.clustering.init import INIT_METHODS, initial_centroids
from kopt.clustering.recover import Clusters, layer_clusters, recover_clusters, unique_values
from kopt.clustering.settings import ClusterSettings
from kopt.clustering.technique import CLUSTERING
from kopt.clustering.wrapper import GRADIENT_AGGREGATIONS, ClusterWrapper
from kopt.core.errors import ClusteringConfigError, NotClusterableError

__all__ = [
    "ClusterSettings",
    "CLUSTERING",
    "GRADIENT_AGGREGATIONS",
    "INIT_METHODS",
    "ClusterWrapper",
    "ClusterableLayer",
    "ClusterableWeight",
    "Clusters",
    "ClusteringConfigError",
    "NotClusterableError",
    "cluster_layer",
    "cluster_weights",
    "clusterable_weights",
    "gather_centroids",
    "initial_centroids",
    "is_clusterable",
    "layer_clusters",
    "nearest_centroid",
    "recover_clusters",
    "register_clusterable",
    "unique_values",
]
