"""``tfmot.sparsity``: magnitude pruning (``tfmot.sparsity.keras``)."""

from kopt.tfmot.sparsity import keras

__all__ = ["keras"]
