"""Schemes: options of the default scheme, and the weight-quantizer hook later schemes build on."""

import os

import keras
import numpy as np
import pytest
from keras import layers, ops

import kopt.quantization as kq
from kopt.quantization import Quantizer, QuantizeWrapper, WeightQuantizer, quantize_model
from kopt.quantization.quantizers import deserialize, serialize


@keras.saving.register_keras_serializable(package="kopt_tests")
class ZeroKeepingQuantizer(Quantizer):
    """Test double of a sparsity-preserving quantizer: entries zero at build time stay zero."""

    def __init__(self, base):
        self.base = deserialize(base)

    def build(self, host, name, shape, weight=None):
        mask = np.ones(shape, "float32") if weight is None else (ops.convert_to_numpy(weight) != 0).astype("float32")
        variable = host.add_weight(name=f"{name}_mask", shape=shape, initializer="ones", trainable=False)
        variable.assign(mask)
        return {"mask": variable}

    def __call__(self, x, state, training=False):
        return self.base(x * ops.convert_to_tensor(state["mask"]), {}, training)

    def get_config(self):
        return {"base": serialize(self.base)}


def sparse_model():
    inp = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same")(inp)
    x = layers.ReLU()(x)
    x = layers.Flatten()(x)
    model = keras.Model(inp, layers.Dense(3)(x))
    conv = model.layers[1]
    kernel = ops.convert_to_numpy(conv.kernel).copy()
    kernel[..., 0] = 0.0  # a pruned output channel
    kernel[0, 0, :, :] = 0.0
    conv.kernel.assign(kernel)
    return model


def test_weight_quantizer_hook_swaps_every_weight_quantizer(tmp_path):
    scheme = kq.get_scheme("default_8bit").with_weight_quantizer(lambda layer, attr, q: ZeroKeepingQuantizer(q), name="zero_keeping")
    model = sparse_model()
    q = quantize_model(model, scheme=scheme)
    wrappers = [l for l in q.layers if isinstance(l, QuantizeWrapper)]
    assert all(isinstance(w.weight_quantizer("kernel"), ZeroKeepingQuantizer) for w in wrappers)
    assert isinstance(wrappers[0].weight_quantizer("kernel").base, WeightQuantizer)
    q.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    q.fit(x, np.ones((8, 3), "float32"), epochs=2, verbose=0)
    conv = wrappers[0]
    deployed = ops.convert_to_numpy(dict((id(v), t) for v, t in conv.transformed_weights())[id(conv.layer.kernel)])
    original_zeros = ops.convert_to_numpy(model.layers[1].kernel) == 0
    assert np.all(deployed[original_zeros] == 0) and np.count_nonzero(deployed) > 0
    path = os.path.join(tmp_path, "zero_keeping.keras")
    q.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(restored(x)), ops.convert_to_numpy(q(x)), atol=1e-6)


def test_scheme_options():
    scheme = kq.default_8bit_scheme(weight_bits=4, activation_mode="last_value", dense_per_channel=True)
    assert scheme.name == "default_8bit_w4a8"
    assert scheme.activation_quantizer.mode == "last_value"
    dense = layers.Dense(3)
    dense.build((1, 4))
    config = scheme.config_for(dense)
    assert config.weights["kernel"] == WeightQuantizer(num_bits=4, per_channel=True)
    assert kq.get_scheme("default_8bit").config_for(dense).weights["kernel"] == WeightQuantizer(per_channel=False)
    assert "default_8bit" in kq.available_schemes()


def test_register_scheme_by_name_and_unregister_it():
    kq.register_scheme("test_last_value", lambda: kq.default_8bit_scheme(activation_mode="last_value"))
    try:
        inp = keras.Input((4,))
        q = quantize_model(keras.Model(inp, layers.Dense(2)(inp)), scheme="test_last_value")
        assert all(l.quantizer.mode == "last_value" for l in q.layers if isinstance(l, kq.ActivationQuantize))
    finally:
        kq.unregister_scheme("test_last_value")
    assert "test_last_value" not in kq.available_schemes()
    with pytest.raises(ValueError, match="test_last_value"):
        kq.get_scheme("test_last_value")
    with pytest.raises(ValueError, match="built-in"):
        kq.unregister_scheme("default_8bit")
    with pytest.raises(ValueError, match="built-in"):
        kq.unregister_scheme("prune_cluster_preserve")
    with pytest.raises(ValueError, match="name"):
        kq.register_scheme("", lambda: None)
