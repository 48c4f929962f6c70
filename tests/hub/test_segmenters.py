"""keras-hub segmentation backbones (tiny explicit configs) lower fully int8 after QAT."""

import keras
import numpy as np
import pytest

import kopt
from tests.hub.hub_models import segformer

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="int8 lowering needs TensorFlow")


@tf_only
@pytest.mark.slow
def test_segformer_qat_lowers_fully_int8():
    """The head's Resizing defaults to ``training=True``; lowering used to trace the Conv+BN+ReLU after it in
    training mode, and TFLite refused the unconverted FakeQuant ops ('activation_quant')."""
    from kopt.export import load_tflite, to_tflite

    keras.utils.set_random_seed(0)
    model = segformer()
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    qat = kopt.quantization.quantize_model(model)
    qat(x, training=True)
    graph = load_tflite(to_tflite(qat)).main
    names = {op.name for op in graph.operators}
    assert "RESIZE_BILINEAR" in names
    assert not names & {"QUANTIZE", "DEQUANTIZE", "READ_VARIABLE"}, names
    dtypes = {t.dtype for op in graph.operators for t in graph.output_tensors(op)}
    assert dtypes <= {"INT8", "INT32"}, dtypes
