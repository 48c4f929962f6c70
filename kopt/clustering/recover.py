"""Centroids + indices of an already-clustered weight (e.g. a stripped kernel).

A stripped layer holds plain kernels with at most N distinct values per tensor or per
output channel. Later stages (cluster-preserving QAT, reports, export checks) need the
clustered form back: :func:`recover_clusters` rebuilds it from the values alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from kopt.clustering.layout import from_matrix_np, normalize_axes, to_matrix_np
from kopt.core.errors import InvalidArgumentError


@dataclass(frozen=True)
class Clusters:
    """``centroids`` ``(C, K)``: row ``c`` holds channel ``c``'s centroids (one row per
    tensor); ``indices`` (int32, the weight's shape): each weight's centroid in its channel,
    so ``values == centroids[channel, indices]``; ``channel_axes``: the output-channel axes
    (``()`` per tensor)."""

    centroids: np.ndarray
    indices: np.ndarray
    channel_axes: tuple[int, ...]

    def values(self) -> np.ndarray:
        """The clustered weight these centroids and indices stand for."""
        matrix_indices = to_matrix_np(self.indices, self.channel_axes)
        matrix = np.take_along_axis(self.centroids.T, matrix_indices, axis=0)
        return from_matrix_np(matrix, self.indices.shape, self.channel_axes)


def recover_clusters(
    values: np.ndarray,
    channel_axes: Sequence[int] | None = None,
    max_clusters: int | None = None,
) -> Clusters:
    """Split ``values`` into sorted unique centroids (per channel along ``channel_axes``) and indices.

    Channels with fewer distinct values than the widest one repeat their largest centroid
    to fill the row. Raises ``ValueError`` if a channel has more than ``max_clusters``
    distinct values (the weight was not clustered with that many clusters). ``-0.0`` and
    ``0.0`` count as one value.
    """
    values = np.asarray(values)
    axes = normalize_axes(channel_axes, values.ndim)
    matrix = to_matrix_np(values, axes)
    uniques, columns = [], []
    for c in range(matrix.shape[1]):
        unique, inverse = np.unique(matrix[:, c], return_inverse=True)
        uniques.append(unique)
        columns.append(inverse.reshape(-1).astype(np.int32))
    widest = max(len(u) for u in uniques)
    if max_clusters is not None and widest > max_clusters:
        worst = int(np.argmax([len(u) for u in uniques]))
        where = f"channel {worst}" if axes else "the tensor"
        raise InvalidArgumentError(f"{where} has {widest} distinct values, more than max_clusters={max_clusters}.")
    centroids = np.stack([np.concatenate([u, np.full(widest - len(u), u[-1])]) for u in uniques])
    indices = from_matrix_np(np.stack(columns, axis=1), values.shape, axes)
    return Clusters(centroids=centroids.astype(values.dtype), indices=indices, channel_axes=axes)


def unique_values(values: np.ndarray, channel_axes: Sequence[int] | None = None) -> np.ndarray:
    """Number of distinct values per channel (one entry per tensor when ``channel_axes`` is empty)."""
    matrix = to_matrix_np(np.asarray(values), channel_axes)
    return np.array([np.unique(matrix[:, c]).size for c in range(matrix.shape[1])])


def layer_clusters(
    layer: keras.layers.Layer, per_channel: bool = False, max_clusters: int | None = None
) -> dict[str, Clusters]:
    """:func:`recover_clusters` for every clusterable weight of a plain (e.g. stripped) layer,
    by weight name, per output channel when ``per_channel`` (and the weight has channel axes)."""
    from kopt.clustering.clusterable import clusterable_weights

    found = {}
    for weight in clusterable_weights(layer):
        axes = weight.channel_axes if per_channel else None
        try:
            found[weight.name] = recover_clusters(keras.ops.convert_to_numpy(weight.variable), axes, max_clusters)
        except ValueError as error:
            raise InvalidArgumentError(f"Layer {layer.name!r}, weight {weight.name!r}: {error}") from None
    return found
