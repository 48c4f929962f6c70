"""kopt.report: deployed weights seen through wrappers, per-layer figures vs NumPy, formats."""

from __future__ import annotations

import json
import zlib

import keras
import numpy as np
import pytest

from kopt.clustering import cluster_weights
from kopt.report.summary import (
    Report,
    StageReport,
    compression,
    deployed_layers,
    keras_stage,
    tflite_layer_name,
    zipped_bytes,
)
from kopt.sparsity import ConstantSparsity, prune_low_magnitude
from kopt.technique.strip import strip
from tests.optimize_testing import digits, tiny_cnn, tiny_dense


def _set_kernel(model, name, values):
    layer = model.get_layer(name)
    layer.kernel.assign(values.astype("float32"))


@pytest.mark.backends
def test_layer_figures_match_a_numpy_reference():
    model = tiny_dense()
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(64, 32))
    hidden[:, :8] = 0.0  # 25% zeros
    hidden[:, 8:16] = 0.5  # one repeated value
    _set_kernel(model, "hidden", hidden)
    stage = keras_stage("baseline", model, metrics={"loss": 1.0, "accuracy": 0.5})
    layers = {layer.name: layer for layer in stage.layers}
    assert set(layers) == {"hidden", "out"}  # Flatten holds no weights
    figures = layers["hidden"]
    bias = keras.ops.convert_to_numpy(model.get_layer("hidden").bias)
    assert figures.parameters == 64 * 32 + 32
    assert figures.sparsity == pytest.approx(0.25)
    per_column = [len(np.unique(column)) for column in hidden.astype("float32").T]  # Dense: output channel = column
    assert figures.unique_values == max(per_column) == 64
    assert figures.bits == 32 and figures.float_bytes == 4 * (64 * 32 + 32)
    expected_zipped = len(zlib.compress(hidden.astype("float32").tobytes() + bias.tobytes(), 6))
    assert figures.zipped_bytes == expected_zipped
    out_size = 32 * 10
    assert stage.sparsity == pytest.approx(64 * 8 / (64 * 32 + out_size))
    assert stage.parameters == 64 * 32 + 32 + out_size + 10
    assert stage.keras_accuracy == 0.5 and stage.accuracy == 0.5


@pytest.mark.backends
def test_deployed_layers_see_through_wrappers():
    model = tiny_dense()
    pruned = prune_low_magnitude(model, ConstantSparsity(0.75, begin_step=0))
    x, _, _, _ = digits(train=8)
    pruned(x, training=True)  # one training call computes the masks
    seen = deployed_layers(pruned)
    assert set(seen) == {"hidden", "out"} and seen["hidden"].wrapper == "PruneWrapper"
    stripped = strip(pruned)
    np.testing.assert_array_equal(
        seen["hidden"].weights["kernel"], keras.ops.convert_to_numpy(stripped.get_layer("hidden").kernel)
    )
    assert np.mean(seen["hidden"].weights["kernel"] == 0) == pytest.approx(0.75, abs=0.01)

    clustered = cluster_weights(model, 4, seed=0)
    figures = {layer.name: layer for layer in keras_stage("cluster", clustered).layers}
    assert figures["hidden"].unique_values <= 4 and figures["out"].unique_values <= 4


def test_tflite_stage_figures_and_layer_names():
    from kopt.export import to_tflite, weight_tensors

    model = tiny_cnn()
    x, y, _, _ = digits(train=64)
    tflite = to_tflite(model, representative_data=x)
    stage = compression(tflite, data=(x, y))
    tensors = weight_tensors(tflite)
    assert [layer.name for layer in stage.layers] == [t.name.split(";")[0] for t in tensors]
    assert [layer.layer for layer in stage.layers] == [None, None]  # no layer names given
    assert stage.tflite_bytes == len(tflite)
    assert stage.int8_accuracy is not None and stage.edgetpu["fully_mapped"]
    assert all(layer.bits == 8 for layer in stage.layers)
    assert stage.layers[0].zipped_bytes == zipped_bytes([tensors[0].values])

    from kopt.report.summary import tflite_stage

    named = tflite_stage("int8", tflite, layer_names=["conv", "fc", "flat"])
    assert [layer.layer for layer in named.layers] == ["conv", "fc"]

    # printed, a stage is its summary line and a Markdown table (one row per weight tensor), not a dataclass dump
    text = str(stage)
    assert text == stage.to_markdown() and not text.startswith("StageReport(")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(tensors) and text.splitlines()[0] == stage.summary()
    assert json.loads(stage.to_json())["tflite_bytes"] == len(tflite)


