"""Layer-type registry and the custom-layer protocol."""

import keras
import numpy as np
import pytest

import kopt
from kopt.clustering import (
    ClusterWrapper,
    NotClusterableError,
    clusterable_weights,
    is_clusterable,
    register_clusterable,
)
from kopt.core.layers import unregister_layer


def built(layer, shape):
    layer.build(shape)
    return layer


def test_default_registry_names_weights_and_channel_axes():
    cases = [
        (built(keras.layers.Dense(3), (None, 4)), {"kernel": (-1,)}),
        (built(keras.layers.Conv3D(2, 2), (None, 4, 4, 4, 1)), {"kernel": (-1,)}),
        (built(keras.layers.Conv2DTranspose(2, 3), (None, 4, 4, 1)), {"kernel": (-2,)}),
        (built(keras.layers.DepthwiseConv2D(3), (None, 5, 5, 2)), {"kernel": (-2, -1)}),
        (
            built(keras.layers.SeparableConv2D(2, 3), (None, 5, 5, 2)),
            {"depthwise_kernel": (-2, -1), "pointwise_kernel": (-1,)},
        ),
        (built(keras.layers.Embedding(10, 3), (None, 2)), {"embeddings": None}),
        (built(keras.layers.GRU(2, recurrent_initializer="zeros"), (None, 3, 4)), {"cell.kernel": (-1,), "cell.recurrent_kernel": (-1,)}),
    ]
    for layer, expected in cases:
        weights = clusterable_weights(layer)
        assert {w.name: w.channel_axes for w in weights} == expected
        assert all(isinstance(w.variable, keras.Variable) for w in weights)
    assert clusterable_weights(cases[-1][0])[0].variable is cases[-1][0].cell.kernel


def test_unsupported_layers_are_refused_with_guidance():
    assert not is_clusterable(keras.layers.BatchNormalization())
    with pytest.raises(NotClusterableError, match="register_clusterable"):
        clusterable_weights(built(keras.layers.LayerNormalization(name="ln"), (None, 3)))


class Scale(keras.layers.Layer):
    """A custom layer with its own weight names."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 4), initializer="glorot_uniform")
        self.offset = self.add_weight(shape=(4,), initializer="zeros")

    def call(self, x):
        return keras.ops.matmul(x, self.w) + self.offset


@keras.saving.register_keras_serializable(package="kopt_tests")
class ProtocolScale(Scale):
    def get_clusterable_weights(self):
        return [("w", self.w, -1)]


@pytest.mark.backends
def test_custom_layer_opts_in_through_the_protocol():
    layer = built(ProtocolScale(), (None, 6))
    assert is_clusterable(layer) and not is_clusterable(built(Scale(), (None, 6)))
    model = keras.Sequential([keras.Input((6,)), ClusterWrapper(layer, 2, per_channel=True)])
    stripped = kopt.strip(model).layers[-1]
    kernel = keras.ops.convert_to_numpy(stripped.w)
    assert all(np.unique(kernel[:, c]).size <= 2 for c in range(4))
    assert np.unique(kernel).size > 2  # per channel, not per tensor


def test_register_clusterable_for_a_third_party_class():
    class ThirdParty(Scale):
        pass

    try:
        register_clusterable(ThirdParty, {"w": None})
        layer = built(ThirdParty(), (None, 5))
        assert [(w.name, w.channel_axes) for w in clusterable_weights(layer)] == [("w", None)]
        wrapper = ClusterWrapper(layer, 3, per_channel=True)
        assert wrapper.clusters().centroids.shape == (1, 3)  # no channel axis: per tensor
    finally:
        unregister_layer(ThirdParty)
    with pytest.raises(TypeError):
        register_clusterable(int, {"w": -1})


def test_non_float_weights_are_refused():
    class IntKernel(keras.layers.Layer):
        def build(self, _):
            self.k = self.add_weight(shape=(3, 3), initializer="zeros", dtype="int32", trainable=False)

        def get_clusterable_weights(self):
            return [("k", self.k)]

    with pytest.raises(NotClusterableError, match="dtype int32"):
        clusterable_weights(built(IntKernel(name="ints"), (None, 3)))
