"""Weight tensor <-> ``(M, C)`` matrix with one column per output channel.

Every clustering routine works on this canonical matrix: column ``c`` holds the weights of
output channel ``c`` (a single column when clustering per tensor). The channel axes are
moved last and the rest flattened, so for the common channels-last kernels (Dense, Conv)
the conversion is a free reshape.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np


def normalize_axes(channel_axes: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Sorted non-negative channel axes; ``()`` means "one channel" (per-tensor)."""
    if not channel_axes:
        return ()
    axes = sorted({axis % ndim for axis in channel_axes})
    return tuple(axes)


def _permutation(ndim: int, axes: tuple[int, ...]) -> list[int]:
    return [a for a in range(ndim) if a not in axes] + list(axes)


def matrix_shape(shape: Sequence[int], channel_axes: Sequence[int] | None) -> tuple[int, int]:
    """``(M, C)``: weights per channel and number of channels."""
    axes = normalize_axes(channel_axes, len(shape))
    channels = int(np.prod([shape[a] for a in axes])) if axes else 1
    return int(np.prod(shape)) // max(channels, 1), channels


def to_matrix(x: Any, channel_axes: Sequence[int] | None) -> Any:
    """``keras.ops`` tensor of any rank -> ``(M, C)``."""
    shape = tuple(x.shape)
    axes = normalize_axes(channel_axes, len(shape))
    perm = _permutation(len(shape), axes)
    if perm != list(range(len(shape))):
        x = keras.ops.transpose(x, perm)
    return keras.ops.reshape(x, matrix_shape(shape, axes))


def from_matrix(matrix: Any, shape: Sequence[int], channel_axes: Sequence[int] | None) -> Any:
    """Inverse of :func:`to_matrix` for a tensor of shape ``shape``."""
    axes = normalize_axes(channel_axes, len(shape))
    perm = _permutation(len(shape), axes)
    x = keras.ops.reshape(matrix, [shape[a] for a in perm])
    if perm != list(range(len(shape))):
        x = keras.ops.transpose(x, list(np.argsort(perm)))
    return x


def to_matrix_np(x: np.ndarray, channel_axes: Sequence[int] | None) -> np.ndarray:
    """NumPy twin of :func:`to_matrix`."""
    axes = normalize_axes(channel_axes, x.ndim)
    return np.transpose(x, _permutation(x.ndim, axes)).reshape(matrix_shape(x.shape, axes))


def from_matrix_np(matrix: np.ndarray, shape: Sequence[int], channel_axes: Sequence[int] | None) -> np.ndarray:
    """NumPy twin of :func:`from_matrix`."""
    axes = normalize_axes(channel_axes, len(shape))
    perm = _permutation(len(shape), axes)
    return np.transpose(np.reshape(matrix, [shape[a] for a in perm]), np.argsort(perm))
