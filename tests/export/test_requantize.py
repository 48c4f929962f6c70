"""A QAT model lowered with calibration data: the input's DEQUANTIZE -> QUANTIZE float hop is folded away."""

import keras
import numpy as np
import pytest
from keras import ops

import kopt
from kopt.export import lowering, run, to_tflite
from kopt.export.diagnostics import float_ops
from kopt.export.flatbuffer import load
from kopt.export.requantize import fold_input_requantize

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="int8 lowering runs under TensorFlow")


class ReluDenseBlock(keras.layers.Layer):
    """Kept whole (its call reads the batch size); its first op, a ReLU, gets a calibrated range."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(ops.relu(x)) * ops.ones((ops.shape(x)[0], 1))


def test_the_float_requantize_after_an_input_is_folded_into_the_input():
    inputs = keras.Input((4,))
    qat = kopt.quantization.quantize_model(keras.Model(inputs, ReluDenseBlock(name="block")(inputs)))
    x = np.random.default_rng(0).uniform(-1, 1, size=(32, 4)).astype("float32")  # calibrates to about (-1, 1)
    with pytest.MonkeyPatch.context() as patch:  # the converter's own file, unchecked
        patch.setattr(lowering, "fold_input_requantize", lambda tflite: tflite)
        patch.setattr(lowering.diagnostics, "require_full_integer", lambda *args, **kwargs: None)
        raw = to_tflite(qat, representative_data=x)
    graph = load(raw).main
    assert [op.name for op in graph.operators] == ["DEQUANTIZE", "QUANTIZE", "RELU", "FULLY_CONNECTED"]
    assert graph.tensor(graph.operators[0].outputs[0]).dtype == "FLOAT32"  # int8 -> float -> int8
    requantized = graph.tensor(graph.operators[1].outputs[0]).quantization

    folded = fold_input_requantize(raw)
    graph = load(folded).main
    assert [op.name for op in graph.operators] == ["RELU", "FULLY_CONNECTED"] and not float_ops(folded)
    assert graph.tensor(graph.inputs[0]).quantization.scales[0] == requantized.scales[0]  # quantized once, to it
    step = graph.tensor(graph.outputs[0]).quantization.scales[0]
    expected = np.asarray(ops.convert_to_numpy(qat(x, training=False)))
    assert np.mean(np.abs(run(folded, x) - expected) <= 2 * step * (1 + 1e-3)) >= 0.99
    np.testing.assert_allclose(run(folded, x), run(raw, x), atol=step * (1 + 1e-3))  # at most one step apart
    assert fold_input_requantize(folded) == folded  # nothing left to fold: the file comes back unchanged
