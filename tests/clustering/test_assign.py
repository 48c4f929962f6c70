"""Nearest-centroid search and centroid gathering against brute-force NumPy references."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kopt.clustering.assign import gather_centroids, nearest_centroid, sorted_positions


def brute_force_distance(matrix, centroids):
    """Distance from each weight to the nearest centroid of its channel (N x K, the slow way)."""
    return np.abs(matrix[:, :, None] - centroids[None, :, :]).min(axis=-1)


def chosen_distance(matrix, centroids, indices):
    return np.abs(matrix - np.take_along_axis(centroids.T, indices, axis=0))


@pytest.mark.backends
@pytest.mark.parametrize("channels", [1, 5])
@pytest.mark.parametrize("k", [1, 2, 13])  # 13: not a power of two, padded search
def test_nearest_centroid_matches_brute_force(channels, k):
    rng = np.random.default_rng(k * 10 + channels)
    matrix = rng.normal(size=(300, channels)).astype("float32")
    centroids = rng.normal(size=(channels, k)).astype("float32")  # deliberately unsorted
    indices = keras.ops.convert_to_numpy(nearest_centroid(matrix, centroids))
    assert indices.dtype == np.int32 and indices.shape == matrix.shape
    assert indices.min() >= 0 and indices.max() < k
    np.testing.assert_allclose(chosen_distance(matrix, centroids, indices), brute_force_distance(matrix, centroids), atol=1e-6)


@pytest.mark.backends
@pytest.mark.parametrize("channels", [1, 3])
def test_midpoint_ties_go_to_the_lower_centroid(channels):
    centroids = np.tile(np.array([[4.0, 0.0, 2.0]], "float32"), (channels, 1))
    matrix = np.tile(np.array([[1.0], [3.0], [-9.0], [9.0]], "float32"), (1, channels))
    indices = keras.ops.convert_to_numpy(nearest_centroid(matrix, centroids))
    np.testing.assert_array_equal(indices, np.tile([[1], [2], [1], [0]], (1, channels)))


@pytest.mark.backends
def test_sorted_positions_counts_strictly_smaller_midpoints():
    midpoints = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0, 50.0]], "float32")
    matrix = np.array([[-1.0, 10.0], [0.0, 10.5], [4.5, 55.0], [2.0, 25.0]], "float32")
    positions = keras.ops.convert_to_numpy(sorted_positions(matrix, midpoints))
    np.testing.assert_array_equal(positions, [[0, 0], [0, 1], [5, 5], [2, 2]])


@pytest.mark.backends
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_gather_gradient_sums_or_averages_per_centroid(aggregation, gradients):
    centroids = np.array([[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]], "float32")
    indices = np.array([[0, 2], [0, 2], [1, 2], [0, 1]], "int32")
    upstream = np.arange(8, dtype="float32").reshape(4, 2) + 1.0

    class Gather(keras.layers.Layer):
        def build(self, _):
            self.c = self.add_weight(shape=(2, 3), initializer=keras.initializers.Constant(0.0))
            self.c.assign(centroids)

        def call(self, x, training=None):
            return gather_centroids(self.c, indices, aggregation) + 0 * x

    layer = Gather()
    out = keras.ops.convert_to_numpy(layer(np.zeros((4, 2), "float32")))
    np.testing.assert_array_equal(out, np.take_along_axis(centroids.T, indices, axis=0))
    grad = gradients(layer, np.zeros((4, 2), "float32"), upstream)[layer.c.path]
    expected = np.zeros((2, 3))
    counts = np.zeros((2, 3))
    for (m, c), k in np.ndenumerate(indices):
        expected[c, k] += upstream[m, c]
        counts[c, k] += 1
    if aggregation == "mean":
        expected = expected / np.maximum(counts, 1)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.backends
@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    k=st.sampled_from([1, 3, 16, 40]),  # few distinct shapes: JAX compiles once per shape
    channels=st.sampled_from([1, 3]),
)
def test_property_never_more_unique_values_than_clusters(data, k, channels):
    finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
    matrix = data.draw(arrays(np.float32, (48, channels), elements=finite))
    centroids = data.draw(arrays(np.float32, (channels, k), elements=finite))
    indices = nearest_centroid(matrix, centroids)
    values = keras.ops.convert_to_numpy(gather_centroids(centroids, indices))
    for c in range(channels):
        assert np.unique(values[:, c]).size <= k
    chosen = chosen_distance(matrix, centroids, keras.ops.convert_to_numpy(indices))
    best = brute_force_distance(matrix, centroids)
    np.testing.assert_allclose(chosen, best, atol=1e-3 + 1e-6 * float(np.abs(centroids).max()))
