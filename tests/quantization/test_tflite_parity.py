"""The lowered int8 model computes what the fake-quant Keras model computes (LiteRT interpreter).

TensorFlow backend only (lowering needs it). One small CNN is trained with QAT on
scikit-learn's digits and converted once; the tests read that one flatbuffer.
"""

import keras
import numpy as np
import pytest
from keras import layers

from kopt.export import load_tflite, run, to_tflite
from kopt.quantization import ActivationQuantize, quantize_model

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="lowering needs TensorFlow")


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x, data.target.astype("int32")


def parity_cnn():
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU(6.0)(x)
    a = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    a = layers.BatchNormalization(momentum=0.9)(a)
    a = layers.ReLU(6.0)(a)
    b = layers.Conv2D(8, 1, activation="relu")(x)
    x = layers.Concatenate()([a, b])
    x = layers.MaxPooling2D()(x)
    y = layers.SeparableConv2D(24, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=0.9)(y)
    x = layers.Add()([layers.Conv2D(24, 1)(x), y])
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10)(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def lowered():
    keras.utils.set_random_seed(0)
    x, y = digits()
    float_model = parity_cnn()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    float_model.compile(keras.optimizers.Adam(1e-2), loss)
    float_model.fit(x[:1400], y[:1400], batch_size=64, epochs=5, verbose=0)
    qat = quantize_model(float_model)
    qat.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    qat.fit(x[:1400], y[:1400], batch_size=64, epochs=3, verbose=0)
    tflite = to_tflite(qat)
    return qat, tflite, x[1400:], y[1400:]


def test_int8_outputs_match_fake_quant_model(lowered):
    qat, tflite, x, y = lowered
    keras_out = np.asarray(qat.predict(x, verbose=0))
    lite_out = run(tflite, x)
    output = load_tflite(tflite).main.tensors[load_tflite(tflite).main.outputs[0]]
    step = float(output.quantization.scales[0])
    steps = np.abs(keras_out - lite_out) / step
    assert np.mean(steps <= 2.0 + 1e-3) >= 0.99, f"max {steps.max():.2f} steps, mean {steps.mean():.3f}"
    assert np.mean(keras_out.argmax(-1) == lite_out.argmax(-1)) >= 0.99
    assert np.mean(lite_out.argmax(-1) == y) > 0.85  # it did learn


def test_lowered_model_is_fully_int8_with_folded_batchnorms(lowered):
    from kopt.export import check_edgetpu

    qat, tflite, _, _ = lowered
    assert check_edgetpu(tflite).fully_mapped
    graph = load_tflite(tflite).main
    names = [op.name for op in graph.operators]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    assert "MUL" not in names  # BatchNorms folded, no float arithmetic left
    for op in graph.operators:
        for tensor in graph.output_tensors(op):
            assert tensor.dtype == "INT8", (op.name, tensor.name, tensor.dtype)
    convs = [op for op in graph.operators if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == 6  # conv, depthwise, 1x1, separable (2), projection
    for op in convs:
        weight = graph.tensor(op.inputs[1])
        assert weight.quantization.per_channel and not np.any(weight.quantization.zero_points)
        assert np.abs(weight.data).max() == 127


def test_concatenation_inputs_and_output_share_the_trained_range(lowered):
    qat, tflite, _, _ = lowered
    graph = load_tflite(tflite).main
    (concat,) = [op for op in graph.operators if op.name == "CONCATENATION"]
    params = {(float(t.quantization.scales[0]), int(t.quantization.zero_points[0]))
              for t in graph.input_tensors(concat) + graph.output_tensors(concat)}
    assert len(params) == 1
    shared = next(l for l in qat.layers if isinstance(l, ActivationQuantize) and l.quantizer.num_calls == 2)
    lo, hi = shared.range
    ((scale, _),) = params
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-5)


def _ranges_from(model, x, steps=3):
    """A few training-mode forward passes (no weight update) so ranges and statistics fit x."""
    for _ in range(steps):
        model(x, training=True)


def _check_lowered(qat, x, within_two_steps=0.99, max_steps=3.0):
    tflite = to_tflite(qat)
    graph = load_tflite(tflite).main
    names = [op.name for op in graph.operators]
    assert "DEQUANTIZE" not in names and "QUANTIZE" not in names, names
    for op in graph.operators:
        for tensor in graph.output_tensors(op):
            assert tensor.dtype == "INT8", (op.name, tensor.name, tensor.dtype)
    output = graph.tensors[graph.outputs[0]]
    steps = np.abs(np.asarray(qat.predict(x, verbose=0)) - run(tflite, x)) / float(output.quantization.scales[0])
    assert np.mean(steps <= 2.0 + 1e-3) >= within_two_steps and steps.max() <= max_steps + 1e-3, steps.max()
    return graph


def test_more_layer_kinds_lower_fully_int8():
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("hard_swish")(x)
    squeeze = layers.GlobalAveragePooling2D(keepdims=True)(x)
    squeeze = layers.Conv2D(8, 1, activation="sigmoid")(squeeze)
    x = layers.Multiply()([x, squeeze])  # squeeze-excite
    x = layers.ZeroPadding2D(1)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    x = layers.Maximum()([x, layers.Conv2D(6, 1)(x)])
    x = layers.Resizing(7, 7, interpolation="nearest")(x)
    x = layers.Flatten()(x)
    out = layers.Dense(5)(layers.Dropout(0.2)(x))
    qat = quantize_model(keras.Model(inp, out))
    x = np.random.default_rng(0).uniform(0, 255, (32, 12, 12, 3)).astype("float32")
    _ranges_from(qat, x)
    # An untrained chain of LUT-based int8 kernels (sigmoid, hard-swish): rounding differences add up
    # a little; the 2-step target is checked on the trained model above.
    graph = _check_lowered(qat, x, within_two_steps=0.97, max_steps=4.0)
    ops = [op.name for op in graph.operators]
    for expected in ("MUL", "TRANSPOSE_CONV", "MAXIMUM", "RESIZE_NEAREST_NEIGHBOR", "FULLY_CONNECTED"):
        assert expected in ops
    assert "HARD_SWISH" not in ops  # written as ADD + RELU6 + MUL for the Edge TPU


def test_conv1d_lowers_with_per_channel_weights():
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 2))
    x = layers.Conv1D(8, 5, padding="causal", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv1D(6, 3, strides=2, activation="relu")(x)
    x = layers.MaxPooling1D()(x)
    x = layers.GlobalAveragePooling1D()(x)
    qat = quantize_model(keras.Model(inp, layers.Dense(4)(x)))
    x = np.random.default_rng(0).normal(size=(16, 32, 2)).astype("float32")
    _ranges_from(qat, x)
    graph = _check_lowered(qat, x)
    convs = [op for op in graph.operators if op.name == "CONV_2D"]
    assert [graph.tensor(op.inputs[1]).quantization.scales.size for op in convs] == [8, 6]


def test_minus_inf_padding_before_max_pooling_lowers_fully_int8():
    """keras-hub's pre-activation ResNet pads with ``ops.pad(..., constant_values=-inf)`` before its max pool.
    A constant-mode pad keeps its input's range (passthrough): TFLite's PADV2 writes -inf as the range's
    lowest code, which never wins the max, so the pooled values are those of the float model."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)  # negative outputs: a zero pad would change the max
    x = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=float("-inf"))
    x = layers.MaxPooling2D(3, strides=2)(x)
    out = layers.Conv2D(4, 1)(x)
    qat = quantize_model(keras.Model(inp, out))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype("float32")
    _ranges_from(qat, x)
    ops = [op.name for op in _check_lowered(qat, x).operators]
    assert "PADV2" in ops and "MAX_POOL_2D" in ops, ops


def test_split_pieces_keep_the_input_range_and_lower_fully_int8():
    """CSPNet's cross stage splits its channels in two (``ops.split``); TFLite's int8 SPLIT needs every piece
    at the input's scale, which the passthrough config gives (no requantize op)."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    left, right = keras.ops.split(x, 2, axis=-1)
    right = layers.Conv2D(4, 1, activation="relu")(right)
    out = layers.Conv2D(4, 1)(layers.Concatenate()([left, right]))
    qat = quantize_model(keras.Model(inp, out))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype("float32")
    _ranges_from(qat, x)
    ops = [op.name for op in _check_lowered(qat, x).operators]
    assert "SPLIT" in ops, ops


def test_a_cast_to_the_same_dtype_is_passthrough_and_a_dtype_changing_cast_is_refused():
    """keras-hub's DeepLabV3 pyramid pooling casts each branch to the dtype it has (an identity); a cast
    from integers has no range to pass on and stays unsupported, named in the error."""
    from kopt.core.errors import UnsupportedLayerError

    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 3))
    x = keras.ops.cast(layers.Conv2D(4, 3, padding="same")(inp), "float32")
    qat = quantize_model(keras.Model(inp, layers.Conv2D(4, 1)(x)))
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype("float32")
    _ranges_from(qat, x)
    assert [op.name for op in _check_lowered(qat, x).operators] == ["CONV_2D", "CONV_2D"]

    ints = keras.Input((8, 8, 3), dtype="int32")
    model = keras.Model(ints, layers.Conv2D(4, 1)(keras.ops.cast(ints, "float32")))
    with pytest.raises(UnsupportedLayerError, match=r"\(Cast\)"):
        quantize_model(model)
