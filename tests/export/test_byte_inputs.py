"""Images fed as bytes (a uint8 Input with Rescaling inside) lower to a fully integer file (issue #23, defect 7).

Before, every ``int8_io`` failed with NotFullyIntegerError telling the user to replace CAST/QUANTIZE "layers".
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from kopt.export import to_tflite
from kopt.export.flatbuffer import load


@pytest.fixture(scope="module")
def byte_model():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype("uint8")[..., None]
    y = digits.target
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1000], y[:1000], epochs=4, verbose=0)
    return model, x


@pytest.mark.parametrize("int8_io, dtype, zero_point", [("uint8", "UINT8", 0), ("int8", "INT8", -128)])
def test_a_uint8_rescaling_model_lowers_fully_integer_and_takes_the_bytes(byte_model, int8_io, dtype, zero_point):
    model, x = byte_model
    tflite = to_tflite(model, representative_data=x[:100], int8_io=int8_io)
    main = load(tflite).main
    ops = {op.name for op in main.operators}
    assert not ops & {"CAST", "DEQUANTIZE"}, ops
    (entry,) = [main.tensors[i] for i in main.inputs]
    assert entry.dtype == dtype
    assert entry.quantization.scales.tolist() == [1.0] and entry.quantization.zero_points.tolist() == [zero_point]

    # LiteRT fed the bytes directly (shifted by the zero point for int8), against Keras
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    test = x[1000:1300]
    scale, out_zero = taken["quantization"]
    lite = []
    for sample in test:
        fed = sample[None] if int8_io == "uint8" else (sample[None].astype(np.int16) - 128).astype(np.int8)
        interpreter.set_tensor(given["index"], fed)
        interpreter.invoke()
        lite.append((interpreter.get_tensor(taken["index"])[0].astype(np.float32) - out_zero) * scale)
    reference = model.predict(test, verbose=0)
    assert np.mean(np.argmax(lite, -1) == np.argmax(reference, -1)) >= 0.95
    assert np.max(np.abs(np.asarray(lite) - reference)) < 0.1
