"""to_tflite(sparse=True) against the dense file in LiteRT; mode="int16x8" against float and int8."""

import keras
import numpy as np
import pytest
from keras import layers

from kopt.core.errors import InvalidArgumentError
from kopt.export import MissingRangesError, check_edgetpu, load_tflite, run, to_tflite
from kopt.export import sparse as sparse_export
from kopt.export.micro import sparse_tensor_names


def _pruned_dense_model(sparsity=0.9):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((128,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(256, activation="relu"),
        layers.Dense(10),
    ])
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        kernel[np.abs(kernel) < np.quantile(np.abs(kernel), sparsity)] = 0.0
        layer.kernel.assign(kernel)
    return model


@pytest.fixture(scope="module")
def pruned():
    model = _pruned_dense_model()
    x = np.random.default_rng(1).normal(size=(48, 128)).astype("float32")
    dense = to_tflite(model, representative_data=x)
    sparse = to_tflite(model, representative_data=x, sparse=True)
    return model, x, dense, sparse


def test_sparse_file_of_a_90_percent_pruned_model_is_under_a_third_and_agrees(pruned):
    _, x, dense, sparse = pruned
    assert len(sparse) <= 0.3 * len(dense), (len(sparse), len(dense))
    assert len(sparse_tensor_names(sparse)) == 3 and not sparse_tensor_names(dense)
    # LiteRT on both files, raw int8 outputs: at most one quantization step apart.
    difference = run(sparse, x, dequantize=False).astype(int) - run(dense, x, dequantize=False).astype(int)
    assert np.abs(difference).max() <= 1
    report = sparse_export.compare(sparse, dense, x)
    assert report.agrees and report.size_ratio == len(sparse) / len(dense)
    assert report.dense_latency_us > 0 and report.sparse_latency_us > 0
    assert f"{len(sparse)} bytes raw" in str(report)


def test_check_edgetpu_says_the_edge_tpu_wants_the_dense_file(pruned):
    """The converter expands each sparse weight with a DENSIFY op, which the Edge TPU does not run."""
    _, _, dense, sparse = pruned
    sparse_report, dense_report = check_edgetpu(sparse), check_edgetpu(dense)
    densify = [v for v in sparse_report.ops if v.op == "DENSIFY"]
    assert len(densify) == 3 and not any(v.mapped for v in densify)
    assert all("compile the dense file" in " ".join(v.reasons) for v in densify)
    assert not sparse_report.fully_mapped and dense_report.fully_mapped


def _block_pruned_model():
    """90 % of the 1x16 blocks of TFLite's [out, in] kernels zeroed (16 consecutive inputs of one
    output); the first layer has 40 inputs, so its last block is partial (and kept for some outputs)."""
    keras.utils.set_random_seed(6)
    model = keras.Sequential([
        keras.Input((40,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(256, activation="relu"),
        layers.Dense(10),
    ])
    for layer in model.layers:
        kernel = layer.kernel.numpy()
        inputs, outputs = kernel.shape
        score = np.pad(np.abs(kernel), ((0, -inputs % 16), (0, 0))).reshape(-1, 16, outputs).mean(1)
        keep = score >= np.quantile(score, 0.9)  # by mean: the partial block competes like the others
        layer.kernel.assign(kernel * np.repeat(keep, 16, axis=0)[:inputs])
    return model


def test_block_sparse_kernel_litert_cannot_run_stays_dense_and_the_rest_agrees():
    model = _block_pruned_model()
    x = np.random.default_rng(6).normal(size=(64, 40)).astype("float32")
    dense = to_tflite(model, representative_data=x)
    with pytest.warns(RuntimeWarning, match=r"'dense/kernel' stays dense \(its dimension 1 has 40 entries, not a multiple"):
        sparse = to_tflite(model, representative_data=x, sparse=True)
    names = sparse_tensor_names(sparse)
    assert len(names) == 2 and "dense/kernel" not in names, names
    assert len(sparse) <= 0.3 * len(dense), (len(sparse), len(dense))
    difference = run(sparse, x, dequantize=False).astype(int) - run(dense, x, dequantize=False).astype(int)
    assert np.abs(difference).max() <= 1


def test_sparse_on_a_dense_model_warns_and_returns_the_dense_file():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((32,)), layers.Dense(64), layers.Dense(4)])
    x = np.random.default_rng(2).normal(size=(16, 32)).astype("float32")
    with pytest.warns(RuntimeWarning, match="returned dense: the converter stored no tensor as sparse"):
        result = to_tflite(model, representative_data=x, sparse=True)
    assert not sparse_tensor_names(result)
    assert len(result) == len(to_tflite(model, representative_data=x))


