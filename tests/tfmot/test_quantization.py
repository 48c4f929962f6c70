"""kopt.tfmot.quantization.keras and tfmot.experimental.combine: TFMOT's QAT API on kopt."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

from kopt import tfmot
from kopt.core.errors import KoptError
from kopt.quantization import ActivationQuantize, QuantizeWrapper
from tests.tfmot.tfmot_testing import (
    UnknownWeighted,
    compile_model,
    data,
    functional_cnn,
    small_cnn,
    sparsity,
)

qk = tfmot.quantization.keras
combine = tfmot.experimental.combine
LastValueQuantizer = qk.quantizers.LastValueQuantizer
MovingAverageQuantizer = qk.quantizers.MovingAverageQuantizer


def test_signatures_follow_tfmot():
    assert list(inspect.signature(qk.quantize_model).parameters) == ["to_quantize", "quantized_layer_name_prefix"]
    assert list(inspect.signature(qk.quantize_annotate_layer).parameters) == ["to_annotate", "quantize_config"]
    assert list(inspect.signature(qk.quantize_apply).parameters) == ["model", "scheme", "quantized_layer_name_prefix"]
    assert combine.Default8BitClusterPreserveQuantizeScheme().preserve_sparsity is True  # TFMOT's default
    assert set(qk.QuantizeConfig.__abstractmethods__) == {
        "get_weights_and_quantizers", "get_activations_and_quantizers", "set_quantize_weights",
        "set_quantize_activations", "get_output_quantizers", "get_config",
    }


def _interpreter(model: keras.Model):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    return interpreter


def test_quantize_model_keeps_sequential_and_converts_to_int8_like_the_guide():
    model = small_cnn(depthwise=False)
    quantized = qk.quantize_model(model)
    assert isinstance(quantized, keras.Sequential)
    x, y = data()
    compile_model(quantized).fit(x, y, epochs=1, verbose=0)
    interpreter = _interpreter(quantized)
    dtypes = {d["name"]: d["dtype"] for d in interpreter.get_tensor_details()}
    assert sum(dtype == np.int8 for dtype in dtypes.values()) >= 4  # int8 weights and activations
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"CONV_2D", "FULLY_CONNECTED"} <= ops
    conv = next(op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D")
    assert all(interpreter.get_tensor_details()[i]["dtype"] == np.int8 for i in conv["inputs"][:2])
    # the int8 model computes what the QAT model computes, within a few quantization steps
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    expected = quantized.predict(x[:8], verbose=0)
    for i in range(8):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])[0]
        assert np.argmax(got) == np.argmax(expected[i]) or np.abs(got - expected[i]).max() < 0.1


def test_errors_name_the_fault():
    with pytest.raises(ValueError, match="Sequential or Functional"):
        qk.quantize_model(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="keras Layer"):
        qk.quantize_annotate_layer(small_cnn())
    with pytest.raises(ValueError, match="QuantizeConfig"):
        qk.quantize_annotate_layer(keras.layers.Dense(2), quantize_config={"kernel": None})
    with pytest.raises(ValueError, match="scheme"):
        qk.quantize_apply(qk.quantize_annotate_model(small_cnn()), scheme=3)
    custom = keras.Sequential([keras.Input((4,)), UnknownWeighted(name="mystery"), keras.layers.Dense(2)])
    with pytest.raises(KoptError, match="'mystery'"):
        qk.quantize_model(custom)


class CustomLayer(keras.layers.Dense):
    pass


class DenseConfig(qk.QuantizeConfig):
    """The comprehensive guide's DefaultDenseQuantizeConfig, with the weight bits as a parameter."""

    def __init__(self, bits: int = 8):
        self.bits = bits

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, LastValueQuantizer(num_bits=self.bits, symmetric=True, narrow_range=False,
                                                  per_axis=False))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, MovingAverageQuantizer(num_bits=8, symmetric=False, narrow_range=False,
                                                          per_axis=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"bits": self.bits}


