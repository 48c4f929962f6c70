"""Bad data is refused before the first training step, with the argument and the first bad index named."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kopt
from kopt.core.data import check_data
from kopt.core.errors import InvalidArgumentError, UnsupportedModelError
from tests.optimize_testing import compile_model, digits, tiny_dense


class StepCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.steps += 1


def corrupt(kind: str, index: int, x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """One kind of bad data, placed at ``index``."""
    x, y, w = x.copy(), y.copy(), w.copy()
    if kind == "nan_x":
        x[index, 2, 3, 0] = np.nan
    elif kind == "inf_weight":
        w[index] = np.inf
    elif kind == "label_range":
        y[index] = 10 + index % 3
    elif kind == "negative_label":
        y[index] = -1
    elif kind == "empty":
        x, y, w = x[:0], y[:0], w[:0]
    elif kind == "short_labels":
        y = y[: short_length(index)]
    elif kind == "sample_shape":
        x = x[:, :, :7]
    elif kind == "text":
        x = x.astype(str)
    elif kind == "one_hot_with_sparse_loss":
        y = np.eye(10, dtype="float32")[y]
    return x, y, w


def short_length(index, samples=64):
    """1 to ``samples - 1`` labels (``index + 1`` labels would keep them all for the largest index: not short)."""
    return index % (samples - 1) + 1


KINDS = ["nan_x", "inf_weight", "label_range", "negative_label", "empty", "short_labels", "sample_shape", "text",
         "one_hot_with_sparse_loss"]
MESSAGES = {
    "nan_x": "train_data x holds NaN or Inf (first in sample {i}",
    "inf_weight": "train_data sample_weight holds NaN or Inf (first in sample {i}",
    "label_range": "at index {i} is not a class",
    "negative_label": "label -1 at index {i}",
    "empty": "train_data x is empty",
    "short_labels": "{n} labels for 64 input samples",
    "sample_shape": "samples of shape (8, 7, 1) do not fit the model's input shape (8, 8, 1)",
    "text": "has dtype <U",
    "one_hot_with_sparse_loss": "look one-hot, but the loss 'sparse_categorical_crossentropy'",
}


@pytest.fixture(scope="module")
def model():
    return compile_model(tiny_dense())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), index=st.integers(0, 63), policy=st.sampled_from(["prune", "pcqat", "qat"]))
def test_optimize_refuses_corrupted_data_before_any_training_step(model, kind, index, policy):
    x, y, _, _ = digits(train=64)
    x, y, w = corrupt(kind, index, x, y, np.ones(64, "float32"))
    counter = StepCounter()
    with pytest.raises(InvalidArgumentError) as error:
        kopt.optimize(model, policy, train_data=(x, y, w), epochs=1, verbose=0, callbacks=[counter])
    assert MESSAGES[kind].format(i=index, n=short_length(index)) in str(error.value)
    assert counter.steps == 0


def test_validation_and_representative_data_are_checked_too(model):
    x, y, xv, yv = digits(train=64, val=32)
    xv = xv.copy()
    xv[5, 0, 0, 0] = np.inf
    with pytest.raises(InvalidArgumentError, match=r"validation_data x holds NaN or Inf \(first in sample 5"):
        kopt.optimize(model, "prune", train_data=(x, y), validation_data=(xv, yv), verbose=0)
    with pytest.raises(InvalidArgumentError, match="representative_data: samples of shape"):
        kopt.optimize(model, "ptq", train_data=(x, y), representative_data=x[:, :4], verbose=0)


def test_datasets_are_checked_on_their_first_batch(model):
    import tensorflow as tf

    x, y, _, _ = digits(train=64)
    with pytest.raises(InvalidArgumentError, match="tf.data.Dataset yields no element"):
        check_data(model, tf.data.Dataset.from_tensor_slices((x, y)).take(0), argument="train_data")
    bad = y.copy()
    bad[3] = 12
    with pytest.raises(InvalidArgumentError, match=r"train_data \(first batch\) y: label 12 at index 3"):
        check_data(model, tf.data.Dataset.from_tensor_slices((x, bad)).batch(16), argument="train_data",
                   loss="sparse_categorical_crossentropy")
    check_data(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), argument="train_data")  # fine


def test_one_hot_labels_are_right_for_a_categorical_loss_and_indices_are_not(model):
    x, y, _, _ = digits(train=32)
    check_data(model, (x, np.eye(10)[y]), argument="train_data", loss="categorical_crossentropy")
    with pytest.raises(InvalidArgumentError, match="are class indices, but the loss 'categorical_crossentropy'"):
        check_data(model, (x, y), argument="train_data", loss=keras.losses.CategoricalCrossentropy())


def test_a_string_or_unbuilt_model_is_an_unsupported_model():
    x, y, _, _ = digits(train=32)
    with pytest.raises(UnsupportedModelError, match="needs a keras.Model, got str"):
        kopt.optimize("model.keras", "prune", train_data=(x, y))
    with pytest.raises(UnsupportedModelError, match="is not built"):
        kopt.optimize(keras.Sequential([keras.layers.Dense(3)]), "prune", train_data=(x, y))


def test_multi_input_data_by_name_or_in_order():
    first, second = keras.Input((3,), name="b"), keras.Input((5,), name="a")
    merged = keras.layers.Concatenate()([first, second])
    model = keras.Model({"b": first, "a": second}, keras.layers.Dense(4, activation="softmax")(merged))
    x = {"a": np.zeros((6, 5), "float32"), "b": np.ones((6, 3), "float32")}  # keys sort unlike the inputs
    check_data(model, (x, np.zeros(6, int)), argument="train_data", loss="sparse_categorical_crossentropy")
    with pytest.raises(InvalidArgumentError, match="has 2 input"):
        check_data(model, (x["a"], np.zeros(6, int)), argument="train_data")
    x["b"][2, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"holds NaN or Inf \(first in sample 2"):
        check_data(model, (x, np.zeros(6, int)), argument="train_data")


# ------------------------------------------------- to_tflite / evaluate: refused before any work
class Counter:
    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


INPUT_KINDS = ["nan_x", "inf_x", "empty", "sample_shape", "text"]
INPUT_MESSAGES = {
    "nan_x": "holds NaN or Inf (first in sample {i}",
    "inf_x": "holds NaN or Inf (first in sample {i}",
    "empty": "empty",
    "sample_shape": "(8, 7, 1)",
    "text": "dtype <U",
}


def corrupt_inputs(kind: str, index: int, x: np.ndarray) -> np.ndarray:
    x = x.copy()
    if kind == "nan_x":
        x[index, 1, 2, 0] = np.nan
    elif kind == "inf_x":
        x[index, 7, 7, 0] = -np.inf
    elif kind == "empty":
        x = x[:0]
    elif kind == "sample_shape":
        x = x[:, :, :7]
    elif kind == "text":
        x = x.astype(str)
    return x


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(INPUT_KINDS), index=st.integers(0, 31))
def test_to_tflite_refuses_corrupted_calibration_data_before_converting(model, monkeypatch, kind, index):
    from kopt.export import lowering, to_tflite

    x, _, _, _ = digits(train=32)
    converter = Counter(lowering._lower)
    monkeypatch.setattr(lowering, "_lower", converter)
    with pytest.raises(InvalidArgumentError) as error:
        to_tflite(model, representative_data=corrupt_inputs(kind, index, x))
    assert INPUT_MESSAGES[kind].format(i=index) in str(error.value)
    assert converter.calls == 0


@pytest.fixture(scope="module")
def tflite(model):
    from kopt.export import to_tflite

    return to_tflite(model, representative_data=digits(train=32)[0])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([*INPUT_KINDS, "short_labels", "nan_label", "text_labels"]), index=st.integers(0, 31))
def test_evaluate_refuses_corrupted_data_before_running_the_interpreter(tflite, monkeypatch, kind, index):
    from kopt.export import evaluate, runtime

    x, y, _, _ = digits(train=32)
    y = y.astype("float32")
    if kind == "short_labels":
        y = y[: short_length(index, samples=32)]
    elif kind == "nan_label":
        y[index] = np.nan
    elif kind == "text_labels":
        y = y.astype(str)
    else:
        x = corrupt_inputs(kind, index, x)
    interpreter = Counter(runtime.run)
    monkeypatch.setattr(runtime, "run", interpreter)
    with pytest.raises(InvalidArgumentError) as error:
        evaluate(tflite, x, y)
    expected = {"short_labels": f"{short_length(index, samples=32)} labels for 32 input samples", "nan_label": f"first in sample {index}",
                "text_labels": "evaluate y has dtype <U"}.get(kind) or INPUT_MESSAGES[kind].format(i=index)
    if kind == "sample_shape":
        expected = "samples of shape (8, 7, 1) do not fit the model's input shape (8, 8, 1)"  # the .tflite's shape
    assert expected in str(error.value)
    assert interpreter.calls == (1 if kind == "sample_shape" else 0)  # shapes: checked in run, before any invoke


# ------------------------------------------------------------- multi-output models (defect 2)
def two_output_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(hidden)
    parity = keras.layers.Dense(2, activation="softmax", name="parity")(hidden)
    model = keras.Model(inputs, [digit, parity], name="two_heads")
    model.compile("adam", ["sparse_categorical_crossentropy"] * 2, metrics=[["accuracy"], ["accuracy"]])
    return model


def test_multi_output_labels_are_checked_per_output_before_training():
    x, y, _, _ = digits(train=32)
    model = two_output_model()
    counter = StepCounter()
    with pytest.raises(InvalidArgumentError, match=r"has 2 outputs \['digit', 'parity'\]; give one label array per output"):
        kopt.optimize(model, "qat", train_data=(x, y), verbose=0, callbacks=[counter])
    bad = (y % 2).copy()
    bad[4] = 3
    with pytest.raises(InvalidArgumentError, match=r"train_data y \(output 'parity'\): label 3 at index 4 .* 2-way output"):
        kopt.optimize(model, "qat", train_data=(x, (y, bad)), verbose=0, callbacks=[counter])
    with pytest.raises(InvalidArgumentError, match=r"labels for output\(s\) \['parity'\] are missing"):
        check_data(model, (x, {"digit": y}), argument="train_data")
    assert counter.steps == 0


def test_optimize_a_multi_output_model_with_a_preset_reports_accuracy_per_output():
    """Defect 2: it trained and converted, then crashed in report.py (operands could not be broadcast)."""
    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits(train=64, val=32)
    result = kopt.optimize(two_output_model(), "qat", train_data=(x, (y, y % 2)), validation_data=(xv, (yv, yv % 2)),
                           epochs=1, verbose=0)
    baseline, quantized, int8 = result.report.stages
    assert set(baseline.output_accuracies) == {"digit_accuracy", "parity_accuracy"}
    assert len(quantized.output_accuracies) == 2 and baseline.keras_accuracy is None
    assert "keras digit_accuracy" in baseline.summary()
    assert int8.int8_accuracy is None and int8.accuracy is None
    # int8 accuracy per output, against NumPy's top-1 of the same file's outputs (in the Keras model's order)
    outputs = kopt.export.run(result.tflite, xv)
    assert [o.shape[-1] for o in outputs] == [10, 2]
    names = result.model.output_names
    expected = {names[0]: np.mean(outputs[0].argmax(-1) == yv), names[1]: np.mean(outputs[1].argmax(-1) == yv % 2)}
    assert int8.int8_output_accuracies == pytest.approx(expected)
    assert f"int8 {names[0]} acc" in int8.summary()


def test_a_single_output_model_keeps_its_accuracy_beside_other_accuracy_metrics():
    from kopt.report.summary import StageReport

    metrics = {"loss": 0.3, "accuracy": 0.9, "sparse_top_k_categorical_accuracy": 0.99}
    assert StageReport("s", keras_metrics=metrics).keras_accuracy == 0.9
    two = StageReport("s", keras_metrics={"digit_accuracy": 0.8, "parity_accuracy": 0.7}, outputs=2)
    assert two.keras_accuracy is None and two.accuracy is None
    assert "keras digit_accuracy 0.8000, parity_accuracy 0.7000" in two.summary()


def test_int8_accuracy_is_measured_only_for_outputs_keras_measures_accuracy_for():
    from kopt.pipeline.runner import classified_outputs

    model = two_output_model()
    metrics = {"loss": 1.0, "digit_loss": 0.5, "digit_accuracy": 0.9, "parity_loss": 0.2}  # parity: a regression
    assert classified_outputs(model, metrics) == ["digit"]
    assert classified_outputs(model, {"loss": 1.0}) == []
