"""Converter failures and float leftovers are traced back to Keras layers."""

from types import SimpleNamespace

import pytest
from export_testing import REFERENCE_PAIRS, fixture_path

from kopt.export.diagnostics import conversion_error, float_ops, layer_for

pytestmark = pytest.mark.backends

LAYERS = {"dense": "Dense", "dense_1": "Dense", "odd_one": "Lambda", "block": "Functional", "conv": "Conv2D"}


def test_layer_for_reads_tf_scopes():
    assert layer_for("functional_1/odd_one_1/erfinv/Erfinv@__inference_call_110", LAYERS) == "odd_one"
    assert layer_for("functional_1/dense_1/MatMul", LAYERS) == "dense_1"  # an exact name wins
    assert layer_for("functional_1/block_1/conv_1/Relu;functional_1/block_1/conv_1/BiasAdd", LAYERS) == "conv"
    assert layer_for("tfl.quantize;functional_1/dense_2/MatMul", LAYERS) == "dense"
    assert layer_for("StatefulPartitionedCall:0", LAYERS) is None


def test_conversion_error_from_structured_converter_errors():
    item = SimpleNamespace(
        operator=SimpleNamespace(name="tf.Erfinv"),
        location=SimpleNamespace(
            name="",
            call=[SimpleNamespace(name="functional_1/odd_one_1/erfinv/Erfinv@__inference___call___110")],
        ),
        error_message="'tf.Erfinv' op is neither a custom op nor a flex op\nsee current operation",
    )
    raw = Exception("Could not translate MLIR to FlatBuffer. 'tf.Erfinv' op is neither a custom op nor a flex op")
    raw.errors = [item]
    error = conversion_error(raw, LAYERS)
    assert (error.op, error.layer) == ("tf.Erfinv", "odd_one")
    assert "layer 'odd_one' (Lambda)" in str(error)
    assert "no kernel" in str(error)


def test_conversion_error_from_message_only():
    raw = RuntimeError(
        'loc(fused["Erfinv:", "functional_1/odd_one_1/erfinv/Erfinv@x"]): error: '
        "'tf.Erfinv' op is neither a custom op nor a flex op"
    )
    error = conversion_error(raw, LAYERS)
    assert (error.op, error.layer) == ("tf.Erfinv", "odd_one")


@pytest.mark.parametrize("name", REFERENCE_PAIRS)
def test_coral_models_have_no_float_ops(name):
    assert float_ops(fixture_path(name)) == []
