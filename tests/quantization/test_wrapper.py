"""QuantizeWrapper, FoldedBatchNorm and ChannelAffine against plain Keras layers and the NumPy reference."""

import contextlib

import numpy as np
import pytest
from keras import layers, ops
from qat_reference import symmetric_weight_codes

from kopt.quantization import ChannelAffine, FoldedBatchNorm, QuantizeConfig, QuantizeWrapper, WeightQuantizer

RNG = np.random.default_rng(7)


def as_np(x):
    return np.asarray(ops.convert_to_numpy(x), np.float64)


def randomize_bn(bn):
    c = bn.moving_mean.shape[0]
    if bn.gamma is not None:
        bn.gamma.assign(RNG.uniform(-2, 2, c).astype("float32"))  # negative gammas included
    if bn.beta is not None:
        bn.beta.assign(RNG.normal(size=c).astype("float32"))
    bn.moving_mean.assign(RNG.normal(size=c).astype("float32"))
    bn.moving_variance.assign(RNG.uniform(0.1, 3, c).astype("float32"))


# Every layer kind runs under TensorFlow; the ones whose computation kopt writes itself
# (depthwise channel layout, Conv1D as a 2-D convolution) also under JAX and PyTorch.
ALL_BACKENDS = pytest.mark.backends
LINEAR_LAYERS = [
    ("conv2d", lambda: layers.Conv2D(6, 3, padding="same"), (2, 8, 8, 3), ALL_BACKENDS),
    ("conv2d_nobias", lambda: layers.Conv2D(6, 3, strides=2, use_bias=False), (2, 9, 9, 3), ()),
    ("depthwise_x2", lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (2, 8, 8, 3), ALL_BACKENDS),
    ("dense", lambda: layers.Dense(5), (4, 7), ()),
    ("conv1d_causal", lambda: layers.Conv1D(6, 3, padding="causal", dilation_rate=2), (2, 12, 3), ALL_BACKENDS),
    ("conv1d_strided", lambda: layers.Conv1D(4, 5, strides=2, padding="same"), (2, 13, 3), ()),
    ("conv2d_transpose", lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same"), (2, 5, 5, 3), ()),
]


def layer_params(entries):
    return [pytest.param(name, make, shape, id=name, marks=marks) for name, make, shape, marks in entries]


def _folded_pair(make, shape):
    from kopt.quantization.transforms import clone_with

    conv = make()
    conv.build(shape)
    conv.set_weights([RNG.normal(size=w.shape).astype("float32") for w in conv.get_weights()])
    bn = layers.BatchNormalization()
    bn.build(conv.compute_output_shape(shape))
    randomize_bn(bn)
    folded = FoldedBatchNorm(clone_with(conv), clone_with(bn), QuantizeConfig())
    return conv, bn, folded


@pytest.mark.parametrize("name, make, shape", layer_params(LINEAR_LAYERS))
def test_folded_batch_norm_equals_conv_then_bn(name, make, shape):
    x = RNG.normal(size=shape).astype("float32")
    conv, bn, folded = _folded_pair(make, shape)
    # Inference: one convolution with the folded kernel and bias.
    np.testing.assert_allclose(as_np(folded(x, training=False)), as_np(bn(conv(x), training=False)), atol=1e-5, rtol=1e-5)
    # Training: batch statistics, and the same moving-average updates as the BatchNormalization.
    expected = as_np(bn(conv(x), training=True))
    np.testing.assert_allclose(as_np(folded(x, training=True)), expected, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(as_np(folded.batch_norm.moving_mean), as_np(bn.moving_mean), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(as_np(folded.batch_norm.moving_variance), as_np(bn.moving_variance), atol=1e-5, rtol=1e-4)


@pytest.mark.backends
def test_folded_batch_norm_training_is_the_same_fused_and_op_by_op():
    """A folded BatchNorm's training step on an activation large enough to be fused (one compiled forward and
    backward on PyTorch): output, moving statistics and the gradients of kernel, gamma, beta and input agree
    with the op-by-op run, and the output with a plain Conv2D + BatchNormalization in training."""
    import keras
    from test_quantizers import _GradientProbe

    from kopt.core import backend
    from kopt.quantization import wrapper
    from kopt.quantization.transforms import clone_with
    from tests.gradient_testing import layer_gradients

    shape = (8, 32, 32, 3)
    x = RNG.normal(size=shape).astype("float32")
    upstream = RNG.normal(size=shape[:3] + (32,)).astype("float32")
    assert np.prod(upstream.shape) >= backend.FUSE_MIN_ELEMENTS
    # no conv bias: under a BatchNorm its gradient is 0 up to rounding noise
    conv, bn, _ = _folded_pair(lambda: layers.Conv2D(32, 3, padding="same", use_bias=False), shape)
    runs = []
    for eager in (False, True):
        folded = FoldedBatchNorm(clone_with(conv), clone_with(bn), QuantizeConfig(weights={"kernel": WeightQuantizer()}))
        probe = _GradientProbe(x, folded)  # the input as a variable: its gradient is the input's
        dummy = np.zeros(shape, "float32")
        probe(dummy)
        with backend.unfused() if eager else contextlib.nullcontext():
            gradients = layer_gradients(probe, dummy, upstream)
            outputs = as_np(folded(x, training=True))
        moving = [as_np(v) for v in (folded.batch_norm.moving_mean, folded.batch_norm.moving_variance)]
        names = {probe.values.path: "input"}
        runs.append((outputs, moving, {names.get(path, path.split("/")[-1]): g for path, g in gradients.items()}))
    (fused_out, fused_moving, fused_grads), (eager_out, eager_moving, eager_grads) = runs
    assert wrapper._normalized_by_batch.runs_compiled() == (keras.backend.backend() == "torch")
    np.testing.assert_allclose(fused_out, eager_out, atol=1e-5, rtol=1e-5)
    for fused_value, eager_value in zip(fused_moving, eager_moving):
        np.testing.assert_allclose(fused_value, eager_value, atol=1e-6, rtol=1e-5)
    assert sorted(fused_grads) == sorted(eager_grads) and {"kernel", "gamma", "beta", "input"} <= set(fused_grads)
    for name, fused_gradient in fused_grads.items():
        scale = np.abs(eager_grads[name]).max()
        np.testing.assert_allclose(fused_gradient, eager_grads[name], atol=1e-4 * scale, err_msg=name)
        assert np.abs(fused_gradient).max() > 0, name
    # the step is a BatchNormalization's in training (float kernel: the fake-quant moves it by a rounding)
    expected = as_np(bn(conv(x), training=True))
    np.testing.assert_allclose(fused_out, expected, atol=0.1)
    assert np.abs(fused_out - expected).mean() < 0.02


def test_folded_kernel_is_what_gets_quantized():
    conv, bn, _ = _folded_pair(lambda: layers.Conv2D(4, 3), (1, 6, 6, 2))
    from kopt.quantization.transforms import clone_with

    folded = FoldedBatchNorm(clone_with(conv), clone_with(bn), QuantizeConfig(weights={"kernel": WeightQuantizer()}))
    x = RNG.normal(size=(1, 6, 6, 2)).astype("float32")
    y = as_np(folded(x, training=False))
    scale = as_np(bn.gamma) / np.sqrt(as_np(bn.moving_variance) + bn.epsilon)
    w = as_np(conv.kernel) * scale
    codes, w_scale = symmetric_weight_codes(w, axis_channels=4)
    bias = as_np(bn.beta) + (as_np(conv.bias) - as_np(bn.moving_mean)) * scale
    reference = layers.Conv2D(4, 3)
    reference.build((1, 6, 6, 2))
    reference.set_weights([(codes * w_scale).astype("float32"), bias.astype("float32")])
    np.testing.assert_allclose(y, as_np(reference(x)), atol=1e-4)
    stripped_kernel = as_np(dict((id(v), t) for v, t in folded.transformed_weights())[id(folded.layer.kernel)])
    np.testing.assert_allclose(stripped_kernel / w_scale, codes, atol=1e-3)


@pytest.mark.parametrize("name, make, shape", layer_params(LINEAR_LAYERS))
def test_quantize_wrapper_uses_the_reference_quantized_kernel(name, make, shape):
    layer = make()
    layer.build(shape)
    channel_dims = 2 if isinstance(layer, layers.DepthwiseConv2D) else 1
    per_channel = not isinstance(layer, (layers.Dense, layers.Conv2DTranspose))
    wrapper = QuantizeWrapper(layer, QuantizeConfig(weights={"kernel": WeightQuantizer(per_channel=per_channel, channel_dims=channel_dims)}))
    x = RNG.normal(size=shape).astype("float32")
    y = as_np(wrapper(x))
    kernel = as_np(layer.kernel)
    flat = kernel.reshape(kernel.shape[:-2] + (-1,)) if channel_dims == 2 else kernel
    codes, scale = symmetric_weight_codes(flat, axis_channels=flat.shape[-1] if per_channel else None)
    reference = make()
    reference.build(shape)
    reference.set_weights([(codes * scale).reshape(kernel.shape).astype("float32")] + layer.get_weights()[1:])
    np.testing.assert_allclose(y, as_np(reference(x)), atol=1e-5)
    assert as_np(layer.kernel) == pytest.approx(kernel)  # the variable itself is untouched


def test_quantize_wrapper_rejects_a_missing_weight():
    wrapper = QuantizeWrapper(layers.Dense(3), QuantizeConfig(weights={"gamma": WeightQuantizer()}))
    with pytest.raises(ValueError, match="gamma"):
        wrapper(np.zeros((1, 2), "float32"))


@pytest.mark.parametrize(
    "make, shape",
    [
        pytest.param(lambda: layers.BatchNormalization(), (3, 4, 4, 5), marks=ALL_BACKENDS),
        (lambda: layers.BatchNormalization(), (6, 5)),
        (lambda: layers.BatchNormalization(center=False), (3, 7, 5)),
        (lambda: layers.Rescaling(1 / 127.5, offset=-1.0), (2, 4, 4, 3)),
        (lambda: layers.Normalization(mean=[0.5, 1.0, -2.0], variance=[4.0, 0.25, 1.0]), (2, 4, 4, 3)),
    ],
)
def test_channel_affine_equals_the_layer(make, shape):
    layer = make()
    layer.build(shape)
    if isinstance(layer, layers.BatchNormalization):
        randomize_bn(layer)
    affine = ChannelAffine(make(), QuantizeConfig(weights={"kernel": WeightQuantizer()}))
    affine.build(shape)
    affine.layer.set_weights(layer.get_weights())
    x = RNG.normal(size=shape).astype("float32")
    np.testing.assert_allclose(as_np(affine(x, training=False)), as_np(layer(x, training=False)), atol=1e-5, rtol=1e-5)
    if isinstance(layer, layers.BatchNormalization):
        np.testing.assert_allclose(as_np(affine(x, training=True)), as_np(layer(x, training=True)), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(as_np(affine.layer.moving_mean), as_np(layer.moving_mean), atol=1e-6)
