"""The 'int16x8' QAT scheme: symmetric int16 activation fake-quants (TFLite 16x8), on every backend.

References: the NumPy TF FakeQuant of qat_reference (16 bits, narrow range, [-m, m]) and the
16x8 spec's grid (zero point 0, codes in [-32767, 32767]).
"""

import keras
import numpy as np
import pytest
from keras import layers, ops
from qat_reference import fake_quant as ref_fake_quant
from qat_reference import tie_distance

from kopt.core.errors import InvalidArgumentError
from kopt.export.lowering import qat_mode
from kopt.quantization import ActivationQuantize, ActivationQuantizer, get_scheme, quantize_model

pytestmark = pytest.mark.backends


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def test_symmetric_16_bit_quantizer_matches_tf_fake_quant_on_the_int16_grid():
    quantizer = ActivationQuantizer(num_bits=16, symmetric=True)
    host = ActivationQuantize(quantizer)
    host.build(())
    host._state["range"].assign(np.array([-0.75, 2.5, 1.0], "float32"))  # magnitude 2.5
    x = np.random.default_rng(0).uniform(-3.5, 3.5, 20000).astype("float32")
    y = as_np(host(x, training=False))
    reference = ref_fake_quant(x, -2.5, 2.5, num_bits=16, narrow_range=True)
    scale = 2.5 / 32767
    clear = tie_distance(x, -2.5, 2.5, num_bits=16, narrow_range=True) > 0.02  # float32 may flip near-ties
    assert clear.mean() > 0.9
    np.testing.assert_allclose(y[clear], reference[clear], atol=1e-3 * scale)
    assert np.abs(y - reference).max() <= scale * 1.001
    codes = y / scale
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-2)  # zero point 0: multiples of the scale
    assert codes.min() == pytest.approx(-32767, abs=1e-2) and codes.max() == pytest.approx(32767, abs=1e-2)


def test_16_bit_activations_must_be_symmetric():
    with pytest.raises(InvalidArgumentError, match="symmetric=True"):
        ActivationQuantizer(num_bits=16)
    with pytest.raises(ValueError, match=r"\[2, 8\] or 16"):
        ActivationQuantizer(num_bits=12, symmetric=True)
    assert get_scheme("int16x8").activation_quantizer.get_config()["num_bits"] == 16


def test_int16x8_qat_trains_and_every_activation_is_on_a_symmetric_int16_grid():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 1))
    h = layers.Conv1D(4, 3, padding="same", activation="relu")(inputs)
    h = layers.Dense(8, activation="relu")(layers.Flatten()(h))
    model = keras.Model(inputs, layers.Dense(3)(h))
    qat = quantize_model(model, "int16x8")
    quantizers = [layer for layer in qat.layers if isinstance(layer, ActivationQuantize)]
    assert quantizers and all(q.quantizer.num_bits == 16 and q.quantizer.symmetric for q in quantizers)
    assert qat_mode(qat) == "int16x8" and qat_mode(model) == "int8"  # the pipeline lowers it in 16x8
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(64, 16, 1)).astype("float32"), rng.integers(0, 3, 64)
    before = [as_np(w) for w in qat.trainable_weights]
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = qat.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(a, as_np(b)) for a, b in zip(before, qat.trainable_weights))
    probe = keras.Model(qat.inputs[0], [q.output for q in quantizers])
    for layer, values in zip(quantizers, probe(x[:8], training=False)):
        low, high = layer.range
        scale = max(-low, high) / 32767
        codes = as_np(values) / scale
        np.testing.assert_allclose(codes, np.rint(codes), atol=2e-2, err_msg=layer.name)
        assert np.abs(codes).max() <= 32767 + 1e-2, layer.name
