"""kopt.plots: PNG files of the expected pixel size, stage selection, errors."""

from __future__ import annotations

import numpy as np
import pytest

from kopt.pipeline.stages import StageResult
from kopt.report.plots import (
    pick_layer,
    pipeline_weight_density,
    png_size,
    size_accuracy,
    size_accuracy_figure,
    weight_density,
)
from kopt.report.summary import Report, StageReport

pytestmark = pytest.mark.backends


def _stage(name, kernels, **figures):
    return StageResult(name=name, model=None, report=StageReport(name=name, **figures), kernels=kernels)


def _kernels():
    rng = np.random.default_rng(0)
    baseline = rng.normal(size=(3, 3, 8, 16)).astype("float32")
    pruned = np.where(np.abs(baseline) < np.median(np.abs(baseline)), 0.0, baseline)
    centroids = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    clustered = centroids[np.abs(pruned[..., None] - centroids).argmin(-1)]
    return baseline, pruned, clustered


def test_weight_density_png_has_the_expected_size(tmp_path):
    baseline, pruned, clustered = _kernels()
    path = weight_density({"baseline": baseline, "pruned": pruned, "clustered": clustered}, tmp_path / "d.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_size(path) == (800, 600)
    single = weight_density({"constant": np.zeros((4, 4))}, tmp_path / "s.png")
    assert png_size(single) == (800, 200)
    with pytest.raises(ValueError, match="at least one kernel"):
        weight_density({}, tmp_path / "e.png")


def test_pipeline_weight_density_through_the_stages(tmp_path):
    baseline, pruned, clustered = _kernels()
    small = np.ones((2, 2), "float32")
    stages = [
        _stage("baseline", {"conv": baseline, "fc": small}),
        _stage("prune", {"conv": pruned, "fc": small}),
        _stage("cluster", {"conv": clustered, "fc": small}),
        _stage("quantize", {"conv": clustered, "fc": small}),
        _stage("int8", {"conv": clustered}),
    ]
    assert pick_layer(stages) == "conv"  # the largest kernel, present in every stage
    assert pick_layer(stages, "fc") == "fc"
    with pytest.raises(ValueError, match=r"No stage has a kernel for layer 'dense'"):
        pick_layer(stages, "dense")
    path = pipeline_weight_density(stages, tmp_path / "pipeline.png")
    assert png_size(path) == (800, 800)  # baseline, pruned, clustered, int8 (QAT folded into int8)


def test_size_accuracy_chart(tmp_path):
    stages = [
        StageReport(name="baseline", keras_metrics={"accuracy": 0.95}, zipped_bytes=20_000),
        StageReport(name="prune", keras_metrics={"accuracy": 0.94}, zipped_bytes=11_000),
        StageReport(name="int8", int8_accuracy=0.93, tflite_bytes=8000, tflite_zipped_bytes=4000),
        StageReport(name="extra"),  # no accuracy: skipped on the line
    ]
    path = size_accuracy(Report(model_name="m", policy={}, stages=stages), tmp_path / "sa.png")
    assert png_size(path) == (800, 400)
    ax, twin = size_accuracy_figure(Report(model_name="m", policy={}, stages=stages)).axes
    low, high = twin.get_ylim()
    assert 0.9 < low < 0.93 and 0.95 < high < 0.97  # zoomed: a point of accuracy is visible
    texts = {t.get_text() for t in ax.texts} | {t.get_text() for t in twin.texts}
    assert {"95.00%", "94.00%", "93.00%", "19.5 KB", "3.9 KB"} <= texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["zipped float32 weights (Keras)", "zipped int8 .tflite"]  # float and int8 sizes told apart
    with pytest.raises(ValueError, match="no stage"):
        size_accuracy(Report(model_name="m", policy={}), tmp_path / "none.png")


def test_png_size_rejects_other_files(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(path)
