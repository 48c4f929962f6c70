"""Mask computation in keras.ops against independent NumPy references (and property tests)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from kopt.core.errors import InvalidArgumentError
from kopt.sparsity.masks import m_by_n_incompatibility, m_by_n_mask, magnitude_mask

ALL_BACKENDS = pytest.mark.backends  # full grids run under TensorFlow; a sample under JAX and PyTorch


def sample(*cases, on_all=()):
    """Parametrize cases, marking those at the indices in ``on_all`` to run under every backend."""
    return [pytest.param(*c, marks=ALL_BACKENDS) if i in on_all else pytest.param(*c) for i, c in enumerate(cases)]


# ------------------------------------------------------------------ NumPy references
def np_pruned_count(sparsity, size):
    return int(np.floor(np.float32(sparsity) * np.float32(size) + np.float32(0.5)))


def np_magnitude_mask(w, sparsity):
    flat = np.abs(w).ravel()
    order = np.argsort(flat, kind="stable")
    mask = np.ones(flat.size, w.dtype)
    mask[order[: np_pruned_count(sparsity, flat.size)]] = 0
    return mask.reshape(w.shape)


def np_block_mask(w, sparsity, block):
    rows, cols = w.shape[-2:]
    br, bc = block
    nr, nc = -(-rows // br), -(-cols // bc)
    lead = w.shape[:-2]
    scores = np.zeros(lead + (nr, nc), np.float64)
    for i in range(nr):
        for j in range(nc):
            scores[..., i, j] = np.abs(w[..., i * br:(i + 1) * br, j * bc:(j + 1) * bc]).mean(axis=(-2, -1))
    block_mask = np_magnitude_mask(scores.astype(np.float32), sparsity)
    full = np.repeat(np.repeat(block_mask, br, axis=-2), bc, axis=-1)
    return full[..., :rows, :cols]


def np_m_by_n_mask(w, m, n, axis):
    moved = np.moveaxis(np.abs(w), axis, -1)
    mask = np.ones_like(moved)
    flat, flat_mask = moved.reshape(-1, moved.shape[-1]), mask.reshape(-1, moved.shape[-1])
    for r in range(flat.shape[0]):
        for g in range(0, flat.shape[1], n):
            smallest = np.argsort(flat[r, g:g + n], kind="stable")[:m]
            flat_mask[r, g + smallest] = 0
    return np.moveaxis(flat_mask.reshape(moved.shape), -1, axis)


def distinct_weights(shape, seed=0):
    """Random weights with distinct magnitudes (ties would make the reference ambiguous)."""
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    values = rng.permutation(size).astype(np.float32) + rng.uniform(0.1, 0.9, size).astype(np.float32)
    return (values * rng.choice([-1, 1], size)).reshape(shape).astype(np.float32)


def run(fn, *args, **kwargs):
    return np.asarray(ops.convert_to_numpy(fn(*args, **kwargs)))


# ------------------------------------------------------------------ magnitude
@pytest.mark.parametrize(
    "shape, sparsity",
    sample(
        *[(shape, s) for shape in [(7, 5), (3, 3, 4, 8), (10,), (1, 9, 6)] for s in [0.0, 0.25, 0.5, 0.9]],
        on_all=(6, 13),
    ),
)
def test_magnitude_mask_matches_numpy(shape, sparsity):
    w = distinct_weights(shape)
    np.testing.assert_array_equal(run(magnitude_mask, w, sparsity), np_magnitude_mask(w, sparsity))


@ALL_BACKENDS
def test_magnitude_mask_accepts_tensor_sparsity_and_counts_ties_exactly():
    w = np.zeros((4, 6), np.float32)
    w[0, :3] = [3.0, -2.0, 1.0]
    mask = run(magnitude_mask, w, ops.convert_to_tensor(0.5, "float32"))
    assert mask.sum() == 12  # exactly half pruned even though 21 weights tie at 0
    assert mask[0, :3].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "shape, block, sparsity",
    sample(
        *[
            (shape, block, s)
            for shape, block in [((8, 6), (2, 3)), ((7, 5), (2, 2)), ((3, 3, 6, 4), (1, 4)), ((5, 9), (4, 1))]
            for s in [0.3, 0.6]
        ],
        on_all=(3,),
    ),
)
def test_block_mask_matches_numpy(shape, block, sparsity):
    w = distinct_weights(shape, seed=1)
    np.testing.assert_array_equal(run(magnitude_mask, w, sparsity, block), np_block_mask(w, sparsity, block))


@ALL_BACKENDS
def test_block_mask_prunes_whole_blocks():
    w = distinct_weights((8, 8), seed=2)
    mask = run(magnitude_mask, w, 0.5, (2, 4))
    blocks = mask.reshape(4, 2, 2, 4).transpose(0, 2, 1, 3).reshape(8, 8)
    assert set(np.unique(blocks.sum(axis=1))) <= {0.0, 8.0}
    assert mask.mean() == 0.5


@ALL_BACKENDS
def test_block_size_needs_rank_two():
    with pytest.raises(InvalidArgumentError, match="rank >= 2"):
        magnitude_mask(np.ones(8, np.float32), 0.5, (1, 2))


# ------------------------------------------------------------------ M:N
@pytest.mark.parametrize(
    "shape, axis, m_by_n",
    sample(
        *[(shape, axis, mn) for shape, axis in [((8, 5), 0), ((3, 3, 12, 4), -2), ((2, 2, 4, 8), -1), ((4, 16), 0)]
          for mn in [(2, 4), (1, 4), (3, 4)]],
        on_all=(3, 8),
    ),
)
def test_m_by_n_mask_matches_numpy(shape, axis, m_by_n):
    w = distinct_weights(shape, seed=3)
    np.testing.assert_array_equal(run(m_by_n_mask, w, m_by_n, axis), np_m_by_n_mask(w, *m_by_n, axis))


@ALL_BACKENDS
def test_m_by_n_groups_run_along_the_input_axis():
    w = distinct_weights((3, 3, 8, 2), seed=4)  # Conv2D (kh, kw, in, out)
    mask = run(m_by_n_mask, w, (2, 4), -2)
    ohwi = np.transpose(mask, (3, 0, 1, 2)).reshape(-1, 4)  # TFLite CONV_2D layout, groups innermost
    assert (ohwi.sum(axis=1) == 2).all()


@ALL_BACKENDS
def test_m_by_n_incompatibility_reasons():
    assert m_by_n_incompatibility((6, 3), 0, (2, 4)) == (
        "its input-channel count 6 (axis 0) is not divisible by the group size 4"
    )
    assert "no input-channel" in m_by_n_incompatibility((3, 3, 8, 1), None, (2, 4))
    assert m_by_n_incompatibility((8, 3), 0, (2, 4)) is None
    with pytest.raises(InvalidArgumentError, match="not divisible"):
        m_by_n_mask(np.ones((6, 3), np.float32), (2, 4), 0)


@ALL_BACKENDS
@pytest.mark.parametrize("bad", [(4, 4), (0, 4), (5, 4), (2,), "2:4", (2.5, 4)])
def test_bad_m_by_n_values(bad):
    with pytest.raises(InvalidArgumentError, match="m_by_n="):
        m_by_n_mask(np.ones((8, 2), np.float32), bad, 0)


# ------------------------------------------------------------------ properties (issue 11)
shapes = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, sparsity=st.floats(0.0, 0.99), seed=st.integers(0, 2**16))
def test_property_magnitude_mask_hits_sparsity(shape, sparsity, seed):
    w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    mask = run(magnitude_mask, w, sparsity)
    size = w.size
    assert int((mask == 0).sum()) == np_pruned_count(sparsity, size)
    assert abs((mask == 0).mean() - sparsity) <= 0.5 / size + 1e-6
    kept, pruned = np.abs(w[mask == 1]), np.abs(w[mask == 0])
    if kept.size and pruned.size:
        assert pruned.max() <= kept.min()


@settings(max_examples=25, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    groups=st.integers(1, 4),
    out=st.integers(1, 3),
    m_by_n=st.sampled_from([(1, 2), (2, 4), (3, 4), (1, 3), (4, 8)]),
    seed=st.integers(0, 2**16),
)
def test_property_m_by_n_holds_for_any_divisible_shape(lead, groups, out, m_by_n, seed):
    m, n = m_by_n
    shape = lead + (groups * n, out)
    axis = len(lead)
    w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    mask = run(m_by_n_mask, w, m_by_n, axis)
    zeros_per_group = (np.moveaxis(mask, axis, -1).reshape(-1, n) == 0).sum(axis=1)
    assert (zeros_per_group == m).all()
    deployed = np.moveaxis(w * mask, axis, -1).reshape(-1, n)
    assert ((deployed == 0).sum(axis=1) >= m).all()
