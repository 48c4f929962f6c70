"""Graph transforms keep the float function: separable split, activation split, BatchNorm folding."""

import keras
import numpy as np
from keras import layers, ops

from kopt.graph import analyze
from kopt.quantization import FoldedBatchNorm, get_scheme
from kopt.quantization.transforms import DEFAULT_TRANSFORMS, TransformContext


def transformed_float_model(model):
    """Run the default transforms with every weight quantizer removed; rebuild without fake-quants."""
    scheme = get_scheme("default_8bit")
    graph = analyze(model)

    def float_config(layer):
        config = scheme.config_for(layer)
        return None if config is None else config.replace(weights={})

    configs = {n: float_config(graph.layer(n)) for n in graph.topological_nodes() if graph.dag.nodes[n]["kind"] != "input"}
    context = TransformContext(graph, configs, float_config)
    for transform in DEFAULT_TRANSFORMS:
        transform(context)
    return graph.rebuild(), context


def randomize(model):
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(-2, 2, c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.2, 2, c)])


def test_transformed_model_equals_original_in_float():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)  # conv with bias
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.DepthwiseConv2D(3, strides=2, activation="swish")(x)
    x = layers.BatchNormalization()(x)  # after a non-linear activation: not foldable, stays standalone
    x = layers.Conv2D(4, 1, activation="sigmoid")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(6, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inp, x)
    randomize(model)
    folded, context = transformed_float_model(model)
    assert len(context.folded) == 3  # conv, separable's pointwise, dense
    assert sum(isinstance(l, FoldedBatchNorm) for l in folded.layers) == 3
    assert sum(isinstance(l, layers.BatchNormalization) for l in folded.layers) == 1
    assert not any(isinstance(l, layers.SeparableConv2D) for l in folded.layers)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(folded(x, training=False)), ops.convert_to_numpy(model(x, training=False)), atol=1e-5, rtol=1e-5
    )


def test_conv1d_batchnorm_folds_and_matches():
    inp = keras.Input((16, 2))
    x = layers.Conv1D(5, 3, padding="causal", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inp, layers.ReLU()(x))
    randomize(model)
    folded, context = transformed_float_model(model)
    assert len(context.folded) == 1
    x = np.random.default_rng(1).normal(size=(3, 16, 2)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(folded(x)), ops.convert_to_numpy(model(x)), atol=1e-5, rtol=1e-5)


def test_shared_conv_and_branching_conv_are_not_folded():
    inp = keras.Input((6, 6, 2))
    shared = layers.Conv2D(2, 1)
    a = layers.BatchNormalization()(shared(inp))
    b = shared(a)  # the conv is called twice: folding one call's BN would change the other
    c = layers.Conv2D(2, 1)(inp)
    d = layers.Add()([layers.BatchNormalization()(c), c])  # c's output also feeds the Add
    model = keras.Model(inp, [b, d])
    _, context = transformed_float_model(model)
    assert context.folded == []
