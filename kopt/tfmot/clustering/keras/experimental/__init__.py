"""``tfmot.clustering.keras.experimental``: the module TFMOT's sparsity-preserving clustering guide imports."""

from kopt.tfmot.clustering.keras.experimental import cluster

__all__ = ["cluster"]
