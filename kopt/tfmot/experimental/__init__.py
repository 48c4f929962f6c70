"""``tfmot.experimental``: collaborative-optimization schemes (``tfmot.experimental.combine``)."""

from kopt.tfmot.experimental import combine

__all__ = ["combine"]
