"""Issue 20's accuracy check: a tiny keras-hub ViT trained on scikit-learn's digits keeps its accuracy
through ``kopt.optimize(model, "qat")`` in the int8 .tflite (LiteRT), and the int8 outputs sit within
two output steps of the fake-quant model."""

import keras
import numpy as np
import pytest

import kopt
from tests.hub.hub_models import classifier, digits_32, vit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="int8 lowering needs TensorFlow"),
]


def test_tiny_vit_on_digits_keeps_its_accuracy_in_int8_and_matches_the_fake_quant_model():
    from kopt.export import load_tflite, run

    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = digits_32(channels=1)
    model = classifier(vit(image_shape=(32, 32, 1)))
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=12, batch_size=64, verbose=0)
    float_accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)

    result = kopt.optimize(model, "qat", train_data=(x, y), epochs=1, batch_size=64, verbose=0)
    graph = load_tflite(result.tflite).main
    assert not {op.name for op in graph.operators} & {"QUANTIZE", "DEQUANTIZE", "NEG"}
    int8 = run(result.tflite, x_test)
    int8_accuracy = np.mean(np.argmax(int8, -1) == y_test)
    assert float_accuracy > 0.85, float_accuracy  # the float model learned the task
    assert int8_accuracy >= float_accuracy - 0.015, (float_accuracy, int8_accuracy)

    step = float(graph.tensors[graph.outputs[0]].quantization.scales[0])
    steps = np.abs(np.asarray(result.model.predict(x_test, verbose=0)) - int8) / step
    assert np.mean(steps <= 2.0 + 1e-3) >= 0.99, np.mean(steps <= 2.0 + 1e-3)
