"""cluster_weights / cluster_layer on models and layers: selection, overrides, warnings, errors.

Selection, warning and error logic does not depend on the backend, so only the tests that
run wrapped models are marked ``backends``.
"""

import warnings

import keras
import numpy as np
import pytest

import kopt
from kopt.clustering import ClusteringConfigError, ClusterWrapper, NotClusterableError, cluster_layer, cluster_weights


def conv_model():
    """Conv -> BN -> depthwise -> pool -> Dense, with random weights set from NumPy (cheap under JAX)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv", kernel_initializer="zeros")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw", depthwise_initializer="zeros")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(4, name="head", kernel_initializer="zeros")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    weights = []
    for variable in model.weights:  # random kernels, BN statistics kept
        value = keras.ops.convert_to_numpy(variable)
        weights.append(rng.normal(size=value.shape).astype("float32") if value.ndim > 1 else value)
    model.set_weights(weights)
    return model


def wrapped(model):
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, ClusterWrapper)}


@pytest.mark.backends
def test_wraps_every_clusterable_layer_and_leaves_the_original_alone():
    model = conv_model()
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = cluster_weights(model, 4, seed=0)
    assert sorted(wrapped(clustered)) == ["conv", "dw", "head"]
    assert isinstance(clustered.get_layer("bn"), keras.layers.BatchNormalization)
    assert not any(isinstance(layer, ClusterWrapper) for layer in model.layers)
    for original, after in zip(before, model.weights):
        np.testing.assert_array_equal(original, keras.ops.convert_to_numpy(after))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert clustered(x).shape == (2, 4)


def test_layer_filter_and_configs_choose_per_layer_parameters():
    model = conv_model()
    clustered = cluster_weights(
        model,
        4,
        per_channel=True,
        layer_filter=lambda layer: layer.name != "dw",
        configs={"head": {"number_of_clusters": 3, "init": "linear", "per_channel": False}},
        seed=0,
    )
    layers = wrapped(clustered)
    assert sorted(layers) == ["conv", "head"]
    assert layers["conv"].number_of_clusters == 4 and layers["conv"].per_channel
    assert layers["head"].number_of_clusters == 3 and not layers["head"].per_channel
    assert layers["head"].init == "linear"
    assert layers["head"].clusters().centroids.shape == (1, 3)
    assert layers["conv"].clusters().centroids.shape == (8, 4)


def test_same_seed_gives_the_same_clustered_model():
    model = conv_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = (cluster_weights(model, 4, init="random", seed=5) for _ in range(2))
        third = cluster_weights(model, 4, init="random", seed=6)
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert not all(
        np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
        for a, b in zip(first.weights, third.weights)
    )
    # layers get different seeds: two equal kernels in one model do not get equal random centroids
    assert not np.array_equal(wrapped(first)["conv"].clusters().centroids, wrapped(first)["head"].clusters().centroids)


def test_warns_for_per_tensor_layers_feeding_batch_norm():
    model = conv_model()
    with pytest.warns(UserWarning, match="feed a BatchNormalization \\('conv'\\)"):
        cluster_weights(model, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cluster_weights(model, 4, per_channel=True, seed=0)


def test_warns_when_channels_are_smaller_than_clusters():
    with pytest.warns(UserWarning, match="'dw'.kernel has only 9 values per channel"):
        cluster_weights(conv_model(), 9, per_channel=True, seed=0)


def test_shared_layers_stay_shared_and_nested_models_are_flattened():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, keras.layers.Dense(6, name="inner_dense")(inner_in), name="inner")
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(6, name="shared")
    x = shared(shared(inputs))
    model = keras.Model(inputs, inner(x))
    clustered = cluster_weights(model, 3, seed=0)
    layers = wrapped(clustered)
    assert sorted(layers) == ["inner_dense", "shared"]
    graph = kopt.graph.analyze(clustered)
    assert len(graph.nodes_of(layers["shared"])) == 2


@pytest.mark.backends
def test_single_layer_is_wrapped_in_place():
    dense = keras.layers.Dense(3)
    wrapper = cluster_weights(dense, 2, init="density")
    assert isinstance(wrapper, ClusterWrapper) and wrapper.layer is dense
    model = keras.Sequential([keras.Input((5,)), wrapper])
    assert model(np.ones((1, 5), "float32")).shape == (1, 3)
    assert np.unique(keras.ops.convert_to_numpy(kopt.strip(model).layers[-1].kernel)).size <= 2


def test_errors_name_the_layer_argument_or_value():
    model = conv_model()
    with pytest.raises(ClusteringConfigError, match="'conv'.*number_of_clusters=300 exceeds the 216 values"):
        cluster_weights(model, 300)
    with pytest.raises(ClusteringConfigError, match="at least 1"):
        cluster_weights(model, 0)
    with pytest.raises(ClusteringConfigError, match="unknown init 'kmean'.*'kmeans\\+\\+'"):
        cluster_weights(model, 4, init="kmean")
    with pytest.raises(ClusteringConfigError, match="\\['nope'\\].*not in the model"):
        cluster_weights(model, 4, configs={"nope": {}})
    with pytest.raises(ClusteringConfigError, match="unknown keys \\['clusters'\\]"):
        cluster_weights(model, 4, configs={"head": {"clusters": 3}})
    with pytest.raises(ClusteringConfigError, match="layer 'head'.*unknown init"):
        cluster_weights(model, 4, configs={"head": {"init": "bogus"}})
    with pytest.raises(NotClusterableError, match="'bn'"):
        cluster_weights(model, 4, configs={"bn": {}})
    with pytest.raises(NotClusterableError, match="'pool'"):
        cluster_layer(model.get_layer("pool"), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = cluster_weights(model, 4, seed=0)
    with pytest.raises(NotClusterableError, match="kopt.strip"):
        cluster_weights(clustered, 4)


def test_fine_tuned_clustered_classifier_keeps_accuracy():
    """End to end on real data (sklearn digits): train, cluster, fine-tune, strip."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    train, test = slice(0, 1400), slice(1400, None)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-2), loss, metrics=["accuracy"])
    model.fit(x[train], y[train], epochs=15, batch_size=64, verbose=0)
    baseline = model.evaluate(x[test], y[test], verbose=0)[1]
    clustered = cluster_weights(model, 8, seed=0)
    clustered.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    clustered.fit(x[train], y[train], epochs=3, batch_size=64, verbose=0)
    stripped = kopt.strip(clustered)
    stripped.compile(loss=loss, metrics=["accuracy"])
    accuracy = stripped.evaluate(x[test], y[test], verbose=0)[1]
    assert baseline > 0.9
    assert accuracy > baseline - 0.03
    dense_layers = [layer for layer in stripped.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense_layers) == 2
    for layer in dense_layers:
        assert np.unique(keras.ops.convert_to_numpy(layer.kernel)).size <= 8


