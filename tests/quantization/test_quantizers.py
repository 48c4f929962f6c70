"""Quantizers against the NumPy reference of the TF FakeQuant / TFLite int8 scheme."""

import keras
import numpy as np
import pytest
from keras import ops
from qat_reference import fake_quant as ref_fake_quant
from qat_reference import grid_codes, nudge, symmetric_weight_codes, tie_distance

from kopt.quantization import ActivationQuantize, ActivationQuantizer, WeightQuantizer, fake_quant, nudged_range
from kopt.quantization.quantizers import nonnegative_nudged_range, symmetric_nudged_range
from tests.gradient_testing import layer_gradients

pytestmark = pytest.mark.backends


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def test_nudging_rounds_the_zero_point_half_away_from_zero():
    # scale 1/128, zero point from min exactly 126.5: TF/TFLite pick 127 (half-to-even would pick 126).
    lo, hi = -126.5 / 128, 128.5 / 128
    nlo, nhi = nudged_range(lo, hi)
    assert as_np(nlo) == pytest.approx(-127 / 128, abs=1e-9)
    assert as_np(nhi) == pytest.approx(1.0, abs=1e-9)
    y = as_np(fake_quant(np.array([-127 / 128, 1.0, 2.0, -2.0], "float32"), lo, hi))
    np.testing.assert_allclose(y, [-127 / 128, 1.0, 1.0, -127 / 128], atol=1e-7)


def test_fake_quant_matches_reference():
    cases = [(-1.0, 1.0, 8, False), (0.0, 6.0, 8, False), (-0.3, 2.7, 8, False), (0.2, 3.0, 8, False),
             (-5.0, -1.0, 8, False), (-1.0, 1.0, 8, True), (-0.7, 1.9, 4, False)]
    for lo, hi, num_bits, narrow in cases:
        x = np.random.default_rng(0).uniform(lo - 1, hi + 1, 4000).astype("float32")
        y = as_np(fake_quant(x, lo, hi, num_bits=num_bits, narrow_range=narrow))
        ref = ref_fake_quant(x, lo, hi, num_bits, narrow)
        nlo, nhi, scale = nudge(lo, hi, num_bits, narrow)
        np.testing.assert_allclose(y, ref, atol=1e-5 * scale + 1e-6 * abs(nhi))
        codes, ref_codes = grid_codes(y, lo, hi, num_bits, narrow), grid_codes(ref, lo, hi, num_bits, narrow)
        away_from_ties = tie_distance(x, lo, hi, num_bits, narrow) > 1e-3
        assert np.array_equal(codes[away_from_ties], ref_codes[away_from_ties]), (lo, hi, num_bits, narrow)
        assert y.min() >= nlo - 1e-6 and y.max() <= nhi + 1e-6


def test_fake_quant_golden_values():
    # Range [0, 6] (a ReLU6): scale 6/255, zero point 0.
    x = np.array([-1.0, 0.0, 0.01, 0.0118, 3.0, 5.99, 7.0], "float32")
    expected = np.array([0, 0, 0, 1, 128, 255, 255]) * 6 / 255
    np.testing.assert_allclose(as_np(fake_quant(x, 0.0, 6.0)), expected, atol=1e-6)


def test_weight_quantizer_per_channel_gives_symmetric_int8_codes():
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 5)).astype("float32")
    w[..., 2] *= 0.01  # one small channel must keep its own scale
    q = as_np(WeightQuantizer(per_channel=True)(w))
    codes, scale = symmetric_weight_codes(w, axis_channels=5)
    np.testing.assert_allclose(q, codes * scale, rtol=1e-5, atol=1e-7)
    assert np.abs(codes).max() == 127 and np.abs(codes).max(axis=(0, 1, 2)).tolist() == [127] * 5


def test_weight_quantizer_depthwise_channels_are_in_times_multiplier():
    w = np.random.default_rng(2).normal(size=(3, 3, 4, 2)).astype("float32")
    w[:, :, 1, 0] *= 0.05
    q = as_np(WeightQuantizer(per_channel=True, channel_dims=2)(w))
    codes, scale = symmetric_weight_codes(w.reshape(3, 3, 8), axis_channels=8)
    np.testing.assert_allclose(q.reshape(3, 3, 8), codes * scale, rtol=1e-5, atol=1e-7)


def test_weight_quantizer_per_tensor_and_four_bits():
    w = np.random.default_rng(3).normal(size=(6, 4)).astype("float32")
    q8 = as_np(WeightQuantizer(per_channel=False)(w))
    codes, scale = symmetric_weight_codes(w, axis_channels=None)
    np.testing.assert_allclose(q8, codes * scale, rtol=1e-5, atol=1e-7)
    q4 = as_np(WeightQuantizer(num_bits=4, per_channel=False)(w))
    steps = q4 / (np.abs(w).max() / 7)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(np.round(steps)).max() == 7 and len(np.unique(np.round(steps))) <= 15


