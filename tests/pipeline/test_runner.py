"""kopt.pipeline.run_stages: stages composed in order, each starting from the previous stripped model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kopt.pipeline import run_stages
from kopt.pipeline.training import CompileSettings, Training
from kopt.policy import ClusterSettings, Policy, PruneSettings
from tests.optimize_testing import compile_model, digits, kernel, tiny_dense


def _wrappers(model, cls):
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, cls)}


# ----------------------------------------------------------------- pipeline
@pytest.mark.backends
def test_run_stages_prune_then_cluster_keeps_zeros_and_clusters():
    """Prune -> strip -> sparsity-preserving cluster -> strip, trained under the current backend."""
    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits(train=320)
    model = compile_model(tiny_dense())
    model.fit(x, y, epochs=2, verbose=0)
    policy = Policy(
        prune=PruneSettings(sparsity=0.5, frequency=5),
        cluster=ClusterSettings(number_of_clusters=8, preserve_sparsity=True),
    )
    training = Training(
        train_data=(x, y), validation_data=(xv, yv), compile=CompileSettings.from_model(model), epochs=2, verbose=0
    )
    lines: list[str] = []
    result = run_stages(model, policy.resolve(model), training, lower=False, seed=1, log=lines.append)
    assert [s.name for s in result.stages] == ["baseline", "prune", "cluster"]
    for layer in ("hidden", "out"):
        pruned, clustered = kernel(result.stage("prune").model, layer), kernel(result.model, layer)
        assert np.mean(pruned == 0) == pytest.approx(0.5, abs=0.01)
        assert np.all(clustered[pruned == 0] == 0)  # zeros preserved
        assert len(np.unique(clustered)) <= 8
    report = result.stage("cluster").report
    assert report.max_unique_values <= 8 and report.sparsity >= 0.49
    assert report.keras_accuracy > 0.5
    assert report.zipped_bytes < result.stage("baseline").report.zipped_bytes / 2
    assert any(line.startswith("[kopt] == stage prune") for line in lines)
    assert sum(line.startswith("[kopt] ") and "keras acc" in line for line in lines) == 3
    # the user's model is untouched and the stages' kernels are there for plots
    assert np.mean(kernel(model, "hidden") == 0) == 0
    assert set(result.stage("cluster").kernels) == {"hidden", "out"}


@pytest.mark.backends
def test_run_stages_validates_the_stage_list():
    model = compile_model(tiny_dense())
    x, y, _, _ = digits(train=32)
    training = Training(train_data=(x, y), compile=CompileSettings.from_model(model), verbose=0)
    plan = Policy.preset("prune").resolve(model)
    with pytest.raises(ValueError, match=r"Unknown stage\(s\) \['finetune'\]"):
        run_stages(model, plan, training, stages=["finetune"], lower=False)
    with pytest.raises(ValueError, match="must run in the order"):
        run_stages(model, Policy.preset("prune").resolve(model), training, stages=["cluster", "prune"], lower=False)
