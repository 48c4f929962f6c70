"""run / evaluate: I/O quantization checked against TFLite's own QUANTIZE and DEQUANTIZE ops."""

import keras
import numpy as np
import pytest
from export_testing import fixture_path, qat_model, uniform
from keras import layers

from kopt.export import evaluate, run, to_tflite


@pytest.fixture(scope="module")
def int8_and_float_io():
    model = qat_model()
    return model, to_tflite(model), to_tflite(model, int8_io=False)


def test_int8_io_quantization_matches_tflite_quantize_op(int8_and_float_io):
    _, int8_io, float_io = int8_and_float_io
    x = uniform((12, 8, 8, 3), seed=2)
    step = 2 / 255  # input range [-1, 1]
    x[:4] = (np.round(x[:4] / step) + 0.5) * step  # exact half steps: rounding direction matters
    # float_io quantizes inside TFLite (QUANTIZE) and dequantizes (DEQUANTIZE); run() does it in NumPy.
    np.testing.assert_array_equal(run(int8_io, x), run(float_io, x))


def test_int8_arrays_are_fed_unchanged_and_outputs_can_stay_int8(int8_and_float_io):
    _, tflite, _ = int8_and_float_io
    x = uniform((3, 8, 8, 3), seed=3)
    q = np.clip(np.rint(x / np.float32(2 / 255)), -128, 127).astype(np.int8)
    raw = run(tflite, q, dequantize=False)
    assert raw.dtype == np.int8
    np.testing.assert_allclose(run(tflite, q), (raw.astype(np.float32) + 128) / 256, rtol=1e-6)
    np.testing.assert_array_equal(run(tflite, q), run(tflite, x))


def test_batch_is_fed_one_sample_at_a_time(int8_and_float_io):
    model, tflite, _ = int8_and_float_io
    x = uniform((7, 8, 8, 3), seed=4)
    together = run(tflite, x)
    one_by_one = np.concatenate([run(tflite, x[i : i + 1]) for i in range(7)])
    np.testing.assert_array_equal(together, one_by_one)
    assert np.max(np.abs(together - model.predict(x, verbose=0))) <= 1.5 / 256


def test_dynamic_batch_and_multiple_outputs():
    inp = keras.Input((5,))
    h = layers.Dense(4)(inp)
    model = keras.Model(inp, [layers.Dense(2)(h), layers.Dense(3)(h)])
    x = uniform((6, 5))
    tflite = to_tflite(model, representative_data=x, batch_size=None)
    outputs = run(tflite, x)
    expected = model.predict(x, verbose=0)
    assert isinstance(outputs, list) and len(outputs) == 2
    matched = sorted(outputs, key=lambda a: a.shape[-1])
    for got, want in zip(matched, sorted(expected, key=lambda a: a.shape[-1])):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 0.05


def test_outputs_come_back_in_the_keras_models_order_past_ten_outputs():
    # The signature lists output_0 ... output_11 sorted as text (output_10 before output_2).
    inp = keras.Input((5,))
    h = layers.Dense(8, activation="relu")(inp)
    model = keras.Model(inp, [layers.Dense(width, name=f"head_{width}")(h) for width in range(2, 14)])
    x = uniform((6, 5))
    outputs = run(to_tflite(model, representative_data=x, batch_size=None), x)
    expected = model.predict(x, verbose=0)
    assert [o.shape[-1] for o in outputs] == list(range(2, 14))
    for got, want in zip(outputs, expected):
        assert np.max(np.abs(got - want)) < 0.1


def test_evaluate_accepts_int_and_one_hot_labels(int8_and_float_io):
    model, tflite, _ = int8_and_float_io
    x = uniform((20, 8, 8, 3), seed=5)
    labels = model.predict(x, verbose=0).argmax(-1)
    labels[:5] = (labels[:5] + 1) % 4  # five wrong on purpose
    one_hot = np.eye(4)[labels]
    accuracy = evaluate(tflite, x, labels)
    assert accuracy == evaluate(tflite, x, one_hot)
    assert 0.7 <= accuracy <= 0.75


@pytest.mark.backends
def test_runs_coral_uint8_model():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 128, 128, 3)).astype("float32")
    probabilities = run(fixture_path("mobilenet_v1_0.25_128_quant"), x)
    assert probabilities.shape == (2, 1001) and probabilities.dtype == np.float32
    # uint8 softmax output: scale 1/256, zero point 0 -> probabilities on a 1/256 grid summing to ~1.
    np.testing.assert_allclose(probabilities * 256, np.round(probabilities * 256), atol=1e-4)
    assert np.all(probabilities >= 0) and np.all((probabilities.sum(-1) > 0.8) & (probabilities.sum(-1) <= 1.01))


@pytest.mark.backends
def test_input_errors():
    path = fixture_path("split_concat")  # three inputs
    with pytest.raises(ValueError, match="list or a dict"):
        run(path, np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="2 input arrays"):
        run(path, [np.zeros((1, 8, 8, 3))] * 2)
    with pytest.raises(ValueError, match="missing"):
        run(path, {"nope": np.zeros((1, 8, 8, 3))})
