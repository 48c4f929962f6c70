"""TFLite Micro: LUT compression verified in the TFLM interpreter, check_micro's ops / flash / arena.

The reference is TFLM's own Python interpreter (``tflite_micro.runtime``) driven directly here,
not kopt's wrapper around it.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import layers

from kopt.export import check_micro, load_tflite, micro, to_tflite

tflm_runtime = pytest.importorskip("tflite_micro", reason="tflite-micro is a test dependency").runtime

LENGTH = 40


def _snap(kernel: np.ndarray, values: int, axis: int | None = None) -> np.ndarray:
    """Each weight replaced by the nearest of ``values`` evenly spaced centroids (per slice of ``axis``)."""
    if axis is None:
        centroids = np.linspace(kernel.min(), kernel.max(), values)
        return centroids[np.abs(kernel[..., None] - centroids).argmin(-1)].astype(kernel.dtype)
    moved = np.moveaxis(kernel, axis, 0)
    return np.moveaxis(np.stack([_snap(s, values) for s in moved]), 0, axis)


def _clustered_model(dense_values=8, conv_values=4):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((LENGTH, 1)),
        layers.Conv1D(16, 5, activation="relu", bias_initializer="zeros"),
        layers.Conv1D(16, 5, activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu", bias_initializer="glorot_uniform"),
        layers.Dense(10),
    ])
    first, conv, _, hidden, _head = model.layers
    for layer in (first, conv):
        layer.kernel.assign(_snap(layer.kernel.numpy(), conv_values, axis=-1))
    hidden.kernel.assign(_snap(hidden.kernel.numpy(), dense_values))
    return model


@pytest.fixture(scope="module")
def clustered():
    model = _clustered_model()
    x = np.random.default_rng(0).normal(size=(64, LENGTH, 1)).astype("float32")
    return model, x, to_tflite(model, representative_data=x)


def _tflm_outputs(tflite: bytes, samples: np.ndarray) -> np.ndarray:
    interpreter = tflm_runtime.Interpreter.from_bytes(tflite, arena_size=1 << 20)
    outputs = []
    for sample in samples:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)))
    return np.concatenate(outputs)


def _int8_inputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    q = load_tflite(tflite).main
    t = q.tensors[q.inputs[0]]
    scale, zero = float(t.quantization.scales[0]), int(t.quantization.zero_points[0])
    return np.clip(np.rint(x / scale) + zero, -128, 127).astype(np.int8)


def test_clustered_kernel_becomes_lut_indices_and_outputs_stay_bit_identical(clustered):
    _model, x, tflite = clustered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = micro.compress(tflite, x=x[:8])
    by_name = {c.name: c for c in result.compressed}
    hidden = next(c for c in result.compressed if c.shape == (64, (LENGTH - 8) * 16))
    assert hidden.bits == 3 and hidden.per_channel_axis is None, by_name
    packed = -(-hidden.shape[0] * hidden.shape[1] * 3 // 8)
    assert hidden.compressed_bytes <= packed + 16 + 8
    assert len(result.tflite) < len(tflite) - (hidden.original_bytes - hidden.compressed_bytes) + 1024
    decodes = [op for op in load_tflite(result.tflite).main.operators if op.custom_code == "TFLM_DECODE"]
    assert len(decodes) == len(result.compressed) >= 1
    samples = _int8_inputs(tflite, x[8:40])  # inputs the compressor never saw
    np.testing.assert_array_equal(_tflm_outputs(result.tflite, samples), _tflm_outputs(tflite, samples))


def test_per_channel_tensors_get_only_per_channel_tables_and_nothing_is_skipped(clustered):
    _, x, tflite = clustered
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # every offered layout verifies
        result = micro.compress(tflite, x=x[:8])
    conv = next(c for c in result.compressed if c.shape == (16, 1, 5, 16))  # 64 values, 4 per channel
    assert conv.per_channel_axis == 0 and conv.bits == 2, result
    assert not result.skipped


def test_a_layout_tflm_decodes_wrongly_stays_uncompressed_and_is_named(clustered, monkeypatch):
    """TFLM's DECODE takes one value table per scale of the tensor's quantization, so a per-tensor
    table on a per-channel conv kernel decodes to wrong weights (issue 26's 173-step difference).
    kopt no longer offers that layout; offered anyway, the TFLM check must catch it."""
    _, x, tflite = clustered
    monkeypatch.setattr(micro, "_lut_axes", lambda t, ndim: [None])
    with pytest.warns(RuntimeWarning, match="stay uncompressed") as record:
        result = micro.compress(tflite, x=x[:8])
    skipped = {s.name: s.reason for s in result.skipped}
    conv = next(name for name in skipped if "conv1d" in name and "kernel" in name)
    assert "outputs differ" in skipped[conv] and conv in str(record[0].message)
    assert conv not in {c.name for c in result.compressed} and result.compressed
    samples = _int8_inputs(tflite, x[40:])
    np.testing.assert_array_equal(_tflm_outputs(result.tflite, samples), _tflm_outputs(tflite, samples))


def test_to_tflite_target_micro_returns_the_verified_compressed_file(clustered):
    model, x, tflite = clustered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        compressed = to_tflite(model, representative_data=x, target="micro")
    report = check_micro(compressed)
    assert report.runs and report.compressed_tensors >= 1
    assert report.flash_bytes == len(compressed) < len(tflite)


def test_check_micro_arena_is_the_smallest_that_runs(clustered):
    _, x, tflite = clustered
    report = check_micro(tflite)
    assert report.runs and not report.unsupported
    assert report.flash_bytes == len(tflite)
    assert {op.op for op in report.ops} >= {"CONV_2D", "FULLY_CONNECTED"}
    sample = _int8_inputs(tflite, x[:1])
    interpreter = tflm_runtime.Interpreter.from_bytes(tflite, arena_size=report.arena_bytes)
    interpreter.set_input(sample, 0)
    interpreter.invoke()
    with pytest.raises(RuntimeError):
        tflm_runtime.Interpreter.from_bytes(tflite, arena_size=report.arena_bytes - 64)
    text = str(report)
    assert f"{report.flash_bytes} bytes" in text and f"{report.arena_bytes} bytes" in text
    assert report.fits(max_flash_bytes=len(tflite), max_arena_bytes=report.arena_bytes)
    assert not report.fits(max_flash_bytes=len(tflite) - 1)
    assert not report.fits(max_arena_bytes=report.arena_bytes - 1)


def test_check_micro_names_the_op_tflm_lacks():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 10), tf.float32)])
    def top3(x):
        return tf.math.top_k(tf.nn.relu(x), 3).values

    converter = tf.lite.TFLiteConverter.from_concrete_functions([top3.get_concrete_function()])
    report = check_micro(bytes(converter.convert()))
    assert not report.runs and report.arena_bytes is None
    assert [op.op for op in report.unsupported if op.reason == "not in TFLM's op resolver"] == ["TOPK_V2"]
    assert "TOPK_V2" in str(report)
    assert not report.fits()


def test_micro_target_needs_an_integer_model(clustered):
    model, _, _ = clustered
    with pytest.raises(ValueError, match="target='micro' needs an integer model"):
        to_tflite(model, mode="float16", target="micro")
    with pytest.raises(ValueError, match="target must be one of"):
        to_tflite(model, mode="float16", target="mcu")


def test_what_tflm_does_not_read_is_left_out_and_outputs_stay_bit_identical(clustered):
    from kopt.export.flatbuffer import read_object

    _, x, tflite = clustered
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = micro.compress(tflite, x=x[:8], trim=False)
        trimmed = micro.compress(tflite, x=x[:8])
    assert len(trimmed.trims) == 3 and not trimmed.untrimmed and not full.trims
    # Per-channel zero points are int64: one 8-byte value per channel beyond the first, at least.
    per_channel = [t for t in load_tflite(tflite).main.tensors if t.data is not None and t.quantization.per_channel]
    assert per_channel
    assert len(full.tflite) - len(trimmed.tflite) >= sum(8 * (t.quantization.scales.size - 1) for t in per_channel)
    obj = read_object(trimmed.tflite)
    assert not obj.signatureDefs and not obj.metadata
    sg = obj.subgraphs[0]
    constants = [t for t in sg.tensors if t.buffer and obj.buffers[t.buffer].data is not None and t.quantization]
    assert constants and all(t.quantization.zeroPoint is None or len(t.quantization.zeroPoint) <= 1 for t in constants)
    decode_inputs = {i for op in sg.operators
                     if obj.operatorCodes[op.opcodeIndex].customCode == b"TFLM_DECODE" for i in op.inputs}
    assert decode_inputs and all(sg.tensors[i].quantization is None for i in decode_inputs)
    samples = _int8_inputs(tflite, x[8:40])  # inputs the compressor never saw; TFLM directly
    np.testing.assert_array_equal(_tflm_outputs(trimmed.tflite, samples), _tflm_outputs(tflite, samples))
    assert check_micro(trimmed.tflite).runs
