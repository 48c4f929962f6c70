"""kopt.core.backend.fused: the same values fused or eager, and a failed compile falls back."""

import contextlib

import keras
import numpy as np
import pytest

from kopt.core import backend
from kopt.quantization.quantizers import fake_quant, grid_fake_quant, masked_gradient, nudged_range

pytestmark = pytest.mark.backends


def as_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def activations(shape=(8, 32, 32, 32), seed=0):
    """Large enough to be fused, with values on and beside the grid's ties."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.5, 2.0, shape).astype("float32")
    values.flat[:512] = (np.arange(512) % 256 + 0.5).astype("float32") * (6.0 / 255)  # exact half steps
    return values


@pytest.mark.parametrize("nonnegative", [False, True])
def test_fused_fake_quant_equals_the_eager_ops_bit_for_bit(nonnegative):
    x = activations()
    if nonnegative:
        x = np.maximum(x, 0.0)
    low, high = (0.0, 6.0) if nonnegative else (-1.3, 4.1)
    lo, hi = keras.ops.convert_to_tensor(low), keras.ops.convert_to_tensor(high)
    assert x.size >= backend.FUSE_MIN_ELEMENTS
    fused_values = as_np(grid_fake_quant(x, lo, hi, nonnegative=nonnegative))
    with backend.unfused():
        eager_values = as_np(grid_fake_quant(x, lo, hi, nonnegative=nonnegative))
    np.testing.assert_array_equal(fused_values, eager_values)
    from kopt.quantization import quantizers

    snap = quantizers._snapper(8, False, nonnegative)
    assert snap.runs_compiled() == (keras.backend.backend() == "torch")  # on PyTorch the fused kernel ran
    # and both equal NumPy's TF FakeQuant sequence on this nudged range
    steps = 255.0
    scale = np.float32(high - low) / np.float32(steps)
    zero_point = np.floor(np.clip(0.0 - np.float32(low) / scale, 0, 255) + 0.5)
    nlo, nhi = np.float32((0 - zero_point) * scale), np.float32((255 - zero_point) * scale)
    position = (np.clip(x, nlo, nhi) - nlo) / scale
    reference = np.floor(position + 0.5) * scale + nlo
    away_from_ties = np.abs(position - np.floor(position) - 0.5) > 1e-3  # float order decides exact ties
    np.testing.assert_allclose(fused_values[away_from_ties], reference[away_from_ties], atol=1e-5)

    upstream = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    fused_gradient = as_np(masked_gradient(x, lo, hi, upstream, nonnegative=nonnegative))
    with backend.unfused():
        eager_gradient = as_np(masked_gradient(x, lo, hi, upstream, nonnegative=nonnegative))
    np.testing.assert_array_equal(fused_gradient, eager_gradient)
    inside = (x <= high) if nonnegative else ((x >= low) & (x <= high))
    np.testing.assert_array_equal(fused_gradient, np.where(inside, upstream, 0.0))


def test_a_compile_failure_falls_back_to_the_eager_ops(monkeypatch):
    calls = []

    def double(values):
        calls.append("eager")
        return values * 2.0

    def broken_compile(function):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler")

        return compiled

    monkeypatch.setattr(backend, "_compile", broken_compile)
    fused_double = backend.fused(double)
    x = np.ones((backend.FUSE_MIN_ELEMENTS,), "float32")
    np.testing.assert_array_equal(as_np(fused_double(x)), 2 * x)
    np.testing.assert_array_equal(as_np(fused_double(x)), 2 * x)
    assert calls == ["eager", "eager"]  # the failed compile is not retried


def test_training_fake_quant_of_a_large_activation_has_the_straight_through_gradient():
    values = activations((4, 32, 32, 32), seed=2)
    lo, hi = keras.ops.convert_to_tensor(-1.0), keras.ops.convert_to_tensor(3.0)
    nudged_lo, nudged_hi = (as_np(v) for v in nudged_range(lo, hi))

    def loss(v):
        return keras.ops.sum(fake_quant(v, lo, hi, training=True) * 3.0)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(values)
        with tf.GradientTape() as tape:
            result = loss(variable)
        gradient = as_np(tape.gradient(result, variable))
    elif keras.backend.backend() == "jax":
        import jax

        gradient = as_np(jax.grad(loss)(values))
    else:
        import torch

        variable = torch.tensor(values, requires_grad=True)
        loss(variable).backward()
        gradient = as_np(variable.grad)
    expected = np.where((values >= nudged_lo) & (values <= nudged_hi), 3.0, 0.0)
    np.testing.assert_array_equal(gradient, expected)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"nonnegative": True},
        {"mode": "all_values"},
        {"mode": "last_value", "nonnegative": True},
        {"symmetric": True, "num_bits": 16},
    ],
    ids=["moving_average", "nonnegative", "all_values", "last_value_nonnegative", "symmetric16"],
)
def test_activation_training_steps_fused_equal_the_eager_ops_bit_for_bit(settings):
    """Range update, nudging, fake-quant and gradient of several training steps: the fused run
    (range arithmetic and snap as compiled kernels on PyTorch) and the op-by-op run give the same
    bits, the stored range included, on batches that clip (a wider batch) and that do not."""
    from kopt.quantization import ActivationQuantize, ActivationQuantizer
    from tests.gradient_testing import layer_gradients
    from tests.quantization.test_quantizers import _GradientProbe

    base = activations((2, 32, 32, 32), seed=3)
    if settings.get("nonnegative"):
        base = np.maximum(base, 0.0)
    upstream = np.random.default_rng(4).normal(size=base.shape).astype("float32")
    dummy = np.zeros(base.shape, "float32")
    runs = []
    for eager in (False, True):
        probe = _GradientProbe(base, ActivationQuantize(ActivationQuantizer(decay=0.9, **settings)))
        probe(dummy)
        steps = []
        with backend.unfused() if eager else contextlib.nullcontext():
            for factor in (1.0, 1.7, 0.4):
                probe.values.assign(base * factor)
                gradient = layer_gradients(probe, dummy, upstream)[probe.values.path]
                if keras.backend.backend() == "jax":  # stateless gradients: apply the same update for real
                    probe(dummy, training=True)
                outputs = as_np(probe(dummy, training=False))
                steps.append((gradient, outputs, as_np(probe.transform.weights[0])))
        runs.append(steps)
    for (fused_step, eager_step) in zip(*runs):
        for fused_value, eager_value in zip(fused_step, eager_step):
            np.testing.assert_array_equal(fused_value, eager_value)
    if settings.get("mode") != "last_value":  # a range learnt from earlier batches clipped the wider one
        assert any(np.any(step[0] == 0.0) for step in runs[0])
