"""Small models and data the kopt.tfmot tests share."""

from __future__ import annotations

import keras
import numpy as np


def small_cnn(depthwise: bool = True) -> keras.Sequential:
    """8x8x1 -> Conv2D -> (DepthwiseConv2D) -> Flatten -> Dense(10), as TFMOT's guides build them."""
    layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv")]
    if depthwise:
        layers.append(keras.layers.DepthwiseConv2D(3, activation="relu", name="depthwise"))
    layers += [keras.layers.Flatten(name="flatten"), keras.layers.Dense(10, name="dense")]
    return keras.Sequential(layers, name="small_cnn")


def functional_cnn() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="dense")(x), name="functional_cnn")


def data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 10, size=(n,))


def compile_model(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def sparsity(values: np.ndarray) -> float:
    values = np.asarray(values)
    return float(np.count_nonzero(values == 0) / values.size)


class UnknownWeighted(keras.layers.Layer):
    """A custom layer with a weight and no pruning/clustering opt-in."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale
