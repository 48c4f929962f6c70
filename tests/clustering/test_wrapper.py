"""ClusterWrapper: unique-value bound after strip, sparsity, gradients, reassignment, serialization."""

import os

import keras
import numpy as np
import pytest

import kopt
from kopt.clustering import ClusteringConfigError, ClusterWrapper, NotClusterableError, unique_values


def fit_steps(model, x, y, steps=2, lr=0.05):
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=steps, verbose=0)


def single_layer_model(layer, input_shape, **wrapper_kwargs):
    inputs = keras.Input(input_shape)
    wrapper = ClusterWrapper(layer, **wrapper_kwargs)
    return keras.Model(inputs, wrapper(inputs)), wrapper


# Zero initializers keep layer creation cheap (JAX compiles every random initializer);
# random weights are then set from NumPy before wrapping.
ZERO = {"kernel_initializer": "zeros"}
LAYERS = {
    "dense": (lambda: keras.layers.Dense(12, **ZERO), (10,), [(-1,)]),
    "conv1d": (lambda: keras.layers.Conv1D(6, 3, **ZERO), (9, 4), [(-1,)]),
    "conv2d": (lambda: keras.layers.Conv2D(6, 3, **ZERO), (7, 7, 3), [(-1,)]),
    "depthwise": (
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, depthwise_initializer="zeros"),
        (7, 7, 3),
        [(-2, -1)],
    ),
    "separable": (
        lambda: keras.layers.SeparableConv2D(5, 3, depthwise_initializer="zeros", pointwise_initializer="zeros"),
        (7, 7, 3),
        [(-2, -1), (-1,)],
    ),
    "transpose": (lambda: keras.layers.Conv2DTranspose(4, 3, **ZERO), (5, 5, 3), [(-2,)]),
    "lstm": (lambda: keras.layers.LSTM(3, recurrent_initializer="zeros", **ZERO), (4, 5), [(-1,), (-1,)]),
}


def random_layer(kind, rng):
    """A built layer of ``kind`` holding random weights."""
    make, input_shape, _ = LAYERS[kind]
    layer = make()
    layer.build((None, *input_shape))
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    return layer


@pytest.mark.backends
@pytest.mark.parametrize(
    "per_channel, kinds",
    # per tensor the layout does not matter (one column): two kinds suffice
    [(False, ["dense", "separable"]), (True, sorted(LAYERS))],
    ids=["per_tensor", "per_channel"],
)
def test_strip_keeps_at_most_k_values_and_same_predictions(per_channel, kinds):
    """Default-clusterable kinds in one multi-input model (training itself is tested below)."""
    k = 3
    rng = np.random.default_rng(0)
    inputs, outputs, wrappers, data = [], [], {}, []
    for kind in kinds:
        input_shape = LAYERS[kind][1]
        tensor = keras.Input(input_shape, name=f"in_{kind}")
        wrappers[kind] = ClusterWrapper(random_layer(kind, rng), k, per_channel=per_channel, seed=1)
        inputs.append(tensor)
        outputs.append(keras.layers.Flatten()(wrappers[kind](tensor)))
        data.append(rng.normal(size=(8, *input_shape)).astype("float32"))
    model = keras.Model(inputs, keras.layers.Concatenate()(outputs))
    for wrapper in wrappers.values():  # move the shadow weights as training would, then reassign
        for variable in wrapper.layer.trainable_variables:
            variable.assign(keras.ops.convert_to_numpy(variable) + rng.normal(size=variable.shape).astype("float32"))
    model(data, training=True)
    stripped = kopt.strip(model)
    assert not any(isinstance(layer, ClusterWrapper) for layer in stripped.layers)
    for kind, wrapper in wrappers.items():
        plain = stripped.get_layer(wrapper.layer.name)
        names = wrapper.clustered_weight_names
        assert len(names) == len(LAYERS[kind][2])
        for name, axes in zip(names, LAYERS[kind][2]):
            owner = plain.cell if kind == "lstm" else plain
            kernel = keras.ops.convert_to_numpy(getattr(owner, name.split(".")[-1]))
            assert unique_values(kernel, axes if per_channel else None).max() <= k, (kind, name)
            np.testing.assert_array_equal(kernel, wrapper.clusters(name).values())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(data)), keras.ops.convert_to_numpy(model(data)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.backends
def test_embedding_is_clustered_per_tensor():
    model, wrapper = single_layer_model(keras.layers.Embedding(20, 4), (3,), number_of_clusters=5, per_channel=True)
    table = keras.ops.convert_to_numpy(kopt.strip(model).layers[-1].embeddings)
    assert np.unique(table).size <= 5
    assert wrapper.clusters().centroids.shape == (1, 5)


@pytest.mark.backends
def test_preserve_sparsity_keeps_zeros_through_training():
    rng = np.random.default_rng(1)
    dense = keras.layers.Dense(16)
    dense.build((None, 12))
    kernel = rng.normal(size=(12, 16)).astype("float32")
    kernel[rng.random(kernel.shape) < 0.6] = 0.0
    dense.kernel.assign(kernel)
    model, wrapper = single_layer_model(dense, (12,), number_of_clusters=4, preserve_sparsity=True, seed=0)
    x = rng.normal(size=(32, 12)).astype("float32")
    y = rng.normal(size=(32, 16)).astype("float32")
    fit_steps(model, x, y, steps=4, lr=0.2)
    zeros = kernel == 0
    shadow = keras.ops.convert_to_numpy(dense.kernel)
    assert np.all(shadow[zeros] == 0), "shadow weights at pruned positions moved"
    stripped = keras.ops.convert_to_numpy(kopt.strip(model).layers[-1].kernel)
    assert np.all(stripped[zeros] == 0) and not np.any(np.signbit(stripped[zeros]))
    assert np.unique(stripped).size <= 4
    clusters = wrapper.clusters()
    assert np.all(clusters.centroids[:, 0] == 0.0)
    assert np.all(clusters.indices[zeros] == 0)


@pytest.mark.backends
@pytest.mark.parametrize("per_channel", [False, True])
def test_preserve_sparsity_reserves_the_zero_centroid_for_pruned_weights(per_channel):
    """Small surviving weights join a non-zero centroid: sparsity is kept, not silently raised."""
    rng = np.random.default_rng(2)
    dense = keras.layers.Dense(8)
    dense.build((None, 64))
    kernel = rng.normal(size=(64, 8)).astype("float32")
    kernel[rng.random(kernel.shape) < 0.5] = 0.0
    kernel[:6] = np.where(kernel[:6] != 0, 1e-4, 0.0)  # survivors much nearer 0 than any other centroid
    dense.kernel.assign(kernel)
    model, _ = single_layer_model(
        dense, (64,), number_of_clusters=4, preserve_sparsity=True, per_channel=per_channel, seed=0
    )
    x = rng.normal(size=(16, 64)).astype("float32")
    fit_steps(model, x, rng.normal(size=(16, 8)).astype("float32"), steps=2, lr=0.01)
    stripped = keras.ops.convert_to_numpy(kopt.strip(model).layers[-1].kernel)
    np.testing.assert_array_equal(stripped == 0, kernel == 0)


@pytest.mark.backends
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_gradients_reach_centroids_and_shadow_weights(per_channel, aggregation, gradients):
    rng = np.random.default_rng(2)
    dense = keras.layers.Dense(5, use_bias=False)
    dense.build((None, 7))
    wrapper = ClusterWrapper(dense, 3, per_channel=per_channel, gradient_aggregation=aggregation, seed=3)
    x = rng.normal(size=(4, 7)).astype("float32")
    upstream = rng.normal(size=(4, 5)).astype("float32")
    grads = gradients(wrapper, x, upstream)
    kernel_grad = x.T @ upstream  # d sum(x @ W * G) / dW
    np.testing.assert_allclose(grads[dense.kernel.path], kernel_grad, rtol=1e-5, atol=1e-5)
    indices = wrapper.clusters().indices  # (7, 5); centroids (C, 3)
    expected = np.zeros(wrapper.clusters().centroids.shape)
    counts = np.zeros_like(expected)
    for (i, j), k in np.ndenumerate(indices):
        row = j if per_channel else 0
        expected[row, k] += kernel_grad[i, j]
        counts[row, k] += 1
    if aggregation == "mean":
        expected /= np.maximum(counts, 1)
    centroid_path = [v.path for v in wrapper.trainable_variables if v.path.endswith("kernel_centroids")][0]
    np.testing.assert_allclose(grads[centroid_path], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize("per_channel", [False, True])
def test_training_call_reassigns_from_moved_weights(per_channel):
    dense = keras.layers.Dense(6)
    dense.build((None, 8))
    wrapper = ClusterWrapper(dense, 4, per_channel=per_channel, init="linear", seed=0)
    moved = np.random.default_rng(5).normal(size=(8, 6)).astype("float32") * 3
    dense.kernel.assign(moved)
    before = wrapper.clusters().indices.copy()
    wrapper(np.ones((2, 8), "float32"), training=False)
    np.testing.assert_array_equal(wrapper.clusters().indices, before)  # inference keeps assignments
    wrapper(np.ones((2, 8), "float32"), training=True)
    centroids = wrapper.clusters().centroids
    table = np.broadcast_to(centroids, (6, 4)) if not per_channel else centroids
    expected = np.abs(moved[:, :, None] - table[None, :, :]).argmin(axis=-1)
    np.testing.assert_array_equal(wrapper.clusters().indices, expected)
    assert not np.array_equal(expected, before)


@pytest.mark.backends
@pytest.mark.parametrize("per_channel", [False, True])
def test_keras_round_trip_keeps_centroids_and_assignments(tmp_path, per_channel):
    inputs = keras.Input((6, 6, 2))
    x = ClusterWrapper(keras.layers.Conv2D(4, 3), 5, per_channel=per_channel, preserve_sparsity=True, seed=4)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = ClusterWrapper(keras.layers.Dense(3), 6, init="density", gradient_aggregation="mean")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    fit_steps(model, data, rng.normal(size=(8, 3)).astype("float32"))
    path = os.path.join(tmp_path, "clustered.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]
    assert len(model.weights) == len(loaded.weights)
    for original, reloaded in zip(model.weights, loaded.weights):
        assert original.path.split("/")[-1] == reloaded.path.split("/")[-1]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(original), keras.ops.convert_to_numpy(reloaded))
    for original, reloaded in zip(model.layers[1::2], loaded.layers[1::2]):
        original_config, reloaded_config = original.get_config(), reloaded.get_config()
        assert original_config.pop("layer")["config"] == reloaded_config.pop("layer")["config"]
        assert original_config == reloaded_config
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


@pytest.mark.backends
def test_same_seed_same_centroids_and_different_seed_differs():
    def centroids(seed, init="random"):
        dense = keras.layers.Dense(8)
        dense.build((None, 8))
        dense.kernel.assign(np.linspace(-1, 1, 64, dtype="float32").reshape(8, 8))
        return ClusterWrapper(dense, 4, init=init, seed=seed).clusters().centroids

    np.testing.assert_array_equal(centroids(3), centroids(3))
    assert not np.array_equal(centroids(3), centroids(4))
    np.testing.assert_array_equal(centroids(1, "kmeans++"), centroids(1, "kmeans++"))


@pytest.mark.backends
def test_errors_name_the_layer_and_value():
    dense = keras.layers.Dense(2, name="tiny")
    dense.build((None, 3))
    with pytest.raises(ClusteringConfigError, match="'tiny'.*number_of_clusters=7 exceeds the 6 values"):
        ClusterWrapper(dense, 7)
    with pytest.raises(ClusteringConfigError, match="at least 1"):
        ClusterWrapper(dense, 0)
    with pytest.raises(ClusteringConfigError, match="'linear', 'random', 'density', 'kmeans\\+\\+'"):
        ClusterWrapper(dense, 2, init="kmeans")
    with pytest.raises(ClusteringConfigError, match="gradient_aggregation"):
        ClusterWrapper(dense, 2, gradient_aggregation="max")
    with pytest.raises(ClusteringConfigError, match="at least 2"):
        ClusterWrapper(dense, 1, preserve_sparsity=True)
    with pytest.raises(NotClusterableError, match="BatchNormalization"):
        ClusterWrapper(keras.layers.BatchNormalization(name="bn"), 2)
    with pytest.raises(NotClusterableError, match="kopt.strip"):
        ClusterWrapper(ClusterWrapper(dense, 2), 2)


def test_same_seed_trains_to_bit_identical_weights_on_a_large_layer():
    """TF's CPU bincount (the centroid gradient) splits work across threads: its float32 sums
    vary from run to run; kopt accumulates in float64 so that seeded runs repeat exactly."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 512)).astype("float32")
    y = rng.normal(size=(64, 512)).astype("float32")
    kernel = rng.normal(size=(512, 512)).astype("float32")
    results = []
    for _ in range(2):
        dense = keras.layers.Dense(512)
        dense.build((None, 512))
        dense.kernel.assign(kernel)
        model, _ = single_layer_model(dense, (512,), number_of_clusters=8, seed=0)
        fit_steps(model, x, y, steps=25, lr=0.01)
        results.append(keras.ops.convert_to_numpy(kopt.strip(model).layers[-1].kernel))
    assert results[0].tobytes() == results[1].tobytes()
