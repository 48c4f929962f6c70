"""TFMOT's public API on Keras 3: ``import kopt.tfmot as tfmot`` and TFMOT code runs unchanged.

A thin adapter over kopt (``kopt.sparsity``, ``kopt.clustering``, ``kopt.quantization``,
``kopt.strip``) with the names, arguments and defaults of the TensorFlow Model Optimization
Toolkit 0.8: ``tfmot.sparsity.keras``, ``tfmot.clustering.keras`` (and its
``experimental.cluster``), ``tfmot.quantization.keras`` and ``tfmot.experimental.combine``.
It computes nothing itself. ``import kopt`` does not import it. Every difference from TFMOT
is listed in ``docs/migrating-from-tfmot.md``.
"""

from kopt.tfmot import clustering, experimental, quantization, sparsity

__all__ = ["clustering", "experimental", "quantization", "sparsity"]
