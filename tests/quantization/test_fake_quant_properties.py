"""Properties of fake-quantization for any range and input (hypothesis).

Inside its range a fake-quant moves a value by at most half a quantization step and lands on
the grid; applying it twice changes nothing (idempotence), so a quantized model re-quantized
by lowering keeps its values. Checked for the bare ``fake_quant`` op, ``WeightQuantizer``
(symmetric, per channel or per tensor) and ``ActivationQuantizer`` in inference (stored range),
against the grid computed here in NumPy.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kopt.quantization import ActivationQuantizer, WeightQuantizer, fake_quant

pytestmark = pytest.mark.backends

SETTINGS = settings(max_examples=40, deadline=None)
# A few fixed shapes: JAX compiles each new shape once, any shape exercises the same numerics.
VALUES = arrays(np.float32, 32, elements=st.floats(-0.25, 1.25, width=32))
KERNEL_SHAPES = st.sampled_from([(1, 1, 1), (3, 3, 4), (2, 8, 3)])


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def grid(low: float, high: float, num_bits: int, narrow_range: bool) -> tuple[float, float, float]:
    """NumPy reference of the nudged grid: ``(nudged_low, nudged_high, step)``."""
    qmin, qmax = (1 if narrow_range else 0), (1 << num_bits) - 1
    step = (np.float32(high) - np.float32(low)) / np.float32(qmax - qmin)
    zero_point = np.floor(np.clip(qmin - np.float32(low) / step, qmin, qmax) + 0.5)
    return float((qmin - zero_point) * step), float((qmax - zero_point) * step), float(step)


def slack(*magnitudes: float) -> float:
    """Float32 rounding allowance of values of these magnitudes."""
    return 4 * float(np.finfo(np.float32).eps) * max(1.0, *(abs(m) for m in magnitudes))


ranges = st.tuples(st.floats(-50.0, 0.0, width=32), st.floats(0.0, 50.0, width=32))
ranges = ranges.filter(lambda r: r[1] - r[0] >= 0.01)
bits = st.sampled_from([4, 8])


@SETTINGS
@given(
    bounds=ranges,
    num_bits=bits,
    narrow_range=st.booleans(),
    fractions=VALUES,
)
def test_fake_quant_is_idempotent_and_within_half_a_step(bounds, num_bits, narrow_range, fractions):
    low, high = bounds
    x = (low + fractions.astype(np.float64) * (high - low)).astype(np.float32)  # some inside, some outside
    once = fake_quant(x, low, high, num_bits=num_bits, narrow_range=narrow_range)
    twice = fake_quant(once, low, high, num_bits=num_bits, narrow_range=narrow_range)
    np.testing.assert_array_equal(numpy(twice), numpy(once))

    nudged_low, nudged_high, step = grid(low, high, num_bits, narrow_range)
    q, tolerance = numpy(once), slack(low, high)
    assert np.all(q >= nudged_low - tolerance) and np.all(q <= nudged_high + tolerance)
    codes = (q - nudged_low) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)  # on the grid
    inside = (x >= nudged_low) & (x <= nudged_high)
    assert np.all(np.abs(q - x)[inside] <= step / 2 + tolerance)
    clipped = np.clip(x, nudged_low, nudged_high)  # outside: the nearest end of the range
    assert np.all(np.abs(q - clipped) <= step / 2 + tolerance)


@SETTINGS
@given(
    weights=arrays(
        np.float32,
        KERNEL_SHAPES,
        elements=st.floats(-10.0, 10.0, width=32),
    ),
    per_channel=st.booleans(),
    num_bits=bits,
)
def test_weight_quantizer_stays_within_half_a_step_and_is_idempotent(weights, per_channel, num_bits):
    quantizer = WeightQuantizer(num_bits=num_bits, per_channel=per_channel)
    once = numpy(quantizer(weights))
    twice = numpy(quantizer(once.astype(np.float32)))
    axes = (0, 1) if per_channel else None
    magnitude = np.max(np.abs(weights.astype(np.float64)), axis=axes, keepdims=True)
    magnitude = np.where(magnitude < 1e-6, 1.0, magnitude)  # all-zero channels keep a unit range
    step = magnitude / ((1 << (num_bits - 1)) - 1)  # symmetric narrow range: max |w| is the top code
    tolerance = slack(float(np.max(magnitude)))
    assert np.all(np.abs(once - weights) <= step / 2 + tolerance)
    codes = once / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    # The range is recomputed from the quantized tensor, whose largest magnitude can differ by
    # an ulp: idempotent up to float32 rounding, never by a grid step.
    np.testing.assert_allclose(twice, once, rtol=0, atol=tolerance)


@SETTINGS
@given(
    bounds=ranges,
    fractions=VALUES,
    num_bits=bits,
)
def test_activation_quantizer_in_inference_uses_the_stored_range(bounds, fractions, num_bits):
    low, high = bounds
    quantizer = ActivationQuantizer(num_bits=num_bits)
    host = keras.layers.Layer()
    state = quantizer.build(host, "act")
    state["range"].assign(np.array([low, high, 1.0], np.float32))
    x = (low + fractions.astype(np.float64) * (high - low)).astype(np.float32)
    once = quantizer(x, state, training=False)
    twice = quantizer(once, state, training=False)
    np.testing.assert_array_equal(numpy(twice), numpy(once))
    nudged_low, nudged_high, step = grid(low, high, num_bits, False)
    error = np.abs(numpy(once) - np.clip(x, nudged_low, nudged_high))
    assert np.all(error <= step / 2 + slack(low, high))
    np.testing.assert_array_equal(numpy(state["range"]), np.array([low, high, 1.0], np.float32))  # untouched
