"""``tfmot.clustering``: weight clustering (``tfmot.clustering.keras``)."""

from kopt.tfmot.clustering import keras

__all__ = ["keras"]