def float_tflite(model, input_shape):
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", input_signature=[tf.TensorSpec((1, *input_shape))], verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


@pytest.mark.slow
def test_clustered_mobilenet_zips_to_under_045_of_the_plain_model():
    from ai_edge_litert.interpreter import Interpreter

    from kopt.export import weight_tensors, zipped_size

    shape = (96, 96, 3)
    model = keras.applications.MobileNetV2(input_shape=shape, alpha=0.35, weights=None)
    conv_or_dense = lambda layer: type(layer) in (keras.layers.Conv2D, keras.layers.Dense)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = kopt.strip(cluster_weights(model, 16, seed=0, layer_filter=conv_or_dense))
    for layer in clustered.layers:
        if conv_or_dense(layer):
            assert np.unique(keras.ops.convert_to_numpy(layer.kernel)).size <= 16, layer.name
    plain_tflite, clustered_tflite = float_tflite(model, shape), float_tflite(clustered, shape)
    ratio = zipped_size(clustered_tflite) / zipped_size(plain_tflite)
    assert ratio <= 0.45, ratio
    # the clusters survive conversion (BN folding scales whole output channels)
    for weight in weight_tensors(clustered_tflite):
        if weight.op in ("CONV_2D", "FULLY_CONNECTED") and weight.values.ndim >= 2:
            per_channel = weight.values.reshape(weight.values.shape[0], -1)
            assert max(np.unique(row).size for row in per_channel) <= 16, weight.name
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    interpreter = Interpreter(model_content=clustered_tflite)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(lite, keras.ops.convert_to_numpy(clustered(x)), atol=1e-5)
