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
