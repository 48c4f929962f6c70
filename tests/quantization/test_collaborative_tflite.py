"""PQAT / CQAT / PCQAT: the preserved structure checked where it matters, in the int8 ``.tflite`` file.

TensorFlow only (lowering). Every weighted layer of the test model is followed by a
*standalone* ``ReLU`` / ``ReLU6`` layer, the MobileNet pattern for which TFMOT's preserving
schemes silently quantize nothing; a ResNet block covers TFMOT issue #1056 (CQAT losing
clusters); the zero positions are compared one by one (zeros drifting after the last step).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from kopt.export import inspect, run, to_tflite, weight_tensors
from kopt.quantization import quantize_model
from kopt.quantization.preserve import PreservingQuantizer
from tests.quantization.preserve_testing import (
    all_kinds_model,
    channel_axes,
    deployed_kernel,
    fit,
    max_unique_per_channel,
    regression_data,
    structure,
    weighted_layers,
    wrappers,
)

SPARSITY = 0.5
CLUSTERS = 6
EXPECTED_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
STRUCTURE = {
    "prune_preserve": {"sparsity": SPARSITY},
    "cluster_preserve": {"clusters": CLUSTERS},
    "prune_cluster_preserve": {"sparsity": SPARSITY, "clusters": CLUSTERS},
}
_CACHE: dict[str, tuple] = {}


def lowered(scheme: str) -> tuple[dict[str, np.ndarray], keras.Model, bytes]:
    """``(structured kernels, trained QAT model, int8 flatbuffer)`` for a scheme, once per session."""
    if scheme not in _CACHE:
        keras.utils.set_random_seed(11)
        model = structure(all_kinds_model(batch_norm=True), **STRUCTURE[scheme])
        kernels = {layer.name: np.array(keras.ops.convert_to_numpy(layer.kernel)) for layer in weighted_layers(model)}
        # PCQAT trains with the graph-mode train step (tf.function), the others eagerly (faster for 4 steps)
        quantized = fit(quantize_model(model, scheme), epochs=2, run_eagerly=scheme != "prune_cluster_preserve")
        _CACHE[scheme] = (kernels, quantized, to_tflite(quantized))
    return _CACHE[scheme]


def keras_layout(values: np.ndarray, op: str, shape: tuple) -> np.ndarray:
    """A TFLite weight tensor rearranged to the Keras kernel's layout."""
    if op == "FULLY_CONNECTED":
        return values.T
    if op == "DEPTHWISE_CONV_2D":  # [1, H, W, I * M] -> (H, W, I, M)
        return values.reshape(shape)
    return np.transpose(values, (1, 2, 3, 0)).reshape(shape)  # CONV_2D [O, H, W, I]; Conv1D as [O, 1, K, I]


def per_output_channel_unique(tensor) -> int:
    """Most distinct int8 values in one output channel (also for per-tensor quantized weights)."""
    axis = 3 if tensor.op == "DEPTHWISE_CONV_2D" else 0
    rows = np.moveaxis(tensor.values, axis, 0).reshape(tensor.values.shape[axis], -1)
    return max(np.unique(row).size for row in rows)


def int8_weights(scheme: str) -> list[tuple[str, np.ndarray, object]]:
    kernels, _, tflite = lowered(scheme)
    tensors = weight_tensors(tflite)
    assert [t.op for t in tensors] == EXPECTED_OPS  # every Conv/Dense before a standalone ReLU is quantized
    assert all(t.values.dtype == np.int8 for t in tensors)
    return [(name, kernels[name], tensor) for name, tensor in zip(kernels, tensors)]


def test_pqat_int8_zeros_are_the_pruned_zeros():
    for name, pruned, tensor in int8_weights("prune_preserve"):
        pruned_sparsity = float(np.mean(pruned == 0))
        assert tensor.sparsity >= pruned_sparsity - 0.005, name
        int8 = keras_layout(tensor.values, tensor.op, pruned.shape)
        np.testing.assert_array_equal(int8 == 0, pruned == 0, err_msg=name)  # no zero drifted, none added


def test_cqat_int8_channels_keep_their_clusters():
    for name, clustered, tensor in int8_weights("cluster_preserve"):
        assert np.unique(clustered).size == CLUSTERS
        assert per_output_channel_unique(tensor) <= CLUSTERS, name
        assert tensor.max_unique_per_channel <= CLUSTERS or not tensor.quantization.per_channel, name


