"""End-to-end on real architectures (slow). The full 7-model table is benchmarks/coverage_qat.py."""

import keras
import pytest

from kopt.quantization import quantize_model

pytestmark = pytest.mark.slow


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="lowering needs TensorFlow")
def test_mobilenet_v2_lowers_fully_int8_and_maps_to_the_edge_tpu():
    from kopt.export import check_edgetpu, load_tflite, to_tflite

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
    qat, report = quantize_model(model, return_report=True)
    assert len(report.folded_batch_norms) == 52 and not report.float_layers
    tflite = to_tflite(qat)  # no representative data: the fake-quant ranges are used
    graph = load_tflite(tflite).main
    assert all(t.dtype == "INT8" for op in graph.operators for t in graph.output_tensors(op))
    assert not {"QUANTIZE", "DEQUANTIZE"} & {op.name for op in graph.operators}
    edgetpu = check_edgetpu(tflite)
    assert edgetpu.fully_mapped, str(edgetpu)


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_architectures_with_raw_ops_and_squeeze_excite_are_fully_covered(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    qat, report = quantize_model(model, return_report=True)
    assert report.float_layers == []
    assert report.folded_batch_norms


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="lowering needs TensorFlow")
def test_keras_applications_scale_layers_are_opened_and_lower_fully_int8():
    """InceptionResNetV2's CustomScaleLayer and ConvNeXt's LayerScale are custom layers of keras.applications:
    opened into keras.ops (and a Parameter for the per-channel scale), so QAT reaches them."""
    import numpy as np
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    from kopt.export import load_tflite, to_tflite
    from kopt.graph import analyze

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    branch = LayerScale(0.5, 4)(keras.layers.Conv2D(4, 1)(features))
    outputs = CustomScaleLayer(0.17)([features, branch])
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(outputs)))
    graph = analyze(model)
    assert graph.closed_composites == {}
    assert not {type(graph.layer(n)).__name__ for n in graph.layer_nodes()} & {"LayerScale", "CustomScaleLayer"}

    qat, report = quantize_model(model, return_report=True)
    assert report.float_layers == []
    x = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype("float32")
    for _ in range(2):
        qat(x, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(qat(x)), keras.ops.convert_to_numpy(model(x)), atol=0.15)
    graph = load_tflite(to_tflite(qat)).main
    assert not {"QUANTIZE", "DEQUANTIZE"} & {op.name for op in graph.operators}
    assert all(t.dtype in ("INT8", "INT32") for op in graph.operators for t in graph.output_tensors(op))
