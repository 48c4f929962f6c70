"""Shared helpers of the optimize / pipeline / report / plots / cli tests: digits data, tiny models."""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import layers


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype("float32")[..., None], digits.target.astype("int32")


def digits(train: int = 600, val: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_val, y_val`` from scikit-learn's 8x8 digits (validation from the end)."""
    x, y = _digits()
    return x[:train], y[:train], x[-val:], y[-val:]


def tiny_cnn(name: str = "tiny", activation: str | None = None) -> keras.Model:
    """Conv(8) -> [activation layer] -> MaxPool -> Flatten -> Dense(10): trains to ~90% on digits in seconds."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    if activation == "leaky_relu":
        x = layers.LeakyReLU(0.1, name="leaky")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    outputs = layers.Dense(10, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_model(model: keras.Model, lr: float = 3e-3) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def trained_cnn(epochs: int = 10, **kwargs) -> keras.Model:
    keras.utils.set_random_seed(0)
    x, y, _, _ = digits()
    model = compile_model(tiny_cnn(**kwargs))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def tiny_dense(name: str = "mlp") -> keras.Model:
    """Flatten -> Dense(32) -> Dense(10) on the digits: the backend-agnostic tests' model."""
    inputs = keras.Input((8, 8, 1))
    x = layers.Flatten(name="flat")(inputs)
    x = layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = layers.Dense(10, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name=name)


def kernel(model: keras.Model, layer: str) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model.get_layer(layer).kernel))
