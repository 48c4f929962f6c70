"""Layers shared by the sparsity tests: one kopt does not know, one that opts in to pruning."""

import keras

from kopt.sparsity import PrunableLayer


class Scale(keras.layers.Layer):
    """A custom layer kopt knows nothing about."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class MyDense(keras.layers.Layer, PrunableLayer):
    """A custom layer that opts in, with an M:N axis for its kernel."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.kernel = self.add_weight(name="kernel", shape=(shape[-1], self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return x @ self.kernel + self.bias

    def get_prunable_weights(self):
        return [(self.kernel, 0)]

    def get_config(self):
        return {**super().get_config(), "units": self.units}
