"""inspect / weight_tensors / sizes on a converted model whose weights we shaped on purpose."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
from export_testing import fixture_path, uniform
from keras import layers

from kopt.export import inspect, tflite_size, to_tflite, weight_tensors, zipped_size

CENTROIDS = np.array([-0.3, 0.0, 0.2, 0.5], "float32")


def _shaped_model():
    """Conv kernel: 2:4 zeros along input channels and 4 shared values; Dense: 50% zeros, 4 values."""
    rng = np.random.default_rng(0)
    inp = keras.Input((6, 6, 8))
    conv = layers.Conv2D(8, 3)
    dense = layers.Dense(4)
    model = keras.Model(inp, dense(layers.Flatten()(conv(inp))))
    kernel = rng.choice(CENTROIDS[[0, 2, 3]], size=(3, 3, 8, 8))
    kernel.reshape(3, 3, 2, 4, 8)[:, :, :, :2, :] = 0.0  # in-channels 0,1 of every group of 4
    kernel[..., 0] = np.where(kernel[..., 0] == 0.5, 0.2, kernel[..., 0])  # channel 0 tops out at |-0.3|
    conv.set_weights([kernel.astype("float32"), np.zeros(8, "float32")])
    dense_kernel = rng.choice(CENTROIDS[[0, 2, 3]], size=(128, 4))
    dense_kernel[::2] = 0.0
    dense.set_weights([dense_kernel.astype("float32"), np.full(4, 0.1, "float32")])
    return model, kernel, dense_kernel


@pytest.fixture(scope="module")
def shaped():
    model, kernel, dense_kernel = _shaped_model()
    tflite = to_tflite(model, representative_data=uniform((16, 6, 6, 8)))
    return tflite, kernel, dense_kernel


def _weight(tflite, op):
    return next(w for w in weight_tensors(tflite) if w.op == op)


def test_weights_are_the_keras_kernels_in_tflite_layout(shaped):
    tflite, kernel, dense_kernel = shaped
    conv, dense = _weight(tflite, "CONV_2D"), _weight(tflite, "FULLY_CONNECTED")
    assert conv.values.dtype == np.int8 and conv.shape == (8, 3, 3, 8)
    expected_conv = kernel.transpose(3, 0, 1, 2)  # (kh, kw, in, out) -> (out, kh, kw, in)
    steps = conv.quantization.scales.reshape(-1, 1, 1, 1)
    assert np.all(np.abs(conv.dequantized() - expected_conv) <= steps / 2 + 1e-7)
    assert dense.shape == (4, 128)
    np.testing.assert_allclose(dense.dequantized(), dense_kernel.T, atol=dense.quantization.scales[0] / 2 + 1e-7)


def test_sparsity_and_n_m_pattern(shaped):
    tflite, kernel, _ = shaped
    conv, dense = _weight(tflite, "CONV_2D"), _weight(tflite, "FULLY_CONNECTED")
    assert dense.sparsity == pytest.approx(0.5)  # zeros stay exactly zero (weight zero point 0)
    assert conv.sparsity == pytest.approx(np.mean(kernel == 0))
    assert conv.follows_n_m(2, 4)  # along the TFLite input-channel axis
    assert dense.follows_n_m(2, 4)  # every other input is zero
    assert not dense.follows_n_m(1, 4)
    assert not conv.follows_n_m(2, 4, axis=0)  # output channels carry no pattern


def test_unique_values_whole_tensor_and_per_channel(shaped):
    tflite, _, _ = shaped
    conv, dense = _weight(tflite, "CONV_2D"), _weight(tflite, "FULLY_CONNECTED")
    assert dense.unique_values == 4  # three centroids and zero, per-tensor scale
    np.testing.assert_allclose(np.unique(dense.dequantized()), [-0.3, 0.0, 0.2, 0.5], atol=0.002)
    # Per-channel scales put the same centroids on another int8 grid in channel 0.
    assert conv.max_unique_per_channel == 4
    assert conv.unique_values == 6


def test_inspect_summary(shaped):
    tflite, _, _ = shaped
    summary = inspect(tflite)
    assert summary.op_counts == {"CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert set(summary.dtype_counts) == {"INT8", "INT32"}
    assert summary.size_bytes == len(tflite)
    assert summary.zipped_bytes == zipped_size(tflite)
    conv_weights = next(t for t in summary.tensors if t["shape"] == [8, 3, 3, 8])
    assert len(conv_weights["quantization"]["scales"]) == 8 and conv_weights["quantization"]["axis"] == 0
    assert {w["op"] for w in summary.weights} == {"CONV_2D", "FULLY_CONNECTED"}
    payload = json.loads(summary.to_json())
    assert payload["op_counts"]["CONV_2D"] == 1
    text = str(summary)
    assert "CONV_2D x1" in text and "sparsity" in text and "zipped" in text


def test_sizes(tmp_path):
    path = fixture_path("mobilenet_v1_0.25_128_quant")
    raw = open(path, "rb").read()
    assert tflite_size(path) == tflite_size(raw) == os.path.getsize(path)
    # The model-optimization docs' recipe: zip the file with DEFLATE and measure the archive.
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.write(path, arcname="model.tflite")
    assert zipped_size(path) == os.path.getsize(archive)
    assert zipped_size(raw) < tflite_size(raw)


@pytest.mark.backends
def test_zipped_size_rewards_zeros():
    dense = np.random.default_rng(1).integers(-127, 128, 50_000).astype(np.int8).tobytes()
    sparse = np.where(np.arange(50_000) % 2 == 0, 0, np.frombuffer(dense, np.int8)).astype(np.int8).tobytes()
    assert zipped_size(sparse) < 0.75 * zipped_size(dense)