@pytest.mark.backends
def test_tflite_layer_name_reads_converter_tensor_names():
    names = ["conv", "conv_1", "fc", "block_2"]
    assert tflite_layer_name("tiny_1/quant_conv_1/conv_1/convolution;tiny_1/x", names) == "conv_1"
    assert tflite_layer_name("tiny_1/fc_1/MatMul", names) == "fc"
    assert tflite_layer_name("model_3/quant_fc_2/BiasAdd", names) == "fc"
    assert tflite_layer_name("model/block_2_1/Conv2D", names) == "block_2"
    assert tflite_layer_name("arith.constant12", names) is None


@pytest.mark.backends
def test_report_formats():
    baseline = keras_stage("baseline", tiny_dense(), metrics={"accuracy": 0.9, "loss": 0.3})
    int8 = StageReport(
        name="int8",
        int8_accuracy=0.88,
        tflite_bytes=4000,
        tflite_zipped_bytes=3000,
        edgetpu={
            "fully_mapped": False,
            "num_mapped": 3,
            "num_ops": 4,
            "errors": [],
            "first_unsupported": {"index": 2, "op": "LEAKY_RELU", "tensor": "leaky", "reason": "not supported"},
            "unmapped": [],
            "table": "LEAKY_RELU 1 not supported",
        },
    )
    report = Report(model_name="mlp", policy={"name": "qat", "target": "edgetpu"}, stages=[baseline, int8], warnings=["w1"])
    data = json.loads(report.to_json())
    assert [s["name"] for s in data["stages"]] == ["baseline", "int8"]
    assert data["stages"][0]["keras_accuracy"] == 0.9
    assert data["stages"][0]["layers"][0]["name"] == "hidden"
    assert data["edgetpu"]["first_unsupported"]["op"] == "LEAKY_RELU"
    markdown = report.to_markdown()
    assert "| baseline | 0.9000 | - |" in markdown and "| int8 | - | 0.8800 |" in markdown
    assert "**NOT fully mapped**" in markdown and "#2 LEAKY_RELU [leaky]" in markdown
    assert "- warning: w1" in markdown
    assert "| hidden | Dense |" in markdown
    assert report.final is int8 and report.stage("baseline") is baseline
    with pytest.raises(KeyError, match="No stage 'cluster'"):
        report.stage("cluster")
    assert str(report).splitlines()[1].startswith("int8")


@pytest.mark.backends
def test_report_save(tmp_path):
    report = Report(model_name="mlp", policy={"name": "prune"}, stages=[keras_stage("baseline", tiny_dense())])
    json_path, md_path = report.save(tmp_path / "r")
    assert json.loads(json_path.read_text())["model"] == "mlp"
    assert md_path.read_text().startswith("# kopt report: mlp")


@pytest.mark.backends
def test_unique_values_are_counted_per_output_channel_in_every_stage():
    """A kernel clustered to 4 values then scaled per channel (a folded BatchNorm) still has 4 per channel."""
    from kopt.report import unique_per_channel

    rng = np.random.default_rng(0)
    clustered = rng.choice([-0.5, -0.1, 0.2, 0.7], size=(3, 3, 1, 8)).astype("float32")
    folded = clustered * np.arange(1, 9, dtype="float32")  # one scale per output channel
    assert len(np.unique(folded)) > 4
    assert unique_per_channel(folded, (-1,)) == 4
    assert unique_per_channel(folded, None) == len(np.unique(folded))
    depthwise = np.moveaxis(folded, -1, -2)  # (3, 3, 8, 1): channels on axes (-2, -1)
    assert unique_per_channel(depthwise, (-2, -1)) == 4

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.DepthwiseConv2D(3, depth_multiplier=1, name="dw")(
        keras.layers.Conv2D(8, 3, name="conv")(inputs))
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").kernel.assign(folded)
    model.get_layer("dw").kernel.assign(np.moveaxis(rng.choice([1.0, 2.0], size=(3, 3, 8, 1)) *
                                                    np.arange(1, 9)[None, None, :, None], 2, 2).astype("float32"))
    figures = {layer.name: layer for layer in keras_stage("cluster", model).layers}
    assert figures["conv"].unique_values == 4 and figures["dw"].unique_values == 2
