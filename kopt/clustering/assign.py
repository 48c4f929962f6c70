"""Nearest-centroid lookup and centroid gathering with ``keras.ops`` (every backend).

Weights are scalars, so the nearest of K centroids is found by binary search among the
K - 1 midpoints of the sorted centroids: O(N log K) time and O(N) memory, instead of the
N x K distance tensor of a brute-force search. A weight exactly on a midpoint joins the
lower centroid.

* Per tensor (one channel) the search is ``keras.ops.searchsorted`` on the flattened
  weights (a native kernel on every backend).
* Per channel every channel has its own midpoints, and ``keras.ops.searchsorted`` only
  takes one 1-D sequence. The midpoints of all channels are laid end to end in one flat
  table (each channel padded with ``+inf`` to ``2**m - 1`` entries) and a branchless
  binary search runs ``m = ceil(log2 K)`` rounds of one gather + one compare for all
  weights at once. Exact (no offsetting of float values, which would lose precision).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kopt.core.errors import ClusteringConfigError


def sorted_positions(matrix: Any, midpoints: Any) -> Any:
    """For ``matrix (M, C)`` and ascending ``midpoints (C, K-1)``: how many midpoints of its
    channel are strictly below each weight (int32, ``(M, C)``)."""
    rows, channels = matrix.shape
    count = midpoints.shape[1]
    if count == 0:
        return ops.zeros((rows, channels), dtype="int32")
    if channels == 1:
        flat = ops.reshape(matrix, (-1,))
        positions = ops.searchsorted(midpoints[0], flat, side="left")
        return ops.reshape(ops.cast(positions, "int32"), (rows, 1))

    depth = count.bit_length()  # 2**depth - 1 >= count
    padded = 2**depth - 1
    if padded > count:
        filler = ops.full((channels, padded - count), float("inf"), dtype=midpoints.dtype)
        midpoints = ops.concatenate([midpoints, filler], axis=1)
    table = ops.reshape(midpoints, (-1,))
    base = ops.arange(channels, dtype="int32") * padded
    last_below = ops.broadcast_to(base - 1, (rows, channels))  # flat index of the last midpoint < x
    step = 2 ** (depth - 1)
    while step >= 1:
        probe = last_below + step
        below = ops.less(ops.take(table, probe), matrix)
        last_below = ops.where(below, probe, last_below)
        step //= 2
    return last_below - base + 1


def nearest_centroid(matrix: Any, centroids: Any) -> Any:
    """Index (int32, ``(M, C)``) of the nearest centroid of its channel for every weight.

    ``matrix`` is ``(M, C)`` (one column per channel), ``centroids`` is ``(C, K)`` in any
    order. No gradient flows through the result.
    """
    matrix = ops.stop_gradient(ops.convert_to_tensor(matrix))
    centroids = ops.stop_gradient(ops.convert_to_tensor(centroids))
    channels, k = centroids.shape
    if k == 1:
        return ops.zeros(matrix.shape, dtype="int32")
    order = ops.cast(ops.argsort(centroids, axis=-1), "int32")
    # == take_along_axis(centroids, order) (ties hold equal values), in a few ops instead of
    # take_along_axis' dozens: this runs for every clustered weight at every training step.
    ascending = ops.sort(centroids, axis=-1)
    midpoints = (ascending[:, 1:] + ascending[:, :-1]) / 2
    positions = sorted_positions(matrix, midpoints)
    if channels == 1:
        return ops.take(order[0], positions)
    return ops.take(ops.reshape(order, (-1,)), positions + ops.arange(channels, dtype="int32") * k)


def nearest_centroid_np(matrix: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`nearest_centroid` (same midpoints, same ties), used to set up
    a wrapper's assignments on the host without compiling anything."""
    matrix = np.asarray(matrix)
    centroids = np.asarray(centroids, dtype=matrix.dtype)
    order = np.argsort(centroids, axis=-1, kind="stable")
    ascending = np.take_along_axis(centroids, order, axis=-1)
    midpoints = (ascending[:, 1:] + ascending[:, :-1]) / np.asarray(2, dtype=matrix.dtype)
    indices = np.empty(matrix.shape, dtype=np.int32)
    for c in range(matrix.shape[1]):
        indices[:, c] = order[c, np.searchsorted(midpoints[c], matrix[:, c], side="left")]
    return indices


