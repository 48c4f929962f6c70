"""quantize_model / quantize_annotate_layer / quantize_apply: coverage, errors, reports, saving, training."""

import os

import keras
import numpy as np
import pytest
from keras import layers, ops

import kopt.quantization as kq
from kopt.quantization import (
    ActivationQuantize,
    FoldedBatchNorm,
    QuantizeConfig,
    QuantizeWrapper,
    UnsupportedLayerError,
    WeightQuantizer,
    quantize_annotate_layer,
    quantize_apply,
    quantize_model,
)


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x))


def small_cnn():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU(6.0)(y)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.1)(x)
    out = layers.Dense(3, activation="softmax")(x)
    return keras.Model(inp, out, name="small_cnn")


@keras.saving.register_keras_serializable(package="kopt_tests")
class Scale(layers.Layer):
    """A custom layer with a weight: y = x * kernel."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.kernel


def custom_model():
    inp = keras.Input((4,))
    x = layers.Dense(4)(inp)
    x = Scale(name="my_scale")(x)
    return keras.Model(inp, layers.Dense(2)(x))


def test_unsupported_layer_error_names_the_layer_and_the_fix():
    model = custom_model()
    with pytest.raises(UnsupportedLayerError) as info:
        quantize_model(model)
    message = str(info.value)
    assert "'my_scale' (Scale)" in message and "quantize_annotate_layer" in message and "register" in message
    assert "unsupported='float'" in message


def test_lenient_mode_keeps_unsupported_layers_float_and_reports_them():
    q, report = quantize_model(custom_model(), unsupported="float", return_report=True)
    assert report.float_layers == [("my_scale", "Scale")]
    assert any(isinstance(l, Scale) for l in q.layers)
    scale = next(l for l in q.layers if isinstance(l, Scale))
    # The float layer's output is consumed by a quantized Dense: it gets a fake-quant.
    assert any(isinstance(n.operation, ActivationQuantize) for n in scale._outbound_nodes)
    assert "my_scale (Scale)" in str(report)


def test_registered_custom_layer_is_quantized_then_unregistered():
    kq.register(Scale, QuantizeConfig(weights={"kernel": WeightQuantizer(per_channel=False)}, output="range"))
    try:
        q = quantize_model(custom_model())
    finally:
        kq.USER_REGISTRY.unregister(Scale)
    wrapped = [l for l in q.layers if isinstance(l, QuantizeWrapper) and isinstance(l.layer, Scale)]
    assert len(wrapped) == 1


def test_register_decorator_on_a_factory():
    @kq.register(Scale)
    def scale_config(layer):
        return QuantizeConfig(output="passthrough")

    try:
        assert kq.get_scheme("default_8bit").config_for(Scale()) == QuantizeConfig(output="passthrough")
    finally:
        kq.USER_REGISTRY.unregister(Scale)


def test_annotations_select_which_layers_are_quantized():
    inp = keras.Input((4,))
    x = layers.Dense(4, name="float_dense")(inp)
    x = quantize_annotate_layer(Scale(name="my_scale"), QuantizeConfig(weights={"kernel": WeightQuantizer(per_channel=False)}))(x)
    out = quantize_annotate_layer(layers.Dense(2, name="q_dense"))(x)
    q = quantize_apply(keras.Model(inp, out))
    wrapped = sorted(l.layer.name for l in q.layers if isinstance(l, QuantizeWrapper))
    assert wrapped == ["my_scale", "q_dense"]
    assert isinstance(q.get_layer("float_dense"), layers.Dense)
    # The float Dense output feeds a quantized layer: one fake-quant there, none on the model input.
    sites = [n.operation.name for l in q.layers if isinstance(l, ActivationQuantize) for n in l._inbound_nodes for n in [n.input_tensors[0]._keras_history]]
    assert sites == ["float_dense", "quant_my_scale", "quant_q_dense"]


def test_annotated_model_round_trips_through_keras_file(tmp_path):
    inp = keras.Input((4,))
    out = quantize_annotate_layer(layers.Dense(2))(inp)
    path = os.path.join(tmp_path, "annotated.keras")
    keras.Model(inp, out).save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.layers[1], kq.QuantizeAnnotate)
    assert any(isinstance(l, QuantizeWrapper) for l in quantize_apply(restored).layers)


def test_report_counts_what_was_done():
    q, report = quantize_model(small_cnn(), return_report=True)
    assert len(report.folded_batch_norms) == 2
    assert sum(isinstance(l, FoldedBatchNorm) for l in q.layers) == 2
    assert report.quantized_weights == ["conv2d", "depthwise_conv2d", "dense"]
    assert report.float_layers == []
    assert report.activation_quantizers == 6  # input, two ReLU6 (fused into conv), add, pooled features, dense


@pytest.mark.backends
def test_training_updates_weights_ranges_and_statistics_and_saves(tmp_path):
    model = small_cnn()
    before = [as_np(w).copy() for w in model.weights]
    q = quantize_model(model)
    assert not set(id(v) for v in q.weights) & set(id(v) for v in model.weights)
    folded = next(l for l in q.layers if isinstance(l, FoldedBatchNorm))
    acts = [l for l in q.layers if isinstance(l, ActivationQuantize)]
    kernel0 = as_np(folded.layer.kernel).copy()
    mean0 = as_np(folded.batch_norm.moving_mean).copy()
    gamma0 = as_np(folded.batch_norm.gamma).copy()
    q.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(16, 8, 8, 3)).astype("float32")
    q.fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(as_np(folded.layer.kernel), kernel0)  # gradients reach the original variable
    assert not np.allclose(as_np(folded.batch_norm.gamma), gamma0)
    assert not np.allclose(as_np(folded.batch_norm.moving_mean), mean0)
    assert all(l.range != (-6.0, 6.0) for l in acts)
    for b, w in zip(before, model.weights):  # the user's model is untouched
        np.testing.assert_array_equal(b, as_np(w))
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)
    # Ranges and statistics are in the saved file; plain load_model restores the same model.
    path = os.path.join(tmp_path, "qat.keras")
    q.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), q.predict(x, verbose=0), atol=1e-6)
    assert [l.range for l in restored.layers if isinstance(l, ActivationQuantize)] == [l.range for l in acts]


def test_strip_keeps_the_fake_quant_model():
    import kopt

    q = quantize_model(small_cnn())
    stripped = kopt.strip(q)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(as_np(stripped(x)), as_np(q(x)), atol=1e-6)
    assert sum(isinstance(l, ActivationQuantize) for l in stripped.layers) == 6
    assert not set(id(v) for v in q.weights) & set(id(v) for v in stripped.weights)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="Unknown quantization scheme"):
        quantize_model(small_cnn(), scheme="nope")
    with pytest.raises(ValueError, match="unsupported"):
        quantize_model(small_cnn(), unsupported="skip")
    with pytest.raises(TypeError):
        quantize_model(layers.Dense(3))
    with pytest.raises(ValueError, match="already quantization-aware"):
        quantize_model(quantize_model(small_cnn()))


def test_kopt_layer_names_never_clash_with_user_layer_names():
    inp = keras.Input((4,))
    x = layers.Dense(4, name="dense")(inp)
    x = layers.ReLU(name="quant_dense")(x)  # the name kopt would give the wrapped "dense"
    out = layers.Dense(2, name="dense_quant")(x)  # the name of dense's activation fake-quant
    q = quantize_model(keras.Model(inp, out))
    names = [l.name for l in q.layers]
    assert len(names) == len(set(names)) and "quant_dense" in names
    assert isinstance(q.get_layer("quant_dense"), layers.ReLU)
