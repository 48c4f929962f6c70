"""``ClusterSettings``: what weight clustering does to one layer, validated once when made."""

from __future__ import annotations

from dataclasses import dataclass

from kopt.clustering.init import INIT_METHODS
from kopt.core.checks import check_bool, check_choice, check_int


@dataclass(frozen=True)
class ClusterSettings:
    """Weight clustering into ``number_of_clusters`` shared values per layer (or per output channel)."""

    number_of_clusters: int = 16
    init: str = "kmeans++"
    per_channel: bool = False
    preserve_sparsity: bool = False

    def __post_init__(self) -> None:
        check_int("cluster.number_of_clusters", self.number_of_clusters, minimum=1)
        check_choice("cluster.init", self.init, INIT_METHODS)
        check_bool("cluster.per_channel", self.per_channel)
        check_bool("cluster.preserve_sparsity", self.preserve_sparsity)
