"""The layer-layout table: one row per layer class, one subclass rule, one registration call for custom layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kopt
from kopt.clustering import clusterable_weights, register_clusterable
from kopt.core.layers import Kernel, channel_axes_of, is_foldable, layout_of, unregister_layer
from kopt.quantization import USER_REGISTRY, QuantizeConfig, WeightQuantizer
from kopt.sparsity.prunable import prunable_weights
from tests.optimize_testing import compile_model, digits, kernel


@keras.saving.register_keras_serializable("kopt_tests")  # kopt's wrappers serialize the layer they hold
class GatedDense(layers.Layer):
    """A custom fully connected layer (not a Dense subclass): kopt knows nothing of it until registered."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        return keras.ops.relu(keras.ops.matmul(inputs, self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.fixture
def gated_dense_registered():
    layout = kopt.register_layer(
        GatedDense,
        {"kernel": Kernel("kernel", channel_axes=-1, input_axis=0)},
        quantize_config=QuantizeConfig(weights={"kernel": WeightQuantizer(per_channel=False)}, output="range"),
    )
    yield layout
    unregister_layer(GatedDense)
    USER_REGISTRY.unregister(GatedDense)


def test_every_technique_reads_the_same_row_and_subclasses_inherit_it():
    class MyConv(layers.Conv2D):
        pass

    conv, depthwise, transposed = MyConv(4, 3), layers.DepthwiseConv2D(3), layers.Conv2DTranspose(4, 3)
    for layer in (conv, depthwise, transposed):
        layer.build((None, 8, 8, 2))
    assert layout_of(conv) is layout_of(layers.Conv2D(1, 1))  # nearest registered base
    assert [(w.name, w.input_axis) for w in prunable_weights(conv)] == [("kernel", -2)]
    assert [(w.name, w.channel_axes) for w in clusterable_weights(conv)] == [("kernel", (-1,))]
    assert channel_axes_of(depthwise, "kernel") == (-2, -1) and channel_axes_of(transposed, "kernel") == (-2,)
    assert is_foldable(conv) and is_foldable(depthwise) and not is_foldable(layers.Conv3D(1, 1))
    assert not layout_of(depthwise).prune_by_default and layout_of(conv).prune_by_default
    lstm = layers.LSTM(4)
    lstm.build((None, 3, 2))
    assert [(w.name, w.input_axis) for w in prunable_weights(lstm)] == [("cell.kernel", 0), ("cell.recurrent_kernel", 0)]


def test_register_clusterable_on_a_subclass_keeps_its_base_pruning():
    class Scaled(layers.Dense):
        pass

    register_clusterable(Scaled, {"kernel": None})
    try:
        layer = Scaled(3)
        layer.build((None, 5))
        assert clusterable_weights(layer)[0].channel_axes is None
        assert [(w.name, w.input_axis) for w in prunable_weights(layer)] == [("kernel", 0)]
        assert is_foldable(layer)
    finally:
        unregister_layer(Scaled)


def test_unregistered_custom_layer_is_refused_with_the_registration_call_to_make():
    layer = GatedDense(4)
    layer.build((None, 6))
    from kopt.sparsity.prunable import NotPrunable

    with pytest.raises(NotPrunable, match=r"kopt.register_layer\(LayerClass"):
        prunable_weights(layer)


@pytest.mark.slow  # the whole pcqat pipeline, through to the .tflite
def test_a_custom_layer_registered_in_one_call_goes_through_pcqat(gated_dense_registered):
    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits(train=480, val=160)
    inputs = keras.Input((8, 8, 1))
    hidden = GatedDense(32, name="gated")(layers.Flatten(name="flat")(inputs))
    model = compile_model(keras.Model(inputs, layers.Dense(10, activation="softmax", name="out")(hidden)))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    result = kopt.optimize(model, kopt.Policy.preset("pcqat", number_of_clusters=8), train_data=(x, y),
                           validation_data=(xv, yv), epochs=2, verbose=0, seed=1)
    pruned = kernel(result.stages[1].model, "gated")
    assert result.stages[1].name == "prune" and np.mean(pruned == 0) == pytest.approx(0.5, abs=0.01)
    clustered = kernel(result.stages[2].model, "gated")
    assert len(np.unique(clustered)) <= 9 and np.all(clustered[pruned == 0] == 0)
    qat = result.stages[3].model
    assert any(getattr(layer, "layer", None) is not None and isinstance(layer.layer, GatedDense) for layer in qat.layers)
    int8 = result.stages[-1].report
    assert int8.name == "int8" and int8.int8_accuracy is not None and int8.int8_accuracy > 0.8
