"""Centroid initialisations against NumPy references on small known inputs."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from kopt.clustering.init import (
    INIT_METHODS,
    initial_centroid_matrix,
    initial_centroids,
    kmeans_plus_plus_seeds,
    lloyd_1d,
)


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.backends
def test_linear_is_evenly_spaced_between_extremes():
    values = np.array([3.0, -1.0, 0.5, 7.0, 2.0])
    np.testing.assert_array_equal(initial_centroids(values, 5, "linear", rng()), [-1.0, 1.0, 3.0, 5.0, 7.0])


@pytest.mark.backends
def test_density_is_inverse_cdf_at_mid_levels():
    values = np.arange(101, dtype=np.float64) ** 2  # skewed: dense near 0
    k = 4
    sorted_values = np.sort(values)
    expected = []
    for level in (np.arange(k) + 0.5) / k:  # linear interpolation of the empirical CDF, by hand
        position = level * (len(sorted_values) - 1)
        low = int(np.floor(position))
        frac = position - low
        expected.append(sorted_values[low] * (1 - frac) + sorted_values[min(low + 1, 100)] * frac)
    np.testing.assert_allclose(initial_centroids(values, k, "density", rng()), expected)
    # dense region gets more centroids than linear spacing would give it
    assert initial_centroids(values, k, "density", rng())[1] < initial_centroids(values, k, "linear", rng())[1]


@pytest.mark.backends
def test_random_is_seeded_sorted_and_within_range():
    values = np.linspace(-2.0, 3.0, 50)
    first = initial_centroids(values, 8, "random", rng(7))
    np.testing.assert_array_equal(first, initial_centroids(values, 8, "random", rng(7)))
    assert not np.array_equal(first, initial_centroids(values, 8, "random", rng(8)))
    assert np.all(np.diff(first) >= 0) and first.min() >= -2.0 and first.max() <= 3.0


@pytest.mark.backends
def test_kmeans_plus_plus_finds_well_separated_groups():
    groups = [np.full(20, -5.0) + np.linspace(-0.1, 0.1, 20), np.full(7, 1.0), np.full(30, 9.0) + np.linspace(0, 0.3, 30)]
    values = rng(3).permutation(np.concatenate(groups))
    centroids = initial_centroids(values, 3, "kmeans++", rng(0))
    np.testing.assert_allclose(centroids, [g.mean() for g in groups], rtol=1e-12)


@pytest.mark.backends
def test_kmeans_plus_plus_is_deterministic_for_a_seed():
    values = rng(1).normal(size=500)
    a = initial_centroids(values, 6, "kmeans++", rng(11))
    np.testing.assert_array_equal(a, initial_centroids(values, 6, "kmeans++", rng(11)))
    assert np.all(np.diff(a) > 0)


@pytest.mark.backends
def test_seeds_are_data_points_and_lloyd_matches_sklearn():
    values = rng(2).normal(size=400)
    seeds = kmeans_plus_plus_seeds(values, 5, rng(4))
    assert all(np.isclose(values, s).any() for s in seeds)
    ours = lloyd_1d(values, seeds)
    reference = KMeans(5, init=seeds.reshape(-1, 1), n_init=1, tol=0, max_iter=300).fit(values.reshape(-1, 1))
    np.testing.assert_allclose(ours, np.sort(reference.cluster_centers_.ravel()), rtol=1e-9, atol=1e-12)


@pytest.mark.backends
@pytest.mark.parametrize("method", INIT_METHODS)
def test_more_clusters_than_distinct_values_is_handled(method):
    values = np.array([1.0, 1.0, 2.0, 2.0])
    centroids = initial_centroids(values, 3, method, rng())
    assert centroids.shape == (3,) and np.all(np.isfinite(centroids))
    assert centroids.min() >= 1.0 and centroids.max() <= 2.0


@pytest.mark.backends
def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="kmeans\\+\\+"):
        initial_centroids(np.ones(3), 2, "kmeans", rng())


@pytest.mark.backends
def test_matrix_per_channel_and_zero_centroid():
    matrix = np.array([[0.0, 10.0], [1.0, 0.0], [3.0, 30.0], [0.0, 20.0]])
    centroids = initial_centroid_matrix(matrix, 3, "linear", rng(), zero_centroid=True)
    np.testing.assert_array_equal(centroids, [[0.0, 1.0, 3.0], [0.0, 10.0, 30.0]])
    plain = initial_centroid_matrix(matrix, 2, "linear", rng())
    np.testing.assert_array_equal(plain, [[0.0, 3.0], [0.0, 30.0]])