def test_weight_quantizer_all_zero_channel_stays_zero():
    w = np.zeros((2, 3), "float32")
    w[:, 0] = [0.5, -1.0]
    q = as_np(WeightQuantizer(per_channel=True)(w))
    assert np.all(np.isfinite(q)) and np.all(q[:, 1:] == 0)


def test_quantizer_config_validation():
    with pytest.raises(ValueError, match="num_bits"):
        WeightQuantizer(num_bits=16)
    with pytest.raises(ValueError, match="mode"):
        ActivationQuantizer(mode="percentile")
    with pytest.raises(ValueError, match="init_range"):
        ActivationQuantizer(init_range=(1.0, 2.0))


def _run(layer, batches, training=True):
    return [as_np(layer(np.asarray(b, "float32"), training=training)) for b in batches]


def test_moving_average_range_starts_from_the_first_batch():
    layer = ActivationQuantize(ActivationQuantizer(decay=0.9))
    assert layer(np.zeros((1, 2), "float32")).shape == (1, 2)  # builds; inference keeps the init range
    assert layer.range == (-6.0, 6.0)
    _run(layer, [[[-1.0, 3.0]]])
    assert layer.range == pytest.approx((-1.0, 3.0))
    _run(layer, [[[0.5, 5.0]]])  # min clipped to 0 before averaging: range must contain 0
    assert layer.range == pytest.approx((0.9 * -1.0 + 0.1 * 0.0, 0.9 * 3.0 + 0.1 * 5.0))
    before = layer.range
    _run(layer, [[[-100.0, 100.0]]], training=False)
    assert layer.range == before


@pytest.mark.parametrize("mode, expected", [("last_value", (0.0, 2.0)), ("all_values", (-1.0, 4.0))])
def test_last_value_and_all_values_modes(mode, expected):
    layer = ActivationQuantize(ActivationQuantizer(mode=mode))
    _run(layer, [[[-1.0, 4.0]], [[0.5, 2.0]]])
    assert layer.range == pytest.approx(expected)


def test_activation_quantizer_output_is_on_the_learnt_grid():
    layer = ActivationQuantize(ActivationQuantizer(mode="last_value"))
    x = np.random.default_rng(4).uniform(-0.7, 2.3, (8, 16)).astype("float32")
    (y,) = _run(layer, [x])
    lo, hi = layer.range
    np.testing.assert_allclose(y, ref_fake_quant(x, lo, hi), atol=1e-5 * (hi - lo) / 255)


def test_shared_range_unites_the_calls_of_one_forward_pass():
    layer = ActivationQuantize(ActivationQuantizer(decay=0.5, num_calls=2))
    _run(layer, [[[0.0, 1.0]], [[-2.0, 0.5]]])  # one forward pass: two tensors
    assert layer.range == pytest.approx((-2.0, 1.0))
    _run(layer, [[[0.0, 3.0]], [[0.0, 1.0]]])
    assert layer.range == pytest.approx((0.5 * -2.0 + 0.5 * 0.0, 0.5 * 1.0 + 0.5 * 3.0))
    # In inference both calls use the one stored range.
    lo, hi = layer.range
    x = np.array([[-0.77, 1.33]], "float32")
    a, b = _run(layer, [x, x], training=False)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, ref_fake_quant(x, lo, hi), atol=1e-6)


@pytest.mark.parametrize("mode", ["moving_average", "last_value", "all_values"])
def test_nonnegative_quantizer_gives_the_same_ranges_and_values_on_relu_outputs(mode):
    x = np.maximum(np.random.default_rng(5).normal(size=(4, 32)), 0).astype("float32")
    general = ActivationQuantize(ActivationQuantizer(decay=0.5, mode=mode))
    relu_only = ActivationQuantize(ActivationQuantizer(decay=0.5, mode=mode, nonnegative=True))
    for batch in (x, 2 * x, 0 * x, 0.3 * x):  # the all-zero batch exercises the minimum width
        a, b = _run(general, [batch])[0], _run(relu_only, [batch])[0]
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(as_np(general.weights[0]), as_np(relu_only.weights[0]))
    assert relu_only.range[0] == 0.0


