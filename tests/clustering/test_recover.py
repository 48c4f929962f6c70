"""recover_clusters: centroids and indices back from a clustered (stripped) weight."""

import keras
import numpy as np
import pytest

from kopt.clustering import ClusterWrapper, layer_clusters, recover_clusters, unique_values


@pytest.mark.backends
def test_per_tensor_round_trip():
    values = np.array([[0.5, -1.0], [0.5, 2.0], [-1.0, -0.0]], "float32")
    clusters = recover_clusters(values, max_clusters=4)
    np.testing.assert_array_equal(clusters.centroids, [[-1.0, 0.0, 0.5, 2.0]])
    np.testing.assert_array_equal(clusters.indices, [[2, 0], [2, 3], [0, 1]])
    np.testing.assert_array_equal(clusters.values(), values)
    assert clusters.indices.dtype == np.int32 and clusters.centroids.dtype == np.float32


@pytest.mark.backends
def test_per_channel_round_trip_pads_short_channels():
    rng = np.random.default_rng(0)
    table = np.array([[1.0, 2.0, 3.0], [-5.0, 5.0, 5.0]])  # channel 1 uses two values only
    indices = rng.integers(0, 3, size=(3, 3, 4, 2))
    indices[..., 1] %= 2
    values = table[np.arange(2), indices]  # channel axis -1
    clusters = recover_clusters(values, channel_axes=(-1,), max_clusters=3)
    np.testing.assert_array_equal(clusters.centroids, [[1.0, 2.0, 3.0], [-5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(clusters.values(), values)
    np.testing.assert_array_equal(unique_values(values, (-1,)), [3, 2])


@pytest.mark.backends
def test_depthwise_channel_axes_and_too_many_values():
    values = np.arange(3 * 3 * 2 * 2, dtype="float32").reshape(3, 3, 2, 2) % 5
    clusters = recover_clusters(values, channel_axes=(-2, -1))
    assert clusters.centroids.shape[0] == 4
    np.testing.assert_array_equal(clusters.values(), values)
    with pytest.raises(ValueError, match="more than max_clusters=2"):
        recover_clusters(values, channel_axes=(-2, -1), max_clusters=2)


@pytest.mark.backends
def test_layer_clusters_of_a_stripped_layer_match_the_wrapper():
    conv = keras.layers.Conv2D(4, 3, kernel_initializer="zeros")
    conv.build((None, 6, 6, 2))
    conv.kernel.assign(np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype("float32"))
    wrapper = ClusterWrapper(conv, 5, per_channel=True, seed=0)
    recovered = layer_clusters(wrapper.strip(), per_channel=True, max_clusters=5)["kernel"]
    np.testing.assert_array_equal(recovered.values(), wrapper.clusters().values())
    assert recovered.centroids.shape[0] == 4 and recovered.channel_axes == (3,)
    with pytest.raises(ValueError, match="'kernel'.*more than max_clusters=5"):
        layer_clusters(wrapper.strip(), per_channel=False, max_clusters=5)
