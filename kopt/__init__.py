"""kopt: model optimization (pruning, clustering, quantization-aware training) for Keras 3."""

from kopt import graph
from kopt.strip import strip

__version__ = "0.1.0.dev0"

__all__ = ["graph", "strip", "__version__"]
