"""kopt.tfmot mirrors TFMOT's module tree and exports every public name the issue lists."""

from __future__ import annotations

import importlib

import pytest

NAMES = {
    "kopt.tfmot.sparsity.keras": [
        "prune_low_magnitude", "ConstantSparsity", "PolynomialDecay", "UpdatePruningStep", "PruningSummaries",
        "strip_pruning", "prune_scope", "PrunableLayer", "PruningPolicy", "PruneForLatencyOnXNNPack",
    ],
    "kopt.tfmot.clustering.keras": [
        "cluster_weights", "CentroidInitialization", "strip_clustering", "cluster_scope", "ClusterableLayer",
    ],
    "kopt.tfmot.clustering.keras.experimental.cluster": ["cluster_weights", "CentroidInitialization"],
    "kopt.tfmot.quantization.keras": [
        "quantize_model", "quantize_annotate_layer", "quantize_annotate_model", "quantize_apply", "quantize_scope",
        "QuantizeConfig", "quantizers", "default_8bit",
    ],
    "kopt.tfmot.quantization.keras.quantizers": [
        "Quantizer", "LastValueQuantizer", "MovingAverageQuantizer", "AllValuesQuantizer",
    ],
    "kopt.tfmot.quantization.keras.default_8bit": ["Default8BitQuantizeScheme"],
    "kopt.tfmot.experimental.combine": [
        "Default8BitPrunePreserveQuantizeScheme", "Default8BitClusterPreserveQuantizeScheme",
    ],
}


@pytest.mark.backends
@pytest.mark.parametrize("module", sorted(NAMES))
def test_module_exports_tfmot_names(module):
    imported = importlib.import_module(module)
    missing = [name for name in NAMES[module] if not hasattr(imported, name)]
    assert not missing


@pytest.mark.backends
def test_attribute_paths_of_the_guides():
    from kopt import tfmot

    assert tfmot.clustering.keras.CentroidInitialization.LINEAR == "linear"
    assert tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme().kopt_scheme() == "prune_preserve"
    assert tfmot.clustering.keras.ClusterableLayer().get_clusterable_algorithm("kernel") is None
