"""``tfmot.clustering.keras.experimental.cluster``: ``cluster_weights`` with ``preserve_sparsity``."""

from kopt.tfmot.clustering.keras.cluster import (
    CentroidInitialization,
    cluster_scope,
    cluster_weights,
    strip_clustering,
)

__all__ = ["CentroidInitialization", "cluster_scope", "cluster_weights", "strip_clustering"]
