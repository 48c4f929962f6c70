"""Gradients of a layer's trainable variables on any Keras backend (shared by the tests)."""

from __future__ import annotations

import keras
import numpy as np
import pytest


def layer_gradients(layer: keras.layers.Layer, x: np.ndarray, upstream: np.ndarray) -> dict[str, np.ndarray]:
    """d sum(layer(x, training=True) * upstream) / d v for every trainable variable v, by path.

    On TensorFlow and PyTorch the call updates the layer's state (e.g. activation ranges) as a
    training step would; on JAX the state is read but not written back.
    """
    backend = keras.backend.backend()
    variables = list(layer.trainable_variables)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True) * upstream)
        grads = tape.gradient(loss, [v.value for v in variables])
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(trainable):
            out, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return (out * upstream).sum()

        grads = jax.grad(loss_fn)([v.value for v in variables])
    elif backend == "torch":
        import torch

        for v in variables:
            v.value.grad = None
        loss = (layer(x, training=True) * torch.as_tensor(upstream)).sum()
        loss.backward()
        grads = [v.value.grad for v in variables]
    else:  # pragma: no cover
        pytest.skip(f"no gradients on backend {backend}")
    return {
        v.path: (np.zeros(v.shape) if g is None else keras.ops.convert_to_numpy(g)) for v, g in zip(variables, grads)
    }
