"""Initial centroids for one channel of weights (NumPy, run once when a layer is wrapped).

Each method takes the 1-D weights of one channel and returns ``number_of_clusters``
centroids in ascending order:

``"linear"``    evenly spaced between the smallest and largest weight.
``"random"``    drawn uniformly between the smallest and largest weight.
``"density"``   the inverse empirical CDF at levels ``(k + 0.5) / K``: each centroid
                sits in the middle of an equal share of the weights, so dense regions get
                more centroids (``numpy.quantile``, linear interpolation).
``"kmeans++"``  k-means++ seeding (first centroid uniform, each next one drawn with
                probability proportional to the squared distance to the nearest chosen
                centroid) refined by Lloyd iterations to a 1-D k-means optimum.

Randomness only comes from the ``numpy.random.Generator`` passed in, so a seed fixes the
result. Initialisation is done on the host because it runs once, on concrete weights,
and must give the same centroids on every backend.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kopt.core.errors import ClusteringConfigError

INIT_METHODS: tuple[str, ...] = ("linear", "random", "density", "kmeans++")

LLOYD_MAX_ITERATIONS = 100


def linear_centroids(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.linspace(values.min(), values.max(), k)


def random_centroids(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.uniform(values.min(), values.max(), size=k))


def density_centroids(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.quantile(values, (np.arange(k) + 0.5) / k)


def kmeans_plus_plus_seeds(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The k-means++ seeding step alone (D² sampling), ascending."""
    x = np.asarray(values, dtype=np.float64)
    seeds = [x[rng.integers(x.size)]]
    nearest = (x - seeds[0]) ** 2
    for _ in range(1, k):
        cumulative = np.cumsum(nearest)
        total = cumulative[-1]
        if total > 0:
            index = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
            index = min(index, x.size - 1)
        else:  # fewer distinct values than clusters: every point is already a seed
            index = int(rng.integers(x.size))
        seeds.append(x[index])
        np.minimum(nearest, (x - x[index]) ** 2, out=nearest)
    return np.sort(np.asarray(seeds))


def lloyd_1d(values: np.ndarray, centroids: np.ndarray, max_iterations: int = LLOYD_MAX_ITERATIONS) -> np.ndarray:
    """1-D k-means (Lloyd) from ``centroids``; ascending result.

    On sorted data every cluster is a contiguous run, so one iteration costs
    O(K log N) with prefix sums. A weight exactly between two centroids joins the lower
    one, as in :func:`kopt.clustering.assign.nearest_centroid`. Empty clusters keep
    their centroid.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(x)])
    c = np.sort(np.asarray(centroids, dtype=np.float64))
    for _ in range(max_iterations):
        ends = np.searchsorted(x, (c[1:] + c[:-1]) / 2, side="right")
        bounds = np.concatenate([[0], ends, [x.size]])
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        updated = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
        if np.array_equal(updated, c):
            break
        c = updated
    return c


def kmeans_plus_plus_centroids(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return lloyd_1d(values, kmeans_plus_plus_seeds(values, k, rng))


_METHODS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "linear": linear_centroids,
    "random": random_centroids,
    "density": density_centroids,
    "kmeans++": kmeans_plus_plus_centroids,
}


def initial_centroids(values: np.ndarray, number_of_clusters: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """``number_of_clusters`` ascending centroids for the 1-D ``values`` of one channel."""
    try:
        fn = _METHODS[method]
    except KeyError:
        raise ClusteringConfigError(f"Unknown centroid initialisation {method!r}; valid ones: {', '.join(INIT_METHODS)}.") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(number_of_clusters)
    return np.asarray(fn(values, number_of_clusters, rng), dtype=np.float64)


def initial_centroid_matrix(
    matrix: np.ndarray,
    number_of_clusters: int,
    method: str,
    rng: np.random.Generator,
    zero_centroid: bool = False,
) -> np.ndarray:
    """Centroids ``(C, K)`` for the channels (columns) of an ``(M, C)`` weight matrix.

    With ``zero_centroid`` column 0 is an exact 0.0 and the other ``K - 1`` centroids are
    initialised from the channel's non-zero weights only (sparsity-preserving clustering).
    """
    channels = matrix.shape[1]
    centroids = np.zeros((channels, number_of_clusters))
    for c in range(channels):
        column = matrix[:, c]
        if zero_centroid:
            nonzero = column[column != 0]
            if number_of_clusters > 1:
                centroids[c, 1:] = initial_centroids(nonzero, number_of_clusters - 1, method, rng)
        else:
            centroids[c] = initial_centroids(column, number_of_clusters, method, rng)
    return centroids
