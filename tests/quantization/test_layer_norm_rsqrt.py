"""A decomposed LayerNormalization on a (near-)constant token: QAT stays finite and saturates like int8 TFLite.

The token's variance + epsilon quantizes to 0; TFLite's int8 RSQRT maps that code to the output's
maximum (issue #20: DeiT's class and distillation tokens). The fake-quant model must do the same
instead of computing ``rsqrt(0) = inf`` and learning an infinite range.
"""

import keras
import numpy as np
import pytest
from keras import ops
from qat_reference import nudge

from kopt.export import load_tflite, run, to_tflite
from kopt.quantization import ActivationQuantize, ActivationQuantizer, quantize_model
from kopt.quantization.decompose import SaturatingRsqrt
from tests.gradient_testing import layer_gradients

pytestmark = pytest.mark.backends

TOKENS, CHANNELS = 4, 8


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x))


class _RsqrtProbe(keras.layers.Layer):
    """A trainable variance tensor through SaturatingRsqrt and its (saturating) output fake-quant."""

    def __init__(self, values):
        super().__init__()
        self.values = self.add_weight(shape=values.shape, initializer=keras.initializers.Constant(values))
        self.rsqrt = SaturatingRsqrt()
        self.quant = ActivationQuantize(ActivationQuantizer(mode="last_value", saturating=True))

    def call(self, inputs, training=None):
        return self.quant(self.rsqrt(ops.convert_to_tensor(self.values) + 0.0 * inputs, training=training),
                          training=training)


def test_saturating_rsqrt_is_rsqrt_away_from_zero_and_inf_at_zero():
    x = np.array([0.0, 1e-6, 0.25, 1.0, 7.0], "float32")
    for training in (False, True):
        y = as_np(SaturatingRsqrt()(x, training=training))
        assert y[0] == np.inf
        np.testing.assert_array_equal(y[1:], as_np(ops.rsqrt(x[1:])))


def test_saturated_entries_get_the_range_maximum_no_range_and_a_zero_gradient():
    values = np.array([[0.0, 0.25, 1.0, 0.0, 4.0, 16.0]], "float32")
    probe = _RsqrtProbe(values)
    dummy = np.zeros_like(values)
    probe(dummy)  # builds; inference leaves the range alone
    upstream = np.arange(1.0, 7.0, dtype="float32")[None]
    grads = layer_gradients(probe, dummy, upstream)[probe.values.path]
    y = as_np(probe(dummy, training=True))  # the same step again (JAX's gradient does not write the range)
    low, high = probe.quant.range
    assert np.isfinite([low, high]).all() and (low, high) == pytest.approx((0.0, 2.0))  # rsqrt(0.25): finite values only
    assert np.isfinite(grads).all() and grads[0, 0] == grads[0, 3] == 0.0
    finite = [1, 2, 4, 5]
    np.testing.assert_allclose(grads[0, finite], upstream[0, finite] * -0.5 * values[0, finite] ** -1.5, rtol=1e-5)
    nudged_high = nudge(low, high)[1]
    np.testing.assert_allclose(y[0, [0, 3]], nudged_high, rtol=1e-6)  # saturated to the maximum
    np.testing.assert_allclose(as_np(probe(dummy, training=False)), y, rtol=1e-6)  # inference: the same


def layer_norm_model():
    inp = keras.Input((TOKENS, CHANNELS))
    return keras.Model(inp, keras.layers.LayerNormalization(name="norm")(inp))


