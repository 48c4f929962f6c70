"""Shared helpers of the collaborative-optimization tests: tiny models, NumPy pruning / clustering.

The "pruned" and "clustered" kernels are made directly with NumPy (smallest magnitudes set to
zero, the rest snapped to a few values), which is what a stripped pruned / clustered model
holds, without spending test time on fine-tuning.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from kopt.clustering.layout import from_matrix_np, to_matrix_np
from kopt.quantization import FoldedBatchNorm, QuantizeWrapper

WEIGHTED = (layers.Conv1D, layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


def all_kinds_model(batch_norm: bool, name: str = "kinds") -> keras.Model:
    """Conv2D -> DepthwiseConv2D -> Conv1D -> Dense -> Dense, each followed by a *standalone*
    ReLU / ReLU6 layer (the MobileNet pattern), with a BatchNormalization in between when asked."""
    inputs = keras.Input((6, 6, 2))

    def norm(x, label):
        return layers.BatchNormalization(name=f"{label}_bn")(x) if batch_norm else x

    x = layers.Conv2D(6, 3, padding="same", use_bias=not batch_norm, name="conv2d")(inputs)
    x = layers.ReLU(name="conv2d_relu")(norm(x, "conv2d"))
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = layers.ReLU(6.0, name="depthwise_relu6")(norm(x, "depthwise"))
    x = layers.Reshape((36, 12), name="to_sequence")(x)
    x = layers.Conv1D(8, 3, strides=2, padding="same", name="conv1d")(x)
    x = layers.ReLU(name="conv1d_relu")(norm(x, "conv1d"))
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(12, name="hidden")(x)
    x = layers.ReLU(name="hidden_relu")(norm(x, "hidden"))
    outputs = layers.Dense(4, name="out")(x)
    model = keras.Model(inputs, outputs, name=name)
    if batch_norm:  # non-trivial statistics, so that folding scales every channel differently
        rng = np.random.default_rng(7)
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                c = layer.moving_mean.shape[0]
                layer.gamma.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
                layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
                layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def channel_axes(layer: keras.layers.Layer) -> tuple[int, ...]:
    return (-2, -1) if isinstance(layer, layers.DepthwiseConv2D) else (-1,)


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, WEIGHTED)]


def prune_np(values: np.ndarray, sparsity: float) -> np.ndarray:
    """Magnitude pruning: the ``sparsity`` fraction of smallest |values| set to exactly 0."""
    flat = np.abs(values).reshape(-1)
    count = int(round(sparsity * flat.size))
    out = values.copy().reshape(-1)
    out[np.argsort(flat, kind="stable")[:count]] = 0.0
    return out.reshape(values.shape)


def cluster_np(values: np.ndarray, clusters: int, axes: tuple[int, ...] = (), keep_zeros: bool = False) -> np.ndarray:
    """Snap every channel (or the tensor) to ``clusters`` quantile centroids (one of them an
    exact 0 with ``keep_zeros``, which then keeps the zeros where they are)."""
    matrix = to_matrix_np(values, axes).copy()
    for c in range(matrix.shape[1]):
        column = matrix[:, c]
        free = column != 0 if keep_zeros else np.ones_like(column, bool)
        k = clusters - 1 if keep_zeros else clusters
        if not free.any():
            continue
        centroids = np.unique(np.quantile(column[free], np.linspace(0, 1, k)))
        column[free] = centroids[np.abs(column[free][:, None] - centroids[None, :]).argmin(axis=1)]
    return from_matrix_np(matrix, values.shape, axes).astype(values.dtype)


def structure(model: keras.Model, *, sparsity: float = 0.0, clusters: int | None = None, per_channel: bool = False) -> keras.Model:
    """Give every weighted layer of ``model`` (in place) pruned and/or clustered kernels."""
    for layer in weighted_layers(model):
        values = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        if sparsity:
            values = prune_np(values, sparsity)
        if clusters:
            values = cluster_np(values, clusters, channel_axes(layer) if per_channel else (), keep_zeros=sparsity > 0)
        layer.kernel.assign(values)
    return model


def wrappers(model: keras.Model) -> dict[str, QuantizeWrapper]:
    """Quantize wrappers (FoldedBatchNorm included) by inner layer name."""
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, QuantizeWrapper)}


def deployed_kernel(wrapper: QuantizeWrapper) -> np.ndarray:
    """The fake-quantized (BatchNorm-folded) kernel the wrapper computes with in inference."""
    pairs = {id(variable): value for variable, value in wrapper.transformed_weights(training=False)}
    return np.asarray(keras.ops.convert_to_numpy(pairs[id(wrapper.layer.kernel)]))


def effective_kernel(wrapper: QuantizeWrapper) -> np.ndarray:
    """The kernel before folding and fake-quant (what the preserving quantizer supplies)."""
    return np.asarray(keras.ops.convert_to_numpy(wrapper.source_weight("kernel")))


def max_unique_per_channel(values: np.ndarray, axes: tuple[int, ...]) -> int:
    matrix = to_matrix_np(values, axes)
    return max(np.unique(matrix[:, c]).size for c in range(matrix.shape[1]))


def regression_data(model: keras.Model, samples: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.normal(size=(samples,) + tuple(model.output_shape[1:])).astype("float32")
    return x, y


def fit(model: keras.Model, epochs: int = 1, lr: float = 1e-2, run_eagerly: bool | None = None) -> keras.Model:
    """Two Adam steps per epoch. By default eager under TensorFlow (faster than tracing a graph for
    so few steps) and compiled under JAX (eager JAX compiles every op separately)."""
    if run_eagerly is None:
        run_eagerly = keras.backend.backend() != "jax"
    x, y = regression_data(model)
    model.compile(keras.optimizers.Adam(lr), "mse", run_eagerly=run_eagerly)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


__all__ = [
    "FoldedBatchNorm",
    "all_kinds_model",
    "channel_axes",
    "cluster_np",
    "deployed_kernel",
    "effective_kernel",
    "fit",
    "max_unique_per_channel",
    "prune_np",
    "regression_data",
    "structure",
    "weighted_layers",
    "wrappers",
]
