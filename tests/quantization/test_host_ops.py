"""The activation range's scalar arithmetic on the host (kopt.core.host_ops, eager PyTorch) gives the
bits the backend's own ops give, and a quantizer trained on the host path steps like the device path."""

import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from kopt.core import backend, host_ops
from kopt.quantization import ActivationQuantize, ActivationQuantizer, WeightQuantizer
from kopt.quantization.quantizers import _grid_parameters

pytestmark = pytest.mark.backends

SETTINGS = [
    {},
    {"nonnegative": True},
    {"mode": "all_values"},
    {"mode": "last_value"},
    {"symmetric": True, "num_bits": 16},
    {"num_bits": 4, "decay": 0.9},
]
IDS = ["moving_average", "nonnegative", "all_values", "last_value", "symmetric16", "4bit"]


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _ranges(rng, count, nonnegative):
    """Batch extremes and stored ranges over many magnitudes, zero and degenerate widths included."""
    magnitude = np.exp(rng.uniform(np.log(1e-6), np.log(1e4), (4, count))).astype("float32")
    magnitude[:, :8] = np.float32([0.0, 1e-7, 1e-3, 5e-4, 1.0, 6.0, 255.0, 1e4])[:, None].T
    batch_min = np.zeros(count, "float32") if nonnegative else -magnitude[0] * (rng.uniform(size=count) < 0.7)
    batch_max = magnitude[1] * (rng.uniform(size=count) < 0.9)
    seen = (rng.uniform(size=count) < 0.8).astype("float32")
    stored_min = np.zeros(count, "float32") if nonnegative else -magnitude[2]
    stored = np.stack([stored_min, magnitude[3], seen]).astype("float32")
    return stored, batch_min.astype("float32"), batch_max.astype("float32")


def _per_op_ieee():
    """JAX is left out: XLA turns a division by a constant into a multiplication by its reciprocal,
    so its ops differ from NumPy's in the last bit (the host path serves PyTorch only)."""
    if keras.backend.backend() == "jax":
        pytest.skip("XLA divides by a constant as a multiplication by its reciprocal")


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_the_range_step_on_the_host_equals_the_backends_ops_bit_for_bit(settings):
    _per_op_ieee()
    quantizer = ActivationQuantizer(**settings)
    stored, batch_min, batch_max = _ranges(np.random.default_rng(0), 4000, quantizer.nonnegative)
    on_device = quantizer._range_step(ops.convert_to_tensor(stored), ops.convert_to_tensor(batch_min),
                                      ops.convert_to_tensor(batch_max))
    on_host = quantizer._range_step(stored, batch_min, batch_max, host_ops)
    for device_value, host_value in zip(on_device[:5], on_host[:5]):  # the last is one flag over all
        assert np.asarray(host_value).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(host_value), as_np(device_value))


@pytest.mark.parametrize("num_bits, narrow_range, nonnegative", [(8, False, False), (8, False, True), (16, True, False),
                                                                 (4, False, False)])
def test_the_grid_parameters_on_the_host_equal_the_backends_ops_bit_for_bit(num_bits, narrow_range, nonnegative):
    _per_op_ieee()
    stored, batch_min, batch_max = _ranges(np.random.default_rng(1), 4000, nonnegative)
    quantizer = ActivationQuantizer(num_bits=num_bits, symmetric=narrow_range, nonnegative=nonnegative)
    _, low, high, *_ = quantizer._range_step(stored, batch_min, batch_max, host_ops)  # nudged ranges
    grid = _grid_parameters(num_bits, narrow_range, nonnegative)
    on_device = grid(ops.convert_to_tensor(low), ops.convert_to_tensor(high))
    on_host = grid(low, high, host_ops)
    for device_value, host_value in zip(on_device, on_host):
        np.testing.assert_array_equal(np.broadcast_to(host_value, np.shape(low)), as_np(device_value))


@pytest.mark.parametrize("settings", SETTINGS[:5], ids=IDS[:5])
def test_training_steps_on_the_host_path_equal_the_device_path_bit_for_bit(settings):
    """Eager PyTorch takes the host path; forcing the device path there gives the same stored
    ranges, outputs and gradients, for a small tensor (snapped op by op) and a large one (fused),
    on batches that clip and that do not."""
    if keras.backend.backend() != "torch":
        pytest.skip("the host path serves eager PyTorch only")
    from tests.gradient_testing import layer_gradients
    from tests.quantization.test_quantizers import _GradientProbe

    for shape in ((4, 33), (2, 32, 32, 32)):
        base = np.random.default_rng(3).normal(0.5, 2.0, shape).astype("float32")
        if settings.get("nonnegative"):
            base = np.maximum(base, 0.0)
        upstream = np.random.default_rng(4).normal(size=shape).astype("float32")
        dummy = np.zeros(shape, "float32")
        runs = []
        for host in (True, False):
            probe = _GradientProbe(base, ActivationQuantize(ActivationQuantizer(decay=0.9, **settings)))
            probe(dummy)
            steps = []
            with contextlib.nullcontext() if host else backend.scalars_on_device():
                for factor in (1.0, 1.7, 0.4, 0.0):
                    probe.values.assign(base * factor)
                    gradient = layer_gradients(probe, dummy, upstream)[probe.values.path]
                    trained = as_np(probe(dummy, training=True))  # a second step, the same in both runs
                    inferred = as_np(probe(dummy, training=False))
                    steps.append((gradient, trained, inferred, as_np(probe.transform.weights[0])))
            runs.append(steps)
        for host_step, device_step in zip(*runs):
            for host_value, device_value in zip(host_step, device_step):
                np.testing.assert_array_equal(host_value, device_value)
        if settings.get("mode") != "last_value":  # some step clipped: the masked gradient was compared too
            assert any(np.any(step[0] == 0.0) for step in runs[0])


@pytest.mark.parametrize(
    "shape, settings",
    [((3, 3, 8, 16), {}), ((3, 3, 4, 2), {"channel_dims": 2}), ((40, 12), {"per_channel": False}),
     ((512, 160), {}), ((3, 3, 8, 16), {"num_bits": 4})],
    ids=["conv", "depthwise", "per_tensor", "large", "4bit"],
)
def test_weight_fake_quant_on_the_host_path_equals_the_device_path_bit_for_bit(shape, settings):
    """Eager PyTorch computes each channel's range on the host: the same quantized weights and straight-through
    gradients as the device path, with a channel whose largest weight sits on the range's end, an all-zero
    channel, and after a step that moved weights."""
    if keras.backend.backend() != "torch":
        pytest.skip("the host path serves eager PyTorch only")
    from tests.gradient_testing import layer_gradients
    from tests.quantization.test_quantizers import _GradientProbe

    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 0.3, shape).astype("float32")
    base[..., 0] = 0.0  # an all-zero channel
    upstream = rng.normal(size=shape).astype("float32")
    dummy = np.zeros(shape, "float32")
    runs = []
    for host in (True, False):
        quantizer = WeightQuantizer(**settings)
        probe = _GradientProbe(base, lambda v, training=None, q=quantizer: q(v, training=bool(training)))
        steps = []
        with contextlib.nullcontext() if host else backend.scalars_on_device():
            for factor in (1.0, -2.5, 0.01):
                probe.values.assign(base * factor)
                gradient = layer_gradients(probe, dummy, upstream)[probe.values.path]
                steps.append((gradient, as_np(probe(dummy, training=True)), as_np(probe(dummy, training=False))))
        runs.append(steps)
    for host_step, device_step in zip(*runs):
        for host_value, device_value in zip(host_step, device_step):
            np.testing.assert_array_equal(host_value, device_value)
