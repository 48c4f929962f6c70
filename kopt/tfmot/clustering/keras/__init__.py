"""``tfmot.clustering.keras`` on kopt: TFMOT's clustering names, arguments and defaults."""

from kopt.tfmot.clustering.keras.cluster import (
    CentroidInitialization,
    ClusterableLayer,
    cluster_scope,
    cluster_weights,
    strip_clustering,
)

__all__ = ["CentroidInitialization", "ClusterableLayer", "cluster_scope", "cluster_weights", "strip_clustering"]
