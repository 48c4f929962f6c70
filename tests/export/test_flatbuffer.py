"""The flatbuffer view agrees with the LiteRT interpreter's own reading of the same files."""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from export_testing import fixture_path

from kopt.export.flatbuffer import load, read_bytes, read_object, to_bytes

pytestmark = pytest.mark.backends


def test_tensors_match_the_interpreter():
    path = fixture_path("mobilenet_v1_0.25_128_quant")
    model = load(path)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    sg = model.main
    assert len(sg.tensors) == len(details)
    for t in sg.tensors:
        d = details[t.index]
        assert t.name == d["name"]
        assert t.shape == tuple(d["shape"])
        assert np.dtype(d["dtype"]).name == t.dtype.lower()
        np.testing.assert_allclose(t.quantization.scales, d["quantization_parameters"]["scales"], rtol=1e-7)
        np.testing.assert_array_equal(t.quantization.zero_points, d["quantization_parameters"]["zero_points"])
        if t.is_constant:
            np.testing.assert_array_equal(t.data, interpreter.get_tensor(t.index))


def test_operators_in_execution_order_with_versions():
    sg = load(fixture_path("keras_lstm_mnist_ptq")).main
    assert [(op.name, op.version) for op in sg.operators] == [
        ("QUANTIZE", 1),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", 1),
        ("RESHAPE", 1),
        ("FULLY_CONNECTED", 4),
        ("SOFTMAX", 2),
        ("QUANTIZE", 1),
    ]
    lstm = sg.operators[1]
    assert -1 in lstm.inputs  # omitted optional inputs stay -1
    assert sg.tensor(-1) is None
    assert sg.consumers(sg.inputs[0]) == [sg.operators[0]]


def test_custom_op_and_options():
    compiled = load(fixture_path("split_concat_edgetpu")).main.operators
    assert compiled[0].label == "CUSTOM:edgetpu-custom-op"
    conv = load(fixture_path("mobilenet_v1_0.25_128_quant")).main.operators[0]
    assert conv.option("strideH") == 2 and conv.fused_activation == "RELU6"


def test_sources_and_round_trip(tmp_path):
    raw = read_bytes(fixture_path("split_concat"))
    assert read_bytes(bytearray(raw)) == raw
    assert read_bytes(load(raw)) == raw
    again = load(to_bytes(read_object(raw)))
    assert [op.label for op in again.main.operators] == [op.label for op in load(raw).main.operators]
    with pytest.raises(ValueError, match="TFL3"):
        load(b"definitely not a flatbuffer")
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "missing.tflite"))
    with pytest.raises(TypeError):
        load(42)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.95])
def test_truncated_files_raise_one_clear_error_from_the_library(fraction):
    from kopt.export import check_edgetpu, inspect
    from kopt.export.flatbuffer import CorruptTFLiteError

    raw = read_bytes(fixture_path("split_concat"))
    damaged = raw[: int(len(raw) * fraction)]
    for reader in (load, inspect, check_edgetpu):
        with pytest.raises(CorruptTFLiteError, match="truncated or corrupted"):
            reader(damaged)