def flat_indices(indices: Any, number_of_clusters: int) -> Any:
    """Per-channel centroid indices ``(M, C)`` -> indices into the flattened ``(C, K)`` centroids."""
    indices = ops.convert_to_tensor(indices, dtype="int32")
    channels = indices.shape[1]
    if channels == 1:
        return indices
    return indices + ops.arange(channels, dtype="int32") * number_of_clusters


def gather_centroids(centroids: Any, indices: Any, gradient_aggregation: str = "sum") -> Any:
    """``out[m, c] = centroids[c, indices[m, c]]``, differentiable in ``centroids``.

    The gradient a centroid receives is the sum of the gradients of the weights that use
    it (``"sum"``) or their mean (``"mean"``): the value is unchanged, only the backward
    pass is scaled by ``1 / cluster size`` through a stop-gradient identity.
    """
    centroids = ops.convert_to_tensor(centroids)
    channels, k = centroids.shape
    flat = flat_indices(indices, k)
    table = ops.reshape(centroids, (-1,))
    if gradient_aggregation not in ("sum", "mean"):
        raise ClusteringConfigError(f"gradient_aggregation must be 'sum' or 'mean', got {gradient_aggregation!r}.")
    if keras.backend.backend() == "tensorflow":
        return ops.reshape(_take_with_bincount_gradient(table, flat, gradient_aggregation), flat.shape)
    if gradient_aggregation == "mean":
        sizes = ops.segment_sum(
            ops.ones((flat.shape[0] * flat.shape[1],), dtype=table.dtype),
            ops.reshape(flat, (-1,)),
            num_segments=channels * k,
        )
        frozen = ops.stop_gradient(table)
        table = frozen + (table - frozen) / ops.maximum(ops.stop_gradient(sizes), 1.0)
    return ops.take(table, flat)


def _take_with_bincount_gradient(table: Any, flat: Any, gradient_aggregation: str) -> Any:
    """``take(table, flat)`` whose gradient is one weighted ``bincount``.

    TensorFlow differentiates a gather into a tensor through ``UnsortedSegmentSum``, which
    is slow on CPU when millions of weights share a few centroids; a weighted bincount
    computes the same sums several times faster. (JAX and PyTorch scatter-add quickly.)
    TF's CPU bincount splits the work across threads, so float32 sums change with the split
    from run to run; accumulating in float64 (about 2x the cost of float32, still ~5x faster
    than UnsortedSegmentSum) makes the rounded float32 sums repeat, so a seeded run repeats.
    """
    size = table.shape[0]
    ids = ops.reshape(flat, (-1,))

    @ops.custom_gradient
    def take(values):
        def grad(*upstream, **_):
            weights = ops.cast(ops.reshape(upstream[0], (-1,)), "float64")
            sums = ops.bincount(ids, weights=weights, minlength=size)
            sums = ops.reshape(ops.cast(sums, values.dtype), (size,))
            if gradient_aggregation == "mean":
                sizes = ops.reshape(ops.cast(ops.bincount(ids, minlength=size), values.dtype), (size,))
                sums = sums / ops.maximum(sizes, 1.0)
            return sums

        return ops.take(values, ids), grad

    return take(table)


def straight_through(clustered: Any, original: Any) -> Any:
    """``clustered`` in the forward pass; the backward pass also hands the incoming
    gradient unchanged to ``original`` (the trainable shadow weights)."""
    return clustered + (original - ops.stop_gradient(original))


__all__ = [
    "flat_indices",
    "gather_centroids",
    "nearest_centroid",
    "nearest_centroid_np",
    "sorted_positions",
    "straight_through",
]