class FixedRangeQuantizer(qk.quantizers.Quantizer):
    """The guide's custom quantizer: clip to [-1, 1]."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return keras.ops.clip(inputs, -1.0, 1.0)

    def get_config(self):
        return {}


class ClipConfig(DenseConfig):
    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, FixedRangeQuantizer())]


def _quantized_kernel(model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    wrapper = next(layer for layer in model.layers if isinstance(layer, QuantizeWrapper))
    (variable, value), = wrapper.transformed_weights(training=False)
    return np.array(variable.numpy() if hasattr(variable, "numpy") else variable), keras.ops.convert_to_numpy(value)


def test_method_based_quantize_config_on_a_custom_layer(tmp_path):
    annotated = qk.quantize_annotate_model(keras.Sequential([
        keras.Input((20,)),
        qk.quantize_annotate_layer(CustomLayer(20, name="custom"), DenseConfig(bits=4)),
        keras.layers.Flatten(),
    ]))
    with qk.quantize_scope({"DenseConfig": DenseConfig, "CustomLayer": CustomLayer}):
        quantized = qk.quantize_apply(annotated)
    assert isinstance(quantized, keras.Sequential)
    kernel, value = _quantized_kernel(quantized)
    scale = np.abs(kernel).max() / 7  # 4-bit symmetric, per tensor (kopt's narrow range: [-7, 7])
    np.testing.assert_allclose(value, np.round(kernel / scale) * scale, atol=1e-6)
    assert len(np.unique(value)) <= 15
    assert any(isinstance(layer, ActivationQuantize) for layer in quantized.layers)  # the activation quantizer

    path = str(tmp_path / "qat.keras")
    quantized.save(path)
    with qk.quantize_scope({"CustomLayer": CustomLayer}):  # the user's own layer class, nothing of kopt's
        loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 20)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), quantized.predict(x, verbose=0), atol=1e-6)


@pytest.mark.backends
def test_custom_tfmot_quantizer_runs_inside_kopt():
    layer = CustomLayer(4, kernel_initializer=keras.initializers.RandomNormal(stddev=2.0), name="custom")
    model = keras.Sequential([keras.Input((6,)), qk.quantize_annotate_layer(layer, ClipConfig())])
    quantized = qk.quantize_apply(model)
    kernel, value = _quantized_kernel(quantized)
    assert np.abs(kernel).max() > 1.0
    np.testing.assert_allclose(value, np.clip(kernel, -1.0, 1.0), atol=1e-7)
    quantized.compile(optimizer="sgd", loss="mse")
    quantized.fit(np.ones((8, 6), "float32"), np.zeros((8, 4), "float32"), verbose=0)


@pytest.mark.backends
def test_built_in_quantizers_track_ranges_as_named():
    host = keras.layers.Layer()  # TFMOT builds quantizers on the wrapper while it builds
    batches = [np.array([-1.0, 3.0], "float32"), np.array([-0.5, 1.0], "float32")]
    expected = {LastValueQuantizer: (-0.5, 1.0), qk.quantizers.AllValuesQuantizer: (-1.0, 3.0)}
    for cls, (low, high) in expected.items():
        quantizer = cls(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        state = quantizer.build((2,), cls.__name__, host)
        for batch in batches:
            quantizer(keras.ops.convert_to_tensor(batch), True, state)
        stored = keras.ops.convert_to_numpy(state["range"])
        np.testing.assert_allclose(stored[:2], [low, high], rtol=1e-6)


@pytest.mark.backends
def test_pqat_scheme_keeps_the_pruned_zeros():
    sk = tfmot.sparsity.keras
    x, y = data()
    pruned = sk.prune_low_magnitude(small_cnn(depthwise=False), pruning_schedule=sk.ConstantSparsity(0.5, 0, frequency=1))
    compile_model(pruned).fit(x, y, epochs=1, verbose=0, callbacks=[sk.UpdatePruningStep()])
    stripped = sk.strip_pruning(pruned)
    pqat = qk.quantize_apply(qk.quantize_annotate_model(stripped), combine.Default8BitPrunePreserveQuantizeScheme())
    assert isinstance(pqat, keras.Sequential)
    compile_model(pqat).fit(x, y, epochs=2, verbose=0)
    for wrapper in (layer for layer in pqat.layers if isinstance(layer, QuantizeWrapper)):
        assert sparsity(_effective_kernel(wrapper)) >= 0.5


def _effective_kernel(wrapper: QuantizeWrapper) -> np.ndarray:
    (_, value), = [pair for pair in wrapper.transformed_weights(training=False) if pair[0].name == "kernel"]
    return keras.ops.convert_to_numpy(value)


@pytest.mark.backends
@pytest.mark.parametrize("preserve_sparsity", [False, True])
def test_cqat_and_pcqat_schemes_keep_the_clusters(preserve_sparsity):
    ck = tfmot.clustering.keras
    x, y = data()
    clustered = ck.cluster_weights(functional_cnn(), 4, preserve_sparsity=preserve_sparsity)
    compile_model(clustered).fit(x, y, epochs=1, verbose=0)
    stripped = ck.strip_clustering(clustered)
    scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)
    cqat = qk.quantize_apply(qk.quantize_annotate_model(stripped), scheme)
    compile_model(cqat).fit(x, y, epochs=1, verbose=0)
    wrappers = [layer for layer in cqat.layers if isinstance(layer, QuantizeWrapper)]
    assert wrappers
    for wrapper in wrappers:  # int8 per-channel scales: each output channel keeps at most its clusters
        kernel = _effective_kernel(wrapper)
        for channel in range(kernel.shape[-1]):
            assert len(np.unique(kernel[..., channel])) <= 4 + int(preserve_sparsity)


def test_annotating_one_layer_quantizes_only_it_and_default_8bit_scheme_object():
    inputs = keras.Input((8,))
    x = qk.quantize_annotate_layer(keras.layers.Dense(6, name="annotated"))(inputs)
    annotated = keras.Model(inputs, keras.layers.Dense(2, name="plain")(x))  # the comprehensive guide's pattern
    quantized = qk.quantize_apply(annotated, qk.default_8bit.Default8BitQuantizeScheme())
    wrapped = [layer.layer.name for layer in quantized.layers if isinstance(layer, QuantizeWrapper)]
    assert wrapped == ["annotated"]
    assert isinstance(quantized.get_layer("plain"), keras.layers.Dense)


def test_wrapped_first_layer_with_input_shape_builds_the_sequential():
    annotated = keras.Sequential([qk.quantize_annotate_layer(keras.layers.Dense(20, input_shape=(20,))),
                                  keras.layers.Flatten()])
    assert annotated.built
    assert isinstance(qk.quantize_apply(qk.quantize_annotate_model(annotated)), keras.Sequential)
