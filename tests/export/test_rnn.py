"""Recurrent models lower to int8 (unrolled) instead of crashing the process in TF 2.21's converter."""

import keras
import numpy as np
import pytest
from keras import layers

from kopt.core.errors import UnsupportedLayerError
from kopt.export import NotFullyIntegerError, load_tflite, run, to_tflite
from kopt.export.rnn import rolled_recurrent_layers, unroll_recurrent_layers

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="lowering needs TensorFlow")


def digit_rows():
    """scikit-learn's digits as sequences: 8 time steps (image rows) of 8 features."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype("float32"), data.target.astype("int32")


def assert_fully_int8(tflite):
    """Unrolled (no WHILE / sequence op) and every op output int8 or int32: a float op or a DEQUANTIZE fails,
    an int8 -> int8 QUANTIZE (a requantize the converter may insert between ranges) does not."""
    graph = load_tflite(tflite).main
    names = {op.name for op in graph.operators}
    assert not names & {"WHILE", "UNIDIRECTIONAL_SEQUENCE_LSTM"}, names
    for op in graph.operators:
        for tensor in graph.output_tensors(op):
            assert tensor.dtype in ("INT8", "INT32"), (op.name, tensor.name, tensor.dtype)
    return names


def assert_known_float_split(error: NotFullyIntegerError) -> None:
    """TF 2.21's known gap on unrolled cells: a float SPLIT between DEQUANTIZE and QUANTIZE, and nothing else."""
    ops = [op for _, op, _ in error.float_ops]
    assert "SPLIT" in ops and set(ops) <= {"DEQUANTIZE", "SPLIT", "QUANTIZE"}, str(error)


@pytest.mark.slow
def test_lstm_classifier_lowers_to_int8_and_keeps_its_accuracy_in_litert():
    keras.utils.set_random_seed(0)
    x, y = digit_rows()
    inp = keras.Input((8, 8))
    model = keras.Model(inp, layers.Dense(10)(layers.LSTM(32)(inp)))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:1400], y[:1400], epochs=20, batch_size=32, verbose=0)
    keras_accuracy = model.evaluate(x[1400:], y[1400:], verbose=0)[1]
    assert rolled_recurrent_layers(model)  # the user's model is not changed
    try:
        tflite = to_tflite(model, representative_data=x[:100])
    except NotFullyIntegerError as error:  # the known converter gap (README), seen on some runs of the suite
        assert_known_float_split(error)
        return
    names = assert_fully_int8(tflite)
    assert {"FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL"} <= names
    lite = run(tflite, x[1400:])
    lite_accuracy = float(np.mean(lite.argmax(-1) == y[1400:]))
    assert keras_accuracy > 0.85 and lite_accuracy >= keras_accuracy - 0.02, (keras_accuracy, lite_accuracy)
    assert np.mean(lite.argmax(-1) == model.predict(x[1400:], verbose=0).argmax(-1)) >= 0.97


def assert_lowers_int8_close_to_keras(model, x):
    """Fully int8 and within 4 output steps of Keras on average, or the converter's known float-SPLIT gap."""
    try:
        tflite = to_tflite(model, representative_data=x)
    except NotFullyIntegerError as error:
        assert_known_float_split(error)
        return
    assert_fully_int8(tflite)
    output = load_tflite(tflite).main
    step = float(output.tensors[output.outputs[0]].quantization.scales[0])
    assert np.abs(run(tflite, x) - model.predict(x, verbose=0)).mean() < 4 * step


def test_gru_and_bidirectional_lstm_lower_and_run_or_name_the_converters_float_split():
    """Fully int8 and close to Keras, or the one known converter gap, named (README: not every RNN lowers yet).

    TF 2.21 sometimes (run to run, same inputs) leaves a float DEQUANTIZE -> SPLIT -> QUANTIZE island in the last
    unrolled step of a cell; then to_tflite must raise NotFullyIntegerError naming that cell and only those ops.
    """
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 3))
    h = layers.GRU(8, return_sequences=True)(inp)
    h = layers.Bidirectional(layers.LSTM(4))(h)
    model = keras.Model(inp, layers.Dense(3)(h))
    unrolled = unroll_recurrent_layers(model)
    assert rolled_recurrent_layers(unrolled) == []
    x = np.random.default_rng(0).normal(size=(40, 6, 3)).astype("float32")
    np.testing.assert_allclose(unrolled.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert_lowers_int8_close_to_keras(model, x)


def test_an_rnn_without_a_fixed_length_is_refused_before_the_converter_runs():
    inp = keras.Input((None, 3))
    model = keras.Model(inp, layers.Dense(2)(layers.LSTM(4, name="encoder")(inp)))
    x = np.zeros((4, 5, 3), "float32")
    with pytest.raises(UnsupportedLayerError, match="'encoder'.*fixed number of time steps.*keras.Input"):
        to_tflite(model, representative_data=x)


@keras.saving.register_keras_serializable(package="kopt_tests")
class OpenEncoder(layers.Layer):
    """A composite layer owning an LSTM (rolled) that kopt opens, so its LSTM is lowered unrolled."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.lstm = layers.LSTM(units)

    def build(self, input_shape):
        self.lstm.build(input_shape)

    def call(self, x):
        return self.lstm(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kopt_tests")
class Encoder(OpenEncoder):
    """The same composite, but kopt cannot open it: its call reads the batch size (``None`` when traced
    symbolically), so the LSTM stays hidden inside it."""

    def call(self, x):
        return self.lstm(x) * keras.ops.ones((keras.ops.shape(x)[0], 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)


@pytest.mark.slow
def test_a_rolled_rnn_inside_a_composite_layer_fails_in_a_child_process_with_a_clear_error():
    from kopt.export import ConversionError

    inp = keras.Input((5, 3))
    model = keras.Model(inp, layers.Dense(2)(Encoder(4, name="encoder")(inp)))
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    with pytest.raises(ConversionError, match=r"(?s)exited with code.*\['lstm.*'\] inside custom layers.*unroll=True"):
        to_tflite(model, representative_data=x)  # this process survives: the converter crashed in a child


@pytest.mark.slow
def test_a_rolled_rnn_inside_a_composite_kopt_opens_lowers_unrolled():
    inp = keras.Input((5, 3))
    model = keras.Model(inp, layers.Dense(2)(OpenEncoder(4, name="encoder")(inp)))
    x = np.random.default_rng(0).normal(size=(8, 5, 3)).astype("float32")
    assert_lowers_int8_close_to_keras(model, x)
