"""``tfmot.experimental.combine``: the collaborative-optimization QAT schemes (PQAT, CQAT, PCQAT)."""

from kopt.tfmot.quantization.keras.quantize import QuantizeScheme


class Default8BitPrunePreserveQuantizeScheme(QuantizeScheme):
    """PQAT: int8 QAT that keeps pruned zeros exactly zero (kopt ``"prune_preserve"``)."""

    def kopt_scheme(self) -> str:
        return "prune_preserve"


class Default8BitClusterPreserveQuantizeScheme(QuantizeScheme):
    """CQAT: int8 QAT training the centroids of clustered kernels (kopt ``"cluster_preserve"``);
    with ``preserve_sparsity=True`` (PCQAT) zeros stay zero too (``"prune_cluster_preserve"``)."""

    def __init__(self, preserve_sparsity: bool = True):
        self.preserve_sparsity = bool(preserve_sparsity)

    def kopt_scheme(self) -> str:
        return "prune_cluster_preserve" if self.preserve_sparsity else "cluster_preserve"


__all__ = ["Default8BitClusterPreserveQuantizeScheme", "Default8BitPrunePreserveQuantizeScheme"]