def test_pcqat_int8_keeps_zeros_and_clusters():
    for name, structured, tensor in int8_weights("prune_cluster_preserve"):
        assert tensor.sparsity >= float(np.mean(structured == 0)) - 0.005, name
        assert per_output_channel_unique(tensor) <= CLUSTERS, name  # the zero is one of the clusters
        int8 = keras_layout(tensor.values, tensor.op, structured.shape)
        np.testing.assert_array_equal(int8 == 0, structured == 0, err_msg=name)


@pytest.mark.parametrize("scheme", list(STRUCTURE))
def test_standalone_relu_layers_are_fused_and_every_kernel_is_int8(scheme):
    """TFMOT's preserving schemes quantize nothing when a standalone ReLU / ReLU6 layer follows a
    Conv/Dense; here every such pair is one int8 op with a fused activation."""
    _, quantized, tflite = lowered(scheme)
    ops = inspect(tflite).op_counts
    assert "RELU" not in ops and "RELU6" not in ops and "DEQUANTIZE" not in ops
    assert sum(isinstance(w.weight_quantizer("kernel"), PreservingQuantizer) for w in wrappers(quantized).values()) == 5
    assert len(int8_weights(scheme)) == 5


@pytest.mark.parametrize("scheme", list(STRUCTURE))
def test_int8_model_agrees_with_the_trained_keras_model(scheme):
    _, quantized, tflite = lowered(scheme)
    x, _ = regression_data(quantized, 16, seed=4)
    expected = keras.ops.convert_to_numpy(quantized(x, training=False))
    got = run(tflite, x)
    spread = float(np.ptp(expected))
    assert np.max(np.abs(got - expected)) <= 0.05 * spread


def test_plain_qat_would_lose_both_structures():
    """The control: the same fine-tuning with default_8bit undoes pruning and clustering."""
    keras.utils.set_random_seed(11)
    model = structure(all_kinds_model(batch_norm=True), sparsity=SPARSITY, clusters=CLUSTERS)
    zeros = np.asarray(keras.ops.convert_to_numpy(model.get_layer("hidden").kernel)) == 0
    hidden = wrappers(fit(quantize_model(model, "default_8bit"), epochs=2))["hidden"]
    deployed = deployed_kernel(hidden)
    assert np.mean(deployed[zeros] == 0) < 0.5
    assert max_unique_per_channel(deployed, channel_axes(hidden.layer)) > CLUSTERS


def resnet_block() -> keras.Model:
    """A ResNet-50 style bottleneck (Conv-BN-Activation, 1x1 projection shortcut, Add, Activation)."""
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(8, 1, use_bias=False, name="reduce")(inputs)
    x = layers.Activation("relu", name="reduce_relu")(layers.BatchNormalization(name="reduce_bn")(x))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv3x3")(x)
    x = layers.Activation("relu", name="conv3x3_relu")(layers.BatchNormalization(name="conv3x3_bn")(x))
    x = layers.Conv2D(16, 1, use_bias=False, name="expand")(x)
    x = layers.BatchNormalization(name="expand_bn")(x)
    shortcut = layers.BatchNormalization(name="shortcut_bn")(layers.Conv2D(16, 1, use_bias=False, name="shortcut")(inputs))
    x = layers.Activation("relu", name="out_relu")(layers.Add(name="add")([x, shortcut]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x), name="resnet_block")


def test_cqat_keeps_clusters_in_every_kernel_of_a_resnet_block():
    """TFMOT #1056: after CQAT some ResNet-50 kernels had more values than clusters."""
    keras.utils.set_random_seed(3)
    model = structure(resnet_block(), clusters=CLUSTERS, per_channel=True)
    quantized = fit(quantize_model(model, "cluster_preserve"), epochs=2, run_eagerly=False)
    tensors = weight_tensors(to_tflite(quantized))
    assert sorted(t.op for t in tensors) == ["CONV_2D"] * 4 + ["FULLY_CONNECTED"]
    for tensor in tensors:
        assert tensor.values.dtype == np.int8
        assert per_output_channel_unique(tensor) <= CLUSTERS, tensor.name