def _regression_model():
    """A 1-D signal regressor with a wide dynamic range inside: a large-gain feature and a small
    residual, the case where 8-bit activations lose precision."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((64, 1))
    h = layers.Conv1D(16, 5, padding="same", activation="tanh")(inputs)
    h = layers.Conv1D(16, 5, padding="same")(h)
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, layers.Dense(1)(layers.Dense(32, activation="relu")(h)))


def test_int16x8_runs_in_litert_with_int16_activations_and_is_closer_to_float():
    model = _regression_model()
    x = np.random.default_rng(3).normal(size=(96, 64, 1)).astype("float32")
    reference = model.predict(x, verbose=0)
    int8 = to_tflite(model, representative_data=x[:64])
    int16 = to_tflite(model, representative_data=x[:64], mode="int16x8")
    sg = load_tflite(int16).main
    assert sg.tensors[sg.inputs[0]].dtype == "INT16" and sg.tensors[sg.outputs[0]].dtype == "INT16"
    weights = [t for t in sg.tensors if t.data is not None and t.dtype in ("INT8", "INT16") and len(t.shape) > 1]
    assert weights and all(t.dtype == "INT8" for t in weights)
    error_8 = np.abs(run(int8, x[64:]) - reference[64:]).max()
    error_16 = np.abs(run(int16, x[64:]) - reference[64:]).max()
    assert error_16 < error_8 / 10, (error_16, error_8)
    float_io = to_tflite(model, representative_data=x[:64], mode="int16x8", int8_io=False)
    assert load_tflite(float_io).main.tensors[load_tflite(float_io).main.inputs[0]].dtype == "FLOAT32"


def test_int16x8_needs_representative_data():
    with pytest.raises(MissingRangesError, match="int16x8"):
        to_tflite(_regression_model(), mode="int16x8")
    with pytest.raises(ValueError, match="not uint8"):
        to_tflite(_regression_model(), mode="int16x8", representative_data=np.zeros((2, 64, 1), "float32"),
                  int8_io="uint8")


def _int16x8_qat_model():
    """The regression model trained with 16-bit activation fake-quants (the 'int16x8' scheme)."""
    from kopt.quantization import quantize_model

    model = _regression_model()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(128, 64, 1)).astype("float32")
    y = model.predict(x, verbose=0) + rng.normal(scale=0.01, size=(128, 1)).astype("float32")
    qat = quantize_model(model, "int16x8")
    qat.compile(keras.optimizers.Adam(1e-3), "mse")
    qat.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return qat, x


def test_int16x8_qat_lowers_from_its_own_ranges_and_litert_matches_its_fake_quant():
    qat, x = _int16x8_qat_model()
    tflite = to_tflite(qat, mode="int16x8")  # no representative data: the fake-quant ranges
    sg = load_tflite(tflite).main
    assert sg.tensors[sg.inputs[0]].dtype == "INT16" and sg.tensors[sg.outputs[0]].dtype == "INT16"
    activations = [t for t in sg.tensors if t.data is None and t.quantization.is_quantized]
    assert activations and all(t.dtype == "INT16" and (t.quantization.zero_points == 0).all() for t in activations)
    by_op = {op.label: [sg.tensors[i] for i in op.inputs if i >= 0] for op in sg.operators}
    assert by_op["CONV_2D"][1].dtype == "INT8" and by_op["CONV_2D"][2].dtype == "INT64"  # int32 is misread by LiteRT
    # LiteRT (the independent reference) against the Keras fake-quant model, in int16 output steps:
    # a few, since TFLite's int16 tanh (a fixed-range op Keras runs in float) is a lookup table.
    step = float(sg.tensors[sg.outputs[0]].quantization.scales[0])
    fake_quant = keras.ops.convert_to_numpy(qat(x[:64], training=False))
    assert np.abs(run(tflite, x[:64]) - fake_quant).max() <= 16 * step  # 1/2000 of the output range
    with pytest.raises(InvalidArgumentError, match="16-bit activation fake-quants.*mode='int16x8'"):
        to_tflite(qat)


def test_int16x8_without_data_refuses_an_8_bit_qat_model():
    from kopt.quantization import quantize_model

    with pytest.raises(MissingRangesError, match="'int16x8' scheme"):
        to_tflite(quantize_model(_regression_model()), mode="int16x8")
