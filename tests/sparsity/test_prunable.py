"""Which weights of which layers are pruned; the custom-layer protocol; M:N eligibility."""

import keras
import pytest

from kopt.core.errors import UnsupportedLayerError
from kopt.sparsity import prunable_weights
from kopt.sparsity.prunable import NotPrunable, is_unknown_with_weights, plan_layer
from tests.sparsity.sparsity_testing import MyDense, Scale


def built(layer, shape):
    layer.build(shape)
    return layer


def names_and_axes(layer):
    return [(w.name, w.input_axis) for w in prunable_weights(layer)]


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        (keras.layers.Dense(3), (None, 8), [("kernel", 0)]),
        (keras.layers.Conv1D(4, 3), (None, 10, 8), [("kernel", -2)]),
        (keras.layers.Conv2D(4, 3), (None, 10, 10, 8), [("kernel", -2)]),
        (keras.layers.Conv3D(4, 3), (None, 6, 6, 6, 8), [("kernel", -2)]),
        (keras.layers.Conv2DTranspose(4, 3), (None, 6, 6, 8), [("kernel", -1)]),
        (keras.layers.Conv1DTranspose(4, 3), (None, 6, 8), [("kernel", -1)]),
        (keras.layers.DepthwiseConv2D(3), (None, 6, 6, 8), [("kernel", None)]),
        (keras.layers.DepthwiseConv1D(3), (None, 6, 8), [("kernel", None)]),
        (keras.layers.SeparableConv2D(4, 3), (None, 6, 6, 8), [("depthwise_kernel", None), ("pointwise_kernel", -2)]),
        (keras.layers.SeparableConv1D(4, 3), (None, 6, 8), [("depthwise_kernel", None), ("pointwise_kernel", -2)]),
        (keras.layers.Embedding(20, 8), (None, 5), [("embeddings", None)]),
        (keras.layers.LSTM(4), (None, 5, 8), [("cell.kernel", 0), ("cell.recurrent_kernel", 0)]),
        (keras.layers.GRU(4), (None, 5, 8), [("cell.kernel", 0), ("cell.recurrent_kernel", 0)]),
        (keras.layers.SimpleRNN(4), (None, 5, 8), [("cell.kernel", 0), ("cell.recurrent_kernel", 0)]),
        (keras.layers.RNN(keras.layers.LSTMCell(4)), (None, 5, 8), [("cell.kernel", 0), ("cell.recurrent_kernel", 0)]),
        (
            keras.layers.Bidirectional(keras.layers.GRU(4)),
            (None, 5, 8),
            [("forward_layer.cell.kernel", 0), ("forward_layer.cell.recurrent_kernel", 0),
             ("backward_layer.cell.kernel", 0), ("backward_layer.cell.recurrent_kernel", 0)],
        ),
        (keras.layers.TimeDistributed(keras.layers.Dense(3)), (None, 5, 8), [("layer.kernel", 0)]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else None,
)
def test_builtin_rules(layer, shape, expected):
    layer = built(layer, shape)
    assert names_and_axes(layer) == expected
    pruned_ids = {id(w.variable) for w in prunable_weights(layer)}
    for variable in layer.weights:  # biases are never pruned
        if "bias" in variable.path:
            assert id(variable) not in pruned_ids


def test_pruned_variables_are_the_real_variables():
    dense = built(keras.layers.Dense(3), (None, 8))
    assert prunable_weights(dense)[0].variable is dense._kernel
    lstm = built(keras.layers.LSTM(4), (None, 5, 8))
    assert [w.variable for w in prunable_weights(lstm)] == [lstm.cell.kernel, lstm.cell.recurrent_kernel]


@pytest.mark.parametrize(
    "layer, shape, reason",
    [
        (keras.layers.BatchNormalization(), (None, 8), "normalization"),
        (keras.layers.LayerNormalization(), (None, 8), "normalization"),
        (keras.layers.ReLU(), (None, 8), "no weights"),
        (keras.layers.PReLU(), (None, 8), "activation parameters"),
    ],
)
def test_never_pruned_layers(layer, shape, reason):
    layer = built(layer, shape)
    with pytest.raises(NotPrunable, match=reason):
        prunable_weights(layer)
    assert not is_unknown_with_weights(layer)


def test_unknown_layer_is_reported_not_pruned():
    layer = built(Scale(), (None, 8))
    with pytest.raises(NotPrunable, match="get_prunable_weights"):
        prunable_weights(layer)
    assert is_unknown_with_weights(layer)


def test_custom_protocol():
    layer = built(MyDense(), (None, 8))
    assert [(w.variable, w.input_axis) for w in prunable_weights(layer)] == [(layer.kernel, 0)]
    assert not is_unknown_with_weights(layer)


def test_custom_protocol_mistakes_raise():
    class Bad(MyDense):
        def get_prunable_weights(self):
            return [keras.Variable(keras.ops.ones((2, 2)))]

    with pytest.raises(UnsupportedLayerError, match="not a weight of the layer"):
        prunable_weights(built(Bad(), (None, 8)))

    class BadAxis(MyDense):
        def get_prunable_weights(self):
            return [(self.kernel, 5)]

    with pytest.raises(UnsupportedLayerError, match="input axis 5"):
        prunable_weights(built(BadAxis(), (None, 8)))


def test_plan_layer_m_by_n():
    separable = built(keras.layers.SeparableConv2D(4, 3), (None, 6, 6, 8))
    plan = plan_layer(separable, (2, 4))
    assert [w.name for w in plan.prune] == ["pointwise_kernel"]
    assert "no input-channel" in plan.skipped["depthwise_kernel"]

    lstm = built(keras.layers.LSTM(8), (None, 5, 3))
    plan = plan_layer(lstm, (2, 4))
    assert [w.name for w in plan.prune] == ["cell.recurrent_kernel"]
    assert "3" in plan.skipped["cell.kernel"]

    first_conv = built(keras.layers.Conv2D(8, 3), (None, 6, 6, 3))
    with pytest.raises(NotPrunable, match="input-channel count 3"):
        plan_layer(first_conv, (2, 4))
    with pytest.raises(NotPrunable, match="no input-channel"):
        plan_layer(built(keras.layers.Embedding(10, 8), (None, 4)), (2, 4))


def test_lora_layer_is_refused_not_pruned_wrongly():
    dense = built(keras.layers.Dense(4), (None, 8))
    dense.enable_lora(2)
    with pytest.raises(NotPrunable, match="LoRA"):
        prunable_weights(dense)
