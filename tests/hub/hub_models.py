"""Tiny keras-hub backbones built from explicit configs (nothing downloaded), shared by the hub tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")


def vit(image_shape=(32, 32, 3), hidden_dim=32):
    return keras_hub.models.ViTBackbone(
        image_shape=image_shape, patch_size=8, num_layers=2, num_heads=2, hidden_dim=hidden_dim, mlp_dim=2 * hidden_dim
    )


def deit(image_shape=(32, 32, 3)):
    return keras_hub.models.DeiTBackbone(
        image_shape=image_shape, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64
    )


def mit(image_shape=(32, 32, 3)):
    return keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.1, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[16, 32],
        image_shape=image_shape,
    )



def segformer(image_shape=(32, 32, 3)):
    """SegFormer's head on the tiny MiT: Dense projections, one shared bilinear Resizing, Concatenate, Conv+BN+ReLU."""
    return keras_hub.models.SegFormerBackbone(image_encoder=mit(image_shape), projection_filters=32)

def swin(image_shape=(32, 32, 3)):
    """Two stages; the first has two blocks, the second of them shifted (``ops.roll`` and a window mask)."""
    return keras_hub.models.SwinTransformerBackbone(
        image_shape=image_shape, patch_size=4, embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4
    )


def resnet(image_shape=(32, 32, 3)):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block", image_shape=image_shape,
    )


def mobilenet_v3(image_shape=(32, 32, 3)):
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 72]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]], output_num_filters=48, depthwise_filters=8, depthwise_stride=2,
        depthwise_residual=False, last_layer_filter=48, squeeze_and_excite=0.5, input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=8, image_shape=image_shape,
    )


def classifier(backbone, classes=10):
    """The backbone + global average pooling + a Dense head (a Functional model holding the backbone)."""
    inputs = keras.Input(backbone.inputs[0].shape[1:])
    features = backbone(inputs)
    pool = keras.layers.GlobalAveragePooling1D() if len(features.shape) == 3 else keras.layers.GlobalAveragePooling2D()
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(pool(features)))


def digits_32(channels=3):
    """scikit-learn's digits upsampled 4x to 32x32 (values 0..1), split 1400 / 397."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.kron(data.images / 16.0, np.ones((4, 4)))[..., None].astype("float32")
    x = np.repeat(x, channels, axis=-1)
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def kernels(model):
    """Every trainable weight of rank >= 2 but biases (an independent count: NumPy on the model's weights)."""
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_weights if len(v.shape) >= 2 and v.name != "bias"]
