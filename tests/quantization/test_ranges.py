"""Placement of activation fake-quants: fusing, pass-through, shared Concatenate ranges, fixed outputs."""

import keras
import numpy as np
import pytest
from keras import layers

from kopt.quantization import ActivationQuantize, FoldedBatchNorm, quantize_model


def quantizers_of(model):
    return [l for l in model.layers if isinstance(l, ActivationQuantize)]


def producers_of(model, layer):
    """Names of the layers whose outputs feed ``layer`` (one per call)."""
    names = []
    for node in layer._inbound_nodes:
        for tensor in node.input_tensors:
            names.append(tensor._keras_history.operation.name)
    return names


def test_conv_relu_is_quantized_once_after_the_activation():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    out = layers.Dense(2)(x)
    q = quantize_model(keras.Model(inp, out))
    sites = {producers_of(q, l)[0] for l in quantizers_of(q)}
    folded = [l for l in q.layers if isinstance(l, FoldedBatchNorm)]
    assert len(folded) == 1
    relu = next(l.name for l in q.layers if isinstance(l, layers.ReLU))
    # input, relu (not the conv: fused), dense output; nothing after max pool / flatten.
    assert sites == {inp._keras_history.operation.name, relu, "quant_dense"}
    nonnegative = {producers_of(q, l)[0]: l.quantizer.nonnegative for l in quantizers_of(q)}
    assert nonnegative == {inp._keras_history.operation.name: False, relu: True, "quant_dense": False}


@pytest.mark.backends  # several range updates in one step: the JAX stateless scope must chain them
def test_concatenate_inputs_share_one_range():
    inp = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 1)(inp)
    b = layers.Conv2D(4, 1, activation="relu")(inp)
    c = layers.Conv2D(4, 1)(inp)
    x = layers.Concatenate()([a, b, c])
    out = layers.Conv2D(2, 1)(x)
    q = quantize_model(keras.Model(inp, out))
    shared = [l for l in quantizers_of(q) if l.quantizer.num_calls > 1]
    assert len(shared) == 1 and shared[0].quantizer.num_calls == 3
    assert sorted(producers_of(q, shared[0])) == ["quant_conv2d", "quant_conv2d_1", "quant_conv2d_2"]
    assert len(quantizers_of(q)) == 3  # input, the shared concat range, the output

    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    q.compile(keras.optimizers.SGD(0.0), "mse")  # one training step that leaves the weights alone
    q.fit(x, np.zeros((4, 8, 8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
    convs = [q.get_layer(n).output for n in ("quant_conv2d", "quant_conv2d_1", "quant_conv2d_2")]
    outputs = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.Model(q.input, convs)(x)]
    lo, hi = shared[0].range  # the union of the three inputs' ranges
    assert lo == pytest.approx(min(0.0, min(o.min() for o in outputs)), rel=1e-5)
    assert hi == pytest.approx(max(o.max() for o in outputs), rel=1e-5)


def test_dense_chain_of_concatenations_is_one_range_group():
    inp = keras.Input((6, 6, 4))
    x = layers.Conv2D(4, 1)(inp)
    for _ in range(3):  # DenseNet-style: each concat output feeds the next concat
        y = layers.Conv2D(2, 1)(x)
        x = layers.Concatenate()([x, y])
    q = quantize_model(keras.Model(inp, x))
    shared = [l for l in quantizers_of(q) if l.quantizer.num_calls > 1]
    assert len(shared) == 1 and shared[0].quantizer.num_calls == 4


def test_fixed_outputs_read_by_quantized_ops_get_the_imposed_range_and_a_final_softmax_gets_none():
    inp = keras.Input((5,))
    x = layers.Dense(4, activation="sigmoid")(inp)
    out = layers.Dense(3, activation="softmax")(x)
    q = quantize_model(keras.Model(inp, out))
    sites = {producers_of(q, l)[0]: l for l in quantizers_of(q)}
    sigmoid = next(l.name for l in q.layers if isinstance(l, layers.Activation) and l.activation.__name__ == "sigmoid")
    assert sorted(sites) == sorted([inp._keras_history.operation.name, "quant_dense", sigmoid, "quant_dense_1"])
    # TFLite's LOGISTIC writes scale 1/256, zero point -128: the Dense after it reads that grid.
    assert sites[sigmoid].quantizer.fixed_range == (0.0, 255.0 / 256.0)
    assert sites[sigmoid].range == (0.0, 255.0 / 256.0)
    assert all(l.quantizer.fixed_range is None for name, l in sites.items() if name != sigmoid)
    assert isinstance(q.layers[-1], layers.Activation)  # the softmax is the model output, unquantized


@pytest.mark.backends
def test_fixed_range_quantizer_rounds_to_the_imposed_grid_in_inference_only():
    from kopt.quantization import ActivationQuantizer

    layer = ActivationQuantize(ActivationQuantizer(fixed_range=(0.0, 255.0 / 256.0)))
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(4, 64)).astype("float32")
    x[0, :3] = [0.0, 1.0, 1.0 / 512.0]
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    expected = np.minimum(np.floor(x.astype(np.float64) * 256.0 + 0.5), 255.0) / 256.0
    np.testing.assert_array_equal(inference, expected.astype("float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=True)), x)  # float in training
    assert layer.range == (0.0, 255.0 / 256.0)  # never updated
    restored = ActivationQuantize.from_config(layer.get_config())
    assert restored.quantizer.fixed_range == (0.0, 255.0 / 256.0)
    with pytest.raises(ValueError, match="fixed_range"):
        ActivationQuantizer(fixed_range=(0.1, 1.0))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="lowering needs TensorFlow")
def test_softmax_read_by_a_matmul_lowers_with_tflite_params_and_matches_the_int8_model():
    from kopt.export import load_tflite, run, to_tflite

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    logits = layers.Dense(6)(inp)
    weights = layers.Softmax()(logits)
    mixed = keras.ops.matmul(weights, layers.Dense(8)(inp))
    out = layers.Dense(4)(layers.Flatten()(mixed))
    q = quantize_model(keras.Model(inp, out))
    x = np.random.default_rng(0).normal(size=(64, 6, 8)).astype("float32") * 2.0
    q.compile(keras.optimizers.SGD(0.0), "mse")  # training passes that learn the ranges only
    q.fit(x, np.zeros((64, 4), "float32"), batch_size=16, epochs=2, verbose=0)
    graph = load_tflite(to_tflite(q)).main
    names = [op.name for op in graph.operators]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    softmax = graph.tensors[graph.operators[names.index("SOFTMAX")].outputs[0]].quantization
    assert float(softmax.scales[0]) == 1.0 / 256.0 and int(softmax.zero_points[0]) == -128
    step = float(graph.tensors[graph.outputs[0]].quantization.scales[0])
    steps = np.abs(np.asarray(q.predict(x, verbose=0)) - run(to_tflite(q), x)) / step
    assert steps.max() <= 1.0 + 1e-3, steps.max()


def test_add_output_has_its_own_range_and_fuses_relu():
    inp = keras.Input((4, 4, 2))
    a = layers.Conv2D(2, 1)(inp)
    x = layers.Add()([a, inp])
    x = layers.ReLU()(x)
    out = layers.GlobalAveragePooling2D()(x)
    q = quantize_model(keras.Model(inp, out))
    sites = sorted(producers_of(q, l)[0] for l in quantizers_of(q))
    relu = next(l.name for l in q.layers if isinstance(l, layers.ReLU))
    gap = next(l.name for l in q.layers if isinstance(l, layers.GlobalAveragePooling2D))
    assert sites == sorted([inp._keras_history.operation.name, "quant_conv2d", relu, gap])
