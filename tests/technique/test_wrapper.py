"""The KoptWrapper protocol with custom layers that have no ``compute_output_shape``.

Keras builds a Functional model by asking each layer for its output spec; a custom layer
without ``compute_output_shape`` can only answer by tracing its ``call``. The wrapper base
class delegates ``compute_output_spec`` to the inner layer so every technique's wrapper works
with such layers (pruning, clustering, and QAT through a QuantizeConfig annotation).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import kopt
from kopt.quantization import QuantizeConfig, WeightQuantizer, quantize_annotate_layer, quantize_apply
from kopt.technique.wrapper import KoptWrapper

pytestmark = pytest.mark.backends


@keras.saving.register_keras_serializable(package="kopt_tests")
class TanhProjection(keras.layers.Layer):
    """A custom weighted layer without compute_output_shape; opts in to pruning and clustering."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")

    def call(self, x):
        return ops.tanh(ops.matmul(x, self.kernel))

    def get_prunable_weights(self):
        return [self.kernel]

    def get_clusterable_weights(self):
        return [("kernel", self.kernel, -1)]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kopt_tests")
class PassThroughWrapper(KoptWrapper):
    """The bare protocol: no override of call, shapes or specs."""


def model(annotate: bool = False) -> keras.Model:
    inputs = keras.Input((6,))
    layer = TanhProjection(5, name="proj")
    if annotate:
        layer = quantize_annotate_layer(layer, QuantizeConfig(weights={"kernel": WeightQuantizer()}, output="range"))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(layer(inputs)))


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def train(wrapped: keras.Model) -> keras.Model:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    wrapped.compile(keras.optimizers.Adam(0.01), "mse")
    wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return wrapped


def test_the_base_class_gives_the_inner_layers_spec():
    inputs = keras.Input((6,))
    wrapper = PassThroughWrapper(TanhProjection(5))
    outputs = wrapper(inputs)  # symbolic: needs compute_output_spec
    assert tuple(outputs.shape) == (None, 5) and outputs.dtype == "float32"
    built = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    expected = np.tanh(x @ numpy(wrapper.layer.kernel))
    np.testing.assert_allclose(numpy(built(x)), expected, rtol=1e-5, atol=1e-6)


TECHNIQUES = {
    "prune": lambda: kopt.sparsity.prune_low_magnitude(
        model(), schedule=kopt.sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1)
    ),
    "cluster": lambda: kopt.clustering.cluster_weights(model(), 3, seed=0),
    "qat": lambda: quantize_apply(model(annotate=True)),
}


@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_custom_layer_without_output_shape_trains_in_every_wrapper(technique, tmp_path):
    wrapped = train(TECHNIQUES[technique]())
    wrapper = next(layer for layer in wrapped.layers if isinstance(layer, KoptWrapper) and layer.layer.name == "proj")
    assert isinstance(wrapper.layer, TanhProjection)
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    before = numpy(wrapped(x))
    assert before.shape == (4, 2)

    # what the wrapper deploys is what the inner layer computes with its transformed kernel
    (variable, deployed), *_ = wrapper.transformed_weights(training=False)
    hidden = np.tanh(x @ numpy(deployed))
    if technique == "prune":
        assert np.mean(numpy(deployed) == 0) == 0.5
    if technique == "cluster":
        assert len(np.unique(numpy(deployed))) <= 3

    path = tmp_path / f"{technique}.keras"
    wrapped.save(path)
    loaded = keras.saving.load_model(path)  # the symbolic rebuild needs the spec again
    np.testing.assert_array_equal(numpy(loaded(x)), before)
    if technique != "qat":  # QAT also fake-quantizes the activations: no float reference
        stripped = kopt.strip(wrapped)
        head = stripped.get_layer("head")  # the head may be wrapped too: its deployed weights
        expected = hidden @ numpy(head.kernel) + numpy(head.bias)
        np.testing.assert_allclose(before, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(numpy(stripped(x)), before, rtol=1e-6, atol=1e-6)
