"""A composite layer's own weights and constant tensors as layers of the opened graph.

A composite layer may read ``self.class_token`` (a weight it created itself) or
``self.position_ids`` (a constant tensor) inside ``call``. Once the layer is opened into
its sublayers, those values need a home in the graph: a :class:`Parameter` (a trainable
weight: techniques prune, cluster and quantize it like a kernel, and saving keeps it) or a
:class:`Constant` (a fixed tensor). Both take a tensor input only to have a place in a
Functional graph; they ignore its value.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kopt.core.layers import Kernel, register_layer


@keras.saving.register_keras_serializable(package="kopt")
class Parameter(keras.layers.Layer):
    """Outputs its one weight ``value`` (shape and dtype fixed); the input gives only the batch size.

    With ``per_sample`` the value (leading axis 1, e.g. a class token) is repeated along the
    input's batch axis, as ``ops.tile(token, (batch, 1, 1))`` does in keras-hub's embeddings.
    """

    def __init__(self, shape: tuple[int, ...], value_dtype: str = "float32", per_sample: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.value_shape = tuple(int(d) for d in shape)
        self.value_dtype = value_dtype
        self.per_sample = bool(per_sample)
        self.value = self.add_weight(shape=self.value_shape, dtype=value_dtype, initializer="zeros", name="value")
        self.built = True

    @classmethod
    def holding(cls, array: Any, name: str, trainable: bool = True, per_sample: bool = False) -> "Parameter":
        array = keras.ops.convert_to_numpy(array)
        layer = cls(array.shape, value_dtype=str(array.dtype), per_sample=per_sample, name=name, trainable=trainable)
        layer.value.assign(array)
        return layer

    def build(self, input_shape: Any) -> None:
        self.built = True

    def call(self, inputs: Any) -> Any:
        # A copy, not the variable: a tf.custom_gradient downstream (fake-quant) must not capture the variable.
        value = keras.ops.copy(keras.ops.convert_to_tensor(self.value))
        if not self.per_sample:
            return value
        batch = keras.ops.shape(keras.tree.flatten(inputs)[0])[0]
        return keras.ops.broadcast_to(value, (batch, *self.value_shape[1:]))

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        if self.per_sample:
            batch = keras.tree.flatten(inputs)[0].shape[0]
            return keras.KerasTensor((batch, *self.value_shape[1:]), dtype=self.value_dtype)
        return keras.KerasTensor(self.value_shape, dtype=self.value_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.value_shape), "value_dtype": self.value_dtype,
                "per_sample": self.per_sample}


@keras.saving.register_keras_serializable(package="kopt")
class Constant(keras.layers.Layer):
    """Outputs a fixed tensor (e.g. position ids) stored in its config; the input is ignored."""

    def __init__(self, value: Any, value_dtype: str | None = None, **kwargs: Any):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        array = np.asarray(keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else value)
        self.constant = array.astype(value_dtype) if value_dtype else array
        self.built = True

    def build(self, input_shape: Any) -> None:
        self.built = True

    def call(self, inputs: Any) -> Any:
        return keras.ops.convert_to_tensor(self.constant)

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        return keras.KerasTensor(self.constant.shape, dtype=str(self.constant.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "value": self.constant.tolist(), "value_dtype": str(self.constant.dtype)}


register_layer(Parameter, [Kernel("value", None)])  # pruned, clustered and quantized per tensor, like a kernel