def tokens(n=32, seed=0):
    """Random tokens, a constant token 0 (zero variance) and a near-constant token 1 whose variance +
    epsilon also quantizes to 0 while its centered values are one or two steps off 0."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-10.0, 10.0, (n, TOKENS, CHANNELS)).astype("float32")
    x[:, 0, :] = 2.5
    x[:, 1, :] = 2.5 + 0.15 * np.sign(rng.normal(size=(n, CHANNELS)))
    return x


def test_layer_norm_on_a_constant_token_trains_finite_and_matches_int8_tflite(tmp_path):
    keras.utils.set_random_seed(0)
    x = tokens()
    target = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    qat = quantize_model(layer_norm_model())
    (rsqrt,) = [l for l in qat.layers if isinstance(l, SaturatingRsqrt)]
    (rsqrt_quant,) = [l for l in qat.layers if isinstance(l, ActivationQuantize) and l.quantizer.saturating]

    qat.compile(keras.optimizers.Adam(1e-2), "mse")
    history = qat.fit(x, target, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history
    assert all(np.isfinite(as_np(w)).all() for w in qat.weights)
    out = np.asarray(qat.predict(x, verbose=0))
    assert np.isfinite(out).all()

    # The rsqrt of tokens 0 and 1 saturated to the output range's maximum (float: inf)...
    probe = keras.Model(qat.input, [rsqrt.output, rsqrt_quant.output])
    raw, quantized = (as_np(t) for t in probe(x))
    assert np.all(raw[:, :2] == np.inf) and np.isfinite(raw[:, 2:]).all()
    np.testing.assert_allclose(quantized[:, :2], nudge(*rsqrt_quant.range)[1], rtol=1e-6)
    # ... so token 1 is its centered values times that maximum, far from the float layer's +-1.
    assert np.abs(out[:, 1]).max() < 0.5 and np.abs(out[:, 1]).max() > 0.0

    # The int8 model: one RSQRT, nothing added around it, and the same values, saturated tokens included.
    tflite = to_tflite(qat)
    graph = load_tflite(tflite).main
    names = [op.name for op in graph.operators]
    assert names.count("RSQRT") == 1 and not {"QUANTIZE", "DEQUANTIZE", "MAXIMUM", "SELECT", "SELECT_V2"} & set(names)
    assert {t.dtype for op in graph.operators for t in graph.output_tensors(op)} == {"INT8"}
    step = float(graph.tensors[graph.outputs[0]].quantization.scales[0])
    steps = np.abs(run(tflite, x) - out) / step
    assert steps.max() <= 2.0 + 1e-3, steps.max()
    assert steps[:, :2].max() <= 1.0 + 1e-3, steps[:, :2].max()

    # TFLite's rule itself: a zero input code gives the output maximum, not the value of the smallest code.
    # With an input step of 1.0 (code 1 -> rsqrt 1.0) and an output range up to 100 the two are far apart: token 1
    # becomes its centered values (0.1 - 0.2) times 100, clipped to the range of the normalized tensor.
    (epsilon_quant,) = [l for l in qat.layers if isinstance(l, ActivationQuantize) and l.name.endswith("epsilon_quant")]
    epsilon_quant.weights[0].assign(np.array([0.0, 255.0, 1.0], "float32"))
    rsqrt_quant.weights[0].assign(np.array([0.0, 100.0, 1.0], "float32"))
    wide = np.asarray(qat.predict(x, verbose=0))
    assert np.abs(wide[:, 1]).max() > 1.0  # code 1's rsqrt (1.0) would give at most |centered| ~ 0.3
    np.testing.assert_allclose(run(to_tflite(qat), x)[:, :2], wide[:, :2], atol=step + 1e-6)

    qat.save(tmp_path / "qat.keras")  # SaturatingRsqrt and the saturating quantizer round-trip
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    assert any(isinstance(l, SaturatingRsqrt) for l in loaded.layers)
    assert any(isinstance(l, ActivationQuantize) and l.quantizer.saturating for l in loaded.layers)
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), wide, atol=1e-6)


def test_a_models_own_rsqrt_saturates_too():
    """``keras.ops.rsqrt`` written by the user (an RMS-style normalisation) gets the same treatment: the
    op becomes SaturatingRsqrt (still one RSQRT in the file) and QAT stays finite where inputs quantize to 0."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((TOKENS, CHANNELS))
    energy = ops.mean(inp * inp, axis=-1, keepdims=True)
    out = keras.layers.Dense(CHANNELS, name="proj")(inp * ops.rsqrt(energy + 1e-6))
    qat = quantize_model(keras.Model(inp, out))
    assert sum(isinstance(layer, SaturatingRsqrt) for layer in qat.layers) == 1
    x = tokens()
    x[:, 0, :] = 0.0  # a silent token: its energy quantizes to 0
    qat.compile(keras.optimizers.Adam(1e-2), "mse")
    history = qat.fit(x, np.zeros_like(x), epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history
    assert all(np.isfinite(as_np(w)).all() for w in qat.weights)
    predicted = np.asarray(qat.predict(x, verbose=0))
    assert np.isfinite(predicted).all()
    if keras.backend.backend() != "tensorflow":
        return  # lowering from the other backends is tested in tests/export/test_subprocess_lower.py
    tflite = to_tflite(qat)
    graph = load_tflite(tflite).main
    names = [op.name for op in graph.operators]
    assert names.count("RSQRT") == 1 and not {"QUANTIZE", "DEQUANTIZE"} & set(names), names
    step = float(graph.tensors[graph.outputs[0]].quantization.scales[0])
    assert (np.abs(run(tflite, x) - predicted) / step).max() <= 2.0 + 1e-3