class _GradientProbe(keras.layers.Layer):
    """A trainable tensor passed through ``transform`` (a layer, or a function taking
    ``training``): the tensor's gradient is the transform's. The inputs only carry the batch."""

    def __init__(self, values, transform):
        super().__init__()
        self.values = self.add_weight(shape=values.shape, initializer=keras.initializers.Constant(values))
        self.transform = transform  # a layer is tracked, with its range variable

    def call(self, inputs, training=None):
        return self.transform(ops.convert_to_tensor(self.values) + 0.0 * inputs, training=training)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_straight_through_gradient_is_masked_exactly_where_values_were_clipped(nonnegative):
    # Steps: the batch's own range (nudging moves the top below 2.7: one value clipped),
    # a wider batch under a moving average (its top values clipped), a narrower batch (none).
    rng = np.random.default_rng(7)
    first = rng.uniform(0.0 if nonnegative else -0.3, 2.7, (6, 40)).astype("float32")
    first[0, :2] = [0.0 if nonnegative else -0.3, 2.7]
    quantizer = ActivationQuantizer(decay=0.5, nonnegative=nonnegative)
    layer = _GradientProbe(first, ActivationQuantize(quantizer))
    upstream = rng.normal(size=first.shape).astype("float32")
    dummy = np.zeros(first.shape, "float32")
    layer(dummy)  # builds; inference leaves the range alone
    clipped_per_step = []
    for values in (first, 2.0 * first, 0.5 * first):
        layer.values.assign(values)
        grad = layer_gradients(layer, dummy, upstream)[layer.values.path]
        if keras.backend.backend() == "jax":  # stateless gradients: apply the same update for real
            layer(dummy, training=True)
        lo, hi, _ = nudge(*layer.transform.range)
        inside = (values >= np.float32(lo)) & (values <= np.float32(hi))
        np.testing.assert_array_equal(grad, upstream * inside)
        clipped_per_step.append(int((~inside).sum()))
    assert clipped_per_step[1] > 10 and clipped_per_step[2] == 0
    if not nonnegative:
        assert clipped_per_step[0] == 1


@pytest.mark.parametrize("nonnegative", [False, True])
def test_fake_quant_bounds_skip_the_mask_only_when_nothing_is_clipped(nonnegative):
    x = np.linspace(0.0 if nonnegative else -2.0, 2.0, 101).astype("float32")
    upstream = np.random.default_rng(8).normal(size=x.shape).astype("float32")

    def gradient(lo, hi, bounds):
        def quantize(v, training):
            return fake_quant(v, lo, hi, training=training, nonnegative=nonnegative, bounds=bounds)

        layer = _GradientProbe(x, quantize)
        layer(np.zeros_like(x))  # builds
        return layer_gradients(layer, np.zeros_like(x), upstream)[layer.values.path]

    wide_lo, wide_hi, _ = nudge(-2.5, 2.5)
    assert wide_lo < x.min() and x.max() < wide_hi
    np.testing.assert_array_equal(gradient(-2.5, 2.5, (x.min(), x.max())), upstream)
    narrow_lo, narrow_hi, _ = nudge(-1.0, 1.0)
    inside = (x >= np.float32(narrow_lo)) & (x <= np.float32(narrow_hi))
    assert not inside.all()
    np.testing.assert_array_equal(gradient(-1.0, 1.0, (x.min(), x.max())), upstream * inside)
    np.testing.assert_array_equal(gradient(-1.0, 1.0, None), upstream * inside)


def test_fake_quant_bounds_per_channel_mask_only_the_channels_whose_range_clips():
    rng = np.random.default_rng(9)
    x = rng.uniform(-1.0, 1.0, (30, 3)).astype("float32")
    lo, hi = np.float32([-1.5, -0.5, -1.5]), np.float32([1.5, 1.5, 0.5])  # channels 1 and 2 clip
    upstream = rng.normal(size=x.shape).astype("float32")
    bounds = (x.min(axis=0), x.max(axis=0))

    def quantize(v, training):
        return fake_quant(v, lo, hi, per_channel=True, training=training, bounds=bounds)

    layer = _GradientProbe(x, quantize)
    layer(np.zeros_like(x))  # builds
    grad = layer_gradients(layer, np.zeros_like(x), upstream)[layer.values.path]
    nudged = [nudge(a, b) for a, b in zip(lo, hi)]
    inside = np.stack([(x[:, c] >= np.float32(n[0])) & (x[:, c] <= np.float32(n[1])) for c, n in enumerate(nudged)], 1)
    assert inside[:, 0].all() and not inside[:, 1].all() and not inside[:, 2].all()
    np.testing.assert_array_equal(grad, upstream * inside)


def _log_uniform(rng, size):
    return np.exp(rng.uniform(np.log(1e-6), np.log(1e6), size)).astype("float32")


@pytest.mark.parametrize("num_bits", [2, 4, 7, 8])
def test_shortcut_nudged_ranges_equal_the_general_nudging_bit_for_bit(num_bits):
    rng = np.random.default_rng(num_bits)
    values = np.concatenate([_log_uniform(rng, 5000), np.float32([1e-6, 1e-3, 0.1, 1.0, 6.0, 127.0, 1e30])])
    low, high = symmetric_nudged_range(values, num_bits)
    ref_low, ref_high = nudged_range(-values, values, num_bits, narrow_range=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(low), ops.convert_to_numpy(ref_low))
    np.testing.assert_array_equal(ops.convert_to_numpy(high), ops.convert_to_numpy(ref_high))
    low, high = nonnegative_nudged_range(values, num_bits)
    ref_low, ref_high = nudged_range(np.zeros_like(values), values, num_bits, narrow_range=False)
    np.testing.assert_array_equal(ops.convert_to_numpy(low), ops.convert_to_numpy(ref_low))
    np.testing.assert_array_equal(ops.convert_to_numpy(high), ops.convert_to_numpy(ref_high))
