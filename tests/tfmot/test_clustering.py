"""kopt.tfmot.clustering.keras: TFMOT's clustering API (names, defaults, errors) on kopt."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

from kopt import tfmot
from kopt.clustering import ClusterWrapper
from kopt.core.errors import KoptError
from tests.tfmot.tfmot_testing import (
    UnknownWeighted,
    compile_model,
    data,
    functional_cnn,
    small_cnn,
)

ck = tfmot.clustering.keras
CI = ck.CentroidInitialization


def test_signature_and_defaults_follow_tfmot():
    params = inspect.signature(ck.cluster_weights).parameters
    assert list(params)[:5] == [
        "to_cluster", "number_of_clusters", "cluster_centroids_init", "preserve_sparsity", "cluster_per_channel"
    ]
    assert params["cluster_centroids_init"].default is CI.KMEANS_PLUS_PLUS
    assert params["preserve_sparsity"].default is False and params["cluster_per_channel"].default is False
    assert [m.name for m in CI] == ["LINEAR", "RANDOM", "DENSITY_BASED", "KMEANS_PLUS_PLUS"]
    wrapper = ck.cluster_weights(small_cnn(), 4).get_layer("cluster_dense")
    assert (wrapper.init, wrapper.per_channel, wrapper.preserve_sparsity) == ("kmeans++", False, False)


@pytest.mark.backends
def test_sequential_stays_sequential_clusters_like_tfmot_and_strips():
    model = small_cnn()
    clustered = ck.cluster_weights(model, number_of_clusters=4, cluster_centroids_init=CI.DENSITY_BASED)
    assert isinstance(clustered, keras.Sequential)
    assert [type(layer).__name__ for layer in clustered.layers] == [
        "ClusterWrapper", "DepthwiseConv2D", "Flatten", "ClusterWrapper"
    ]
    x, y = data()
    compile_model(clustered).fit(x, y, epochs=1, batch_size=32, verbose=0)
    stripped = ck.strip_clustering(clustered)
    assert isinstance(stripped, keras.Sequential)
    assert len(np.unique(stripped.layers[0].get_weights()[0])) <= 4
    assert len(np.unique(stripped.layers[3].get_weights()[0])) <= 4
    assert len(np.unique(stripped.layers[1].get_weights()[0])) > 4  # TFMOT never clusters DepthwiseConv2D
    np.testing.assert_allclose(stripped.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-5)


def test_linear_init_spaces_centroids_evenly_between_the_extremes():
    model = functional_cnn()
    kernel = model.get_layer("dense").get_weights()[0]
    clustered = ck.cluster_weights(model, 5, cluster_centroids_init=CI.LINEAR)
    assert not isinstance(clustered, keras.Sequential)
    stripped = ck.strip_clustering(clustered).get_layer("dense").get_weights()[0]
    grid = np.linspace(kernel.min(), kernel.max(), 5)
    assert np.abs(stripped[..., None] - grid).min(axis=-1).max() < 1e-6  # every value is a linear centroid
    nearest = grid[np.abs(kernel[..., None] - grid).argmin(axis=-1)]
    np.testing.assert_allclose(stripped, nearest, atol=1e-6)


@pytest.mark.parametrize("init", [CI.RANDOM, "CentroidInitialization.DENSITY_BASED", "kmeans++"])
def test_every_init_and_tfmot_strings_are_accepted(init):
    stripped = ck.strip_clustering(ck.cluster_weights(functional_cnn(), 6, cluster_centroids_init=init))
    assert len(np.unique(stripped.get_layer("dense").get_weights()[0])) <= 6


def test_per_channel_and_sparsity_preserving_experimental_module():
    from kopt.tfmot.clustering.keras.experimental import cluster

    model = functional_cnn()
    dense = model.get_layer("dense")
    kernel = dense.get_weights()[0]
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.5)] = 0.0
    dense.set_weights([kernel, dense.get_weights()[1]])
    clustered = cluster.cluster_weights(model, number_of_clusters=3, preserve_sparsity=True, cluster_per_channel=True)
    x, y = data(32)
    compile_model(clustered).fit(x, y, epochs=1, verbose=0)
    stripped = cluster.strip_clustering(clustered).get_layer("dense").get_weights()[0]
    assert np.all(stripped[kernel == 0] == 0)
    for channel in range(stripped.shape[-1]):
        assert len(np.unique(stripped[..., channel][kernel[..., channel] != 0])) <= 3


def test_errors_name_the_fault():
    with pytest.raises(ValueError, match="not supported"):
        ck.cluster_weights(small_cnn(), 4, cluster_centroids_init="MEDIAN")
    custom = keras.Sequential([keras.Input((4,)), UnknownWeighted(name="mystery"), keras.layers.Dense(2)])
    with pytest.raises(KoptError, match="'mystery'"):
        ck.cluster_weights(custom, 2)
    with pytest.raises(ValueError, match="can only take"):
        ck.cluster_weights(np.zeros(3), 2)
    with pytest.raises(ValueError, match="unexpected keyword"):
        ck.cluster_weights(small_cnn(), 2, init="linear")


class Scaled(UnknownWeighted, ck.ClusterableLayer):
    def get_clusterable_weights(self):
        return [("scale", self.scale)]


class CustomAlgorithm(Scaled):
    def get_clusterable_algorithm(self, weight_name):
        return object


def test_clusterable_layer_and_get_clusterable_algorithm():
    model = keras.Sequential([keras.Input((8,)), Scaled(name="scaled"), keras.layers.Dense(2)])
    clustered = ck.cluster_weights(model, 2)
    assert isinstance(clustered.layers[0], ClusterWrapper)
    custom = keras.Sequential([keras.Input((8,)), CustomAlgorithm(name="custom"), keras.layers.Dense(2)])
    with pytest.raises(KoptError, match="custom clustering algorithm"):
        ck.cluster_weights(custom, 2)


def test_layers_and_lists():
    layer = ck.cluster_weights(keras.layers.Dense(3), 4)
    assert isinstance(layer, ClusterWrapper)
    wrapped = ck.cluster_weights([keras.layers.Dense(3), keras.layers.BatchNormalization()], 4)
    assert isinstance(wrapped[0], ClusterWrapper) and isinstance(wrapped[1], keras.layers.BatchNormalization)
    with pytest.warns(UserWarning, match="left unclustered"):
        assert isinstance(ck.cluster_weights(keras.layers.DepthwiseConv2D(3), 4), keras.layers.DepthwiseConv2D)


def test_keras_round_trip_without_scope(tmp_path):
    clustered = ck.cluster_weights(small_cnn(), 4)
    x, _ = data(16)
    path = str(tmp_path / "clustered.keras")
    clustered.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras.Sequential)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6)
    with ck.cluster_scope():
        keras.saving.load_model(path)
