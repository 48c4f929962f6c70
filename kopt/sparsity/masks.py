"""Pruning masks from weight magnitudes, in ``keras.ops`` (they run inside the training step).

Two kinds of mask:

* :func:`magnitude_mask` -- unstructured (or block) pruning: exactly
  ``k = floor(sparsity * n + 0.5)`` of the ``n`` weights (or blocks) with the smallest
  magnitude are zeroed. Ranking (one argsort) rather than a threshold keeps the count exact
  even when magnitudes tie, e.g. between weights that are already pruned.
* :func:`m_by_n_mask` -- structured M:N pruning: in every group of ``n`` consecutive weights
  along the input-channel axis, the ``m`` smallest are zeroed (TFLite's "2:4" is
  ``m_by_n=(2, 4)``: at least 2 zeros in every 4).

Block pooling (``block_size=(r, c)``) works on the last two axes of the weight in Keras layout
(``(in, out)`` of a Dense kernel, ``(in, out)`` of every tap of a convolution kernel): the
score of a block is the mean magnitude of the weights it covers, blocks at the edge may be
partial, and a pruned block zeroes all its weights.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from keras import ops

from kopt.core.errors import InvalidArgumentError


def pruned_count(sparsity: Any, size: int) -> Any:
    """How many of ``size`` elements are pruned at ``sparsity``: ``floor(sparsity * size + 0.5)``, int32."""
    sparsity = ops.cast(ops.convert_to_tensor(sparsity), "float32")
    return ops.cast(ops.floor(sparsity * float(size) + 0.5), "int32")


def _rank_mask(scores: Any, count: Any) -> Any:
    """1.0 where ``scores`` (flat) is not among the ``count`` smallest, else 0.0."""
    size = int(scores.shape[0])
    order = ops.argsort(scores)
    ranks = ops.scatter(ops.expand_dims(order, -1), ops.arange(size, dtype="int32"), (size,))
    return ops.cast(ops.greater_equal(ranks, count), "float32")


def _check_block_size(block_size: Sequence[int], shape: Sequence[int]) -> tuple[int, int]:
    block = tuple(int(b) for b in block_size)
    if len(block) != 2 or any(b < 1 for b in block):
        raise InvalidArgumentError(
            f"block_size={tuple(block_size)!r} is not valid: give two positive integers (rows, cols)."
        )
    if block != (1, 1) and len(shape) < 2:
        raise InvalidArgumentError(
            f"block_size={block} needs a weight of rank >= 2 (blocks cover its last two axes); "
            f"got shape {tuple(shape)}."
        )
    return block  # type: ignore[return-value]


def magnitude_mask(weights: Any, sparsity: Any, block_size: Sequence[int] = (1, 1)) -> Any:
    """Mask (same shape and dtype as ``weights``) zeroing the smallest-magnitude fraction ``sparsity``.

    ``sparsity`` may be a tensor (it comes from the schedule). With ``block_size=(1, 1)``
    exactly ``floor(sparsity * weights.size + 0.5)`` entries are zero; with blocks, that many
    blocks are zero. Among equal magnitudes the earlier index (row-major) is pruned first.
    """
    shape = tuple(int(d) for d in weights.shape)
    block = _check_block_size(block_size, shape)
    magnitude = ops.abs(ops.cast(weights, "float32"))
    if block == (1, 1):
        size = max(1, math.prod(shape))
        mask = _rank_mask(ops.reshape(magnitude, (size,)), pruned_count(sparsity, size))
        return ops.cast(ops.reshape(mask, shape), weights.dtype)

    rows, cols = shape[-2:]
    lead = shape[:-2]
    block_rows, block_cols = -(-rows // block[0]), -(-cols // block[1])
    pad_rows, pad_cols = block_rows * block[0] - rows, block_cols * block[1] - cols
    padding = [(0, 0)] * len(lead) + [(0, pad_rows), (0, pad_cols)]
    padded = ops.pad(magnitude, padding) if (pad_rows or pad_cols) else magnitude
    blocked = ops.reshape(padded, lead + (block_rows, block[0], block_cols, block[1]))
    # Mean over the real (unpadded) weights of each block; the counts are static.
    real = np.pad(np.ones((rows, cols), "float32"), [(0, pad_rows), (0, pad_cols)])
    counts = real.reshape(block_rows, block[0], block_cols, block[1]).sum(axis=(1, 3))
    scores = ops.sum(blocked, axis=(-3, -1)) / ops.convert_to_tensor(counts)
    num_blocks = math.prod(lead) * block_rows * block_cols
    block_mask = _rank_mask(ops.reshape(scores, (num_blocks,)), pruned_count(sparsity, num_blocks))
    block_mask = ops.reshape(block_mask, lead + (block_rows, 1, block_cols, 1))
    full = ops.broadcast_to(block_mask, lead + (block_rows, block[0], block_cols, block[1]))
    full = ops.reshape(full, lead + (block_rows * block[0], block_cols * block[1]))
    full = full[..., :rows, :cols]
    return ops.cast(full, weights.dtype)


def check_m_by_n(m_by_n: Sequence[int]) -> tuple[int, int]:
    """Validate ``m_by_n`` and return it as a tuple ``(m, n)`` with ``0 < m < n``."""
    try:
        m, n = (int(v) for v in m_by_n)
        valid = all(float(v) == int(v) for v in m_by_n) and 0 < m < n
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidArgumentError(
            f"m_by_n={m_by_n!r} is not valid: give two integers (m, n) with 0 < m < n, meaning "
            "'at least m zeros in every n consecutive weights', e.g. (2, 4)."
        )
    return m, n


def m_by_n_incompatibility(shape: Sequence[int], input_axis: int | None, m_by_n: Sequence[int]) -> str | None:
    """Why a weight of ``shape`` cannot take M:N sparsity along ``input_axis``; ``None`` if it can."""
    _, n = check_m_by_n(m_by_n)
    if input_axis is None:
        return "its deployed op has no input-channel (reduction) axis for M:N groups to run along"
    channels = int(shape[input_axis])
    if channels % n:
        return f"its input-channel count {channels} (axis {input_axis}) is not divisible by the group size {n}"
    return None


def m_by_n_mask(weights: Any, m_by_n: Sequence[int], input_axis: int) -> Any:
    """Mask zeroing the ``m`` smallest magnitudes in every ``n`` consecutive weights along ``input_axis``.

    ``input_axis`` is the input-channel axis of the weight in Keras layout (Dense kernel: 0,
    Conv2D kernel: 2 / -2). TFLite stores that axis innermost (FULLY_CONNECTED ``[out, in]``,
    CONV_2D ``OHWI``), so the groups are consecutive in the deployed weight buffer.
    """
    m, n = check_m_by_n(m_by_n)
    shape = tuple(int(d) for d in weights.shape)
    reason = m_by_n_incompatibility(shape, input_axis, (m, n))
    if reason:
        raise InvalidArgumentError(f"Cannot apply {m}:{n} sparsity to a weight of shape {shape}: {reason}.")
    magnitude = ops.moveaxis(ops.abs(ops.cast(weights, "float32")), input_axis, -1)
    moved_shape = tuple(int(d) for d in magnitude.shape)
    groups = ops.reshape(magnitude, (-1, n))
    order = ops.argsort(groups, axis=-1)
    ranks = ops.argsort(order, axis=-1)
    mask = ops.cast(ops.greater_equal(ranks, m), "float32")
    mask = ops.moveaxis(ops.reshape(mask, moved_shape), -1, input_axis)
    return ops.cast(mask, weights.dtype)
