"""Layers that fake-quantize: weights (QuantizeWrapper and its BatchNorm-aware variants) and activations.

* :class:`QuantizeWrapper` runs a layer with fake-quantized weights (the quantizers of
  its :class:`~kopt.quantization.config.QuantizeConfig`).
* :class:`FoldedBatchNorm` is a Conv/Dense followed by a BatchNormalization, computed so
  that the fake-quant sees the *folded* kernel: the converter then has nothing to fold.
* :class:`ChannelAffine` runs a standalone per-channel affine layer (BatchNormalization,
  Rescaling, Normalization) as a 1x1 depthwise convolution with a quantized kernel, which
  lowers to one int8 DEPTHWISE_CONV_2D instead of a MUL + ADD pair with an unquantized
  tensor between them.
* :class:`ActivationQuantize` fake-quantizes an activation with a learnt range; one
  instance called on several tensors gives them one shared range.

Activation fake-quants are separate layers placed by :mod:`kopt.quantization.ranges`,
never inside the wrappers, so that a range can be shared across layers.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from kopt.core.backend import fused
from kopt.core.errors import InvalidArgumentError, InvalidArgumentTypeError
from kopt.graph.rebuild import clone_layer
from kopt.quantization import kernels
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.quantizers import ActivationQuantizer, Quantizer, deserialize, serialize
from kopt.technique.wrapper import KoptWrapper


def _as_config(config: Any) -> QuantizeConfig:
    if isinstance(config, QuantizeConfig):
        return config
    if isinstance(config, dict):
        restored = keras.saving.deserialize_keras_object(config)
        if isinstance(restored, QuantizeConfig):
            return restored
    raise InvalidArgumentTypeError(f"Expected a kopt.quantization.QuantizeConfig, got {config!r}.")


@keras.saving.register_keras_serializable(package="kopt")
class QuantizeWrapper(KoptWrapper):
    """Runs ``layer`` with the weights listed in ``quantize_config`` fake-quantized.

    Gradients reach the original variables through the straight-through estimator.
    ``strip()`` keeps the wrapper (a copy): the fake-quant ops are what the TFLite
    converter reads the int8 parameters from.
    """

    technique = "quantize"
    kept_by_strip = True

    def reached_variables(self) -> list[keras.Variable]:
        """The weights its config fake-quantizes (a fold or an affine layer: every inner weight)."""
        if not self.quantize_config.weights:
            return list(self.layer.weights)
        return [v for attr in self.quantize_config.weights if isinstance(v := getattr(self.layer, attr, None), keras.Variable)]

    def __init__(self, layer: keras.layers.Layer, quantize_config: QuantizeConfig, **kwargs: Any):
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = _as_config(quantize_config)
        self._quantizer_state: dict[str, dict[str, keras.Variable]] = {}

    # ------------------------------------------------------------------ build
    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        self._check_weights()
        for attr, quantizer in self.quantize_config.weights.items():
            variable = getattr(self.layer, attr)
            self._quantizer_state[attr] = quantizer.build(self, attr, tuple(variable.shape), variable)
        self.built = True

    def _check_weights(self) -> None:
        for attr in self.quantize_config.weights:
            variable = getattr(self.layer, attr, None)
            if not isinstance(variable, keras.Variable):
                raise InvalidArgumentError(
                    f"The QuantizeConfig of layer {self.layer.name!r} ({type(self.layer).__name__}) quantizes weight "
                    f"{attr!r}, but the layer has no variable attribute of that name. Its variables are "
                    f"{[v.path.split('/')[-1] for v in self.layer.weights]}."
                )

    # ------------------------------------------------------------------- call
    def weight_quantizer(self, attr: str) -> Quantizer:
        return self.quantize_config.weights[attr]

    def source_weight(self, attr: str) -> Any:
        """The value of ``layer.<attr>`` to compute with, before any BatchNorm fold or fake-quant.

        The variable itself, unless its quantizer has a ``source_weight(value, state)`` method
        that derives it from the quantizer's state (a cluster-preserving quantizer's trained
        centroids gathered by fixed indices, a sparsity-preserving quantizer's masked kernel).
        """
        value = ops.convert_to_tensor(getattr(self.layer, attr))
        supply = getattr(self.quantize_config.weights.get(attr), "source_weight", None)
        return value if supply is None else supply(value, self._quantizer_state.get(attr, {}))

    def _quantized_view(self, attr: str, view: Any, training: bool) -> Any:
        return self.weight_quantizer(attr)(view, self._quantizer_state.get(attr, {}), training)

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        pairs = []
        for attr in self.quantize_config.weights:
            variable = getattr(self.layer, attr)
            if attr == "kernel":
                view = kernels.kernel_view(self.layer, self.source_weight(attr))
                pairs.append((variable, kernels.from_view(self.layer, self._quantized_view(attr, view, training))))
            else:
                pairs.append((variable, self._quantized_view(attr, self.source_weight(attr), training)))
        return pairs

    def call(self, inputs: Any, training: bool | None = None, **kwargs: Any) -> Any:
        if kernels.uses_conv2d_view(self.layer) and "kernel" in self.quantize_config.weights:
            view = kernels.kernel_view(self.layer, self.source_weight("kernel"))
            return kernels.run_linear(self.layer, inputs, self._quantized_view("kernel", view, bool(training)), None)
        return super().call(inputs, training=training, **kwargs)

    # ------------------------------------------------------------------ strip
    def strip(self) -> keras.layers.Layer:
        """A copy of this wrapper: the fake-quant ranges are needed for lowering."""
        return clone_layer(self)

    # ---------------------------------------------------------- serialization
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantize_config": keras.saving.serialize_keras_object(self.quantize_config)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "QuantizeWrapper":
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        quantize_config = _as_config(config.pop("quantize_config"))
        return cls(layer, quantize_config, **config)


def _bn_parameters(bn: keras.layers.BatchNormalization) -> tuple[Any, Any]:
    channels = tuple(bn.moving_mean.shape)
    gamma = ops.convert_to_tensor(bn.gamma) if bn.gamma is not None else ops.ones(channels)
    beta = ops.convert_to_tensor(bn.beta) if bn.beta is not None else ops.zeros(channels)
    return ops.cast(gamma, "float32"), ops.cast(beta, "float32")


def _update_moving_statistics(bn: keras.layers.BatchNormalization, mean: Any, variance: Any) -> None:
    momentum = bn.momentum
    bn.moving_mean.assign(bn.moving_mean * momentum + ops.stop_gradient(mean) * (1.0 - momentum))
    bn.moving_variance.assign(bn.moving_variance * momentum + ops.stop_gradient(variance) * (1.0 - momentum))


def _safe_reciprocal(values: Any) -> Any:
    """``1 / values`` per channel, 0 where a channel's scale is 0 (gamma = 0: the channel is constant)."""
    tiny = ops.abs(values) < 1e-12
    return ops.where(tiny, 0.0, 1.0 / ops.where(tiny, 1.0, values))


@fused
def _normalized_by_batch(
    z: Any, inverse: Any, gamma: Any, beta: Any, epsilon: float, synchronized: bool = False
) -> tuple[Any, Any, Any]:
    """A folded BatchNorm's training output from ``z = layer(x)`` with the scaled kernel (``inverse``:
    ``1 / s`` per channel), and the batch mean and variance of the unfolded response ``z / s``.

    Fused (:func:`~kopt.core.backend.fused`): on eager PyTorch the moments and the affine map are
    one compiled forward and backward instead of some ten passes over ``z``, each writing a fresh
    buffer; that was most of the QAT step's overhead there."""
    z_mean, z_variance = ops.moments(z, axes=tuple(range(len(z.shape) - 1)), synchronized=synchronized)
    mean, variance = z_mean * inverse, z_variance * ops.square(inverse)  # statistics of z / s
    normalizer = gamma * ops.rsqrt(variance + epsilon)
    return z * (inverse * normalizer) + (beta - mean * normalizer), mean, variance


@keras.saving.register_keras_serializable(package="kopt")
class FoldedBatchNorm(QuantizeWrapper):
    """``batch_norm(layer(x))`` computed with the BatchNorm folded into the layer's kernel.

    With ``s = gamma / sqrt(moving_variance + eps)`` the kernel seen by the weight
    fake-quant is ``kernel * s`` (per output channel) and the bias is
    ``beta + (bias - moving_mean) * s``. In inference the output is one convolution with
    that kernel and bias, which the converter lowers as is.

    In training the same convolution ``z`` (quantized folded kernel) is normalized with
    the *batch* statistics, as a BatchNormalization does: the unfolded response is
    ``z / s``, so its batch mean and variance are those of ``z`` divided by ``s`` and
    ``s**2`` — no extra pass over the activations — and the moving averages are updated.
    One convolution per step, no second float pass.

    ``layer`` must have a linear activation; the kernel quantizer is
    ``quantize_config.weights["kernel"]`` (none: a float fold).
    """

    def reached_variables(self) -> list[keras.Variable]:
        return list(self.layer.weights)  # the folded kernel and bias are both quantized

    def __init__(
        self,
        layer: keras.layers.Layer,
        batch_norm: keras.layers.BatchNormalization,
        quantize_config: QuantizeConfig,
        **kwargs: Any,
    ):
        kwargs.setdefault("name", f"{layer.name}_folded")
        super().__init__(layer, quantize_config, **kwargs)
        self.batch_norm = batch_norm

    def build(self, input_shape: Any = None) -> None:
        KoptWrapper.build(self, input_shape)
        if not self.batch_norm.built:
            self.batch_norm.build(self.layer.compute_output_shape(input_shape))
        quantizer = self.quantize_config.weights.get("kernel")
        if quantizer is not None:
            shape = tuple(kernels.kernel_view(self.layer, ops.zeros(self.layer.kernel.shape)).shape)
            self._quantizer_state["kernel"] = quantizer.build(self, "kernel", shape, self.layer.kernel)
        self.built = True

    def _has_bias(self) -> bool:
        return getattr(self.layer, "bias", None) is not None

    def folded_kernel_and_bias(self) -> tuple[Any, Any, Any]:
        """``(folded kernel view, folded bias, per-channel scale s)`` from the moving statistics."""
        gamma, beta = _bn_parameters(self.batch_norm)
        folded, scale = self._folded_kernel(gamma)
        return folded, self._folded_bias(beta, scale), scale

    def _folded_kernel(self, gamma: Any) -> tuple[Any, Any]:
        """``(folded kernel view, per-channel scale s)``."""
        scale = gamma * ops.rsqrt(ops.cast(self.batch_norm.moving_variance, "float32") + self.batch_norm.epsilon)
        view = kernels.kernel_view(self.layer, self.source_weight("kernel"))
        return kernels.scale_kernel(self.layer, view, scale), scale

    def _folded_bias(self, beta: Any, scale: Any) -> Any:
        bias = ops.convert_to_tensor(self.layer.bias) if self._has_bias() else 0.0
        return beta + (bias - ops.cast(self.batch_norm.moving_mean, "float32")) * scale

    def _quantize_kernel(self, view: Any, training: bool) -> Any:
        if "kernel" not in self.quantize_config.weights:
            return view
        return self._quantized_view("kernel", view, training)

    def _run(self, inputs: Any, kernel_view: Any, bias: Any) -> Any:
        """The layer with this kernel and bias (a layer without bias gets an Add, which TFLite fuses)."""
        if self._has_bias():
            return kernels.run_linear(self.layer, inputs, kernel_view, bias)
        return kernels.run_linear(self.layer, inputs, kernel_view, None) + bias

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        folded, folded_bias, _ = self.folded_kernel_and_bias()
        pairs = [(self.layer.kernel, kernels.from_view(self.layer, self._quantize_kernel(folded, False)))]
        if self._has_bias():
            pairs.append((self.layer.bias, folded_bias))
        return pairs

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        bn = self.batch_norm
        gamma, beta = _bn_parameters(bn)
        folded, scale = self._folded_kernel(gamma)
        quantized = self._quantize_kernel(folded, bool(training))
        if not (training and bn.trainable):  # the folded bias: only inference uses it
            return self._run(inputs, quantized, self._folded_bias(beta, scale))
        if self._has_bias():  # z = s * (conv(x, Q) / s + bias): the unfolded response, scaled
            z = kernels.run_linear(self.layer, inputs, quantized, ops.convert_to_tensor(self.layer.bias) * scale)
        else:
            z = kernels.run_linear(self.layer, inputs, quantized, None)
        inverse = _safe_reciprocal(scale)
        # synchronized=True (TensorFlow): the statistics of the global batch under tf.distribute.
        synchronized = bool(getattr(bn, "synchronized", False))
        outputs, mean, variance = _normalized_by_batch(z, inverse, gamma, beta, float(bn.epsilon), synchronized)
        _update_moving_statistics(bn, mean, variance)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "batch_norm": keras.saving.serialize_keras_object(self.batch_norm)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "FoldedBatchNorm":
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        batch_norm = keras.saving.deserialize_keras_object(config.pop("batch_norm"), custom_objects=custom_objects)
        quantize_config = _as_config(config.pop("quantize_config"))
        return cls(layer, batch_norm, quantize_config, **config)


@keras.saving.register_keras_serializable(package="kopt")
class ChannelAffine(QuantizeWrapper):
    """A per-channel ``x * a + b`` layer (BatchNormalization, Rescaling, Normalization), quantized.

    In inference it is computed as a 1x1 depthwise convolution whose kernel ``a`` is
    fake-quantized per channel (exact: one value per channel) with bias ``b``, so TFLite
    gets one DEPTHWISE_CONV_2D. A BatchNormalization in training uses and updates batch
    statistics as usual. The channel axis must be the last one.
    """

    def build(self, input_shape: Any = None) -> None:
        KoptWrapper.build(self, input_shape)  # not QuantizeWrapper.build: its weights are computed, not the layer's
        self.channels = int(input_shape[-1])
        quantizer = self.quantize_config.weights.get("kernel")
        if quantizer is not None:
            self._quantizer_state["kernel"] = quantizer.build(self, "kernel", (1, 1, self.channels))
        self.built = True

    def _check_weights(self) -> None:
        pass

    def coefficients(self, inputs: Any = None, training: bool = False) -> tuple[Any, Any]:
        """``(a, b)``, each of shape ``(channels,)``; updates BatchNorm statistics in training."""
        layer, channels = self.layer, self.channels
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta = _bn_parameters(layer)
            if training and layer.trainable and inputs is not None:
                axes = tuple(range(len(inputs.shape) - 1))
                mean, variance = ops.moments(
                    ops.cast(inputs, "float32"), axes=axes, synchronized=bool(getattr(layer, "synchronized", False))
                )
                _update_moving_statistics(layer, mean, variance)
            else:
                mean = ops.cast(layer.moving_mean, "float32")
                variance = ops.cast(layer.moving_variance, "float32")
            a = gamma * ops.rsqrt(variance + layer.epsilon)
            return a, beta - mean * a
        if isinstance(layer, keras.layers.Rescaling):
            a = ops.broadcast_to(ops.reshape(ops.cast(layer.scale, "float32"), (-1,)), (channels,))
            b = ops.broadcast_to(ops.reshape(ops.cast(layer.offset, "float32"), (-1,)), (channels,))
            return a, b
        if isinstance(layer, keras.layers.Normalization):
            mean = ops.broadcast_to(ops.reshape(ops.cast(layer.mean, "float32"), (-1,)), (channels,))
            variance = ops.broadcast_to(ops.reshape(ops.cast(layer.variance, "float32"), (-1,)), (channels,))
            a = 1.0 / ops.maximum(ops.sqrt(variance), keras.config.epsilon())
            return a, -mean * a
        if hasattr(layer, "coefficients"):  # kopt.quantization.decompose.ScaleShift
            return layer.coefficients()
        raise InvalidArgumentTypeError(f"ChannelAffine cannot compute {type(layer).__name__} layers.")

    def _quantized_scale(self, a: Any, training: bool) -> Any:
        if "kernel" not in self.quantize_config.weights:
            return a
        return ops.reshape(self._quantized_view("kernel", ops.reshape(a, (1, 1, self.channels)), training), (-1,))

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        return []

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        training = bool(training)
        a, b = self.coefficients(inputs, training)
        a = self._quantized_scale(a, training)
        x = ops.cast(inputs, "float32")
        if training:
            return x * a + b
        rank = len(x.shape)
        if rank == 4:
            x4 = x
        elif rank == 3:
            x4 = ops.expand_dims(x, 1)
        elif rank == 2:
            x4 = ops.reshape(x, (-1, 1, 1, self.channels))
        else:
            return x * a + b
        y = ops.depthwise_conv(x4, ops.reshape(a, (1, 1, self.channels, 1)), strides=1, padding="valid") + b
        if rank == 3:
            return ops.squeeze(y, 1)
        if rank == 2:
            return ops.reshape(y, (-1, self.channels))
        return y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return super().get_config()


@keras.saving.register_keras_serializable(package="kopt")
class ActivationQuantize(keras.layers.Layer):
    """Fake-quantizes its input with a range learnt in training (see :class:`ActivationQuantizer`).

    Placed after every tensor that gets its own int8 parameters in TFLite. Called on
    several tensors (``quantizer.num_calls`` of them, once each per forward pass) it
    gives them one shared range, as a Concatenate's inputs need.
    """

    kopt_internal = True  # inserted by kopt: not one of the user's layers

    def __init__(self, quantizer: ActivationQuantizer | dict | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        quantizer = deserialize(quantizer) if quantizer is not None else ActivationQuantizer()
        if not isinstance(quantizer, ActivationQuantizer):
            raise InvalidArgumentTypeError(f"ActivationQuantize needs an ActivationQuantizer, got {quantizer!r}.")
        self.quantizer = quantizer
        self._state: dict[str, keras.Variable] = {}

    def build(self, input_shape: Any = None) -> None:
        self._state = self.quantizer.build(self, "", ())
        self.built = True

    @property
    def range(self) -> tuple[float, float]:
        """The stored ``(min, max)`` (what inference and the TFLite model use, before nudging)."""
        low, high = self.quantizer.stored_range(self._state)
        return float(ops.convert_to_numpy(low)), float(ops.convert_to_numpy(high))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.quantizer(inputs, self._state, bool(training))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantizer": serialize(self.quantizer)}


__all__ = ["ActivationQuantize", "ChannelAffine", "FoldedBatchNorm", "QuantizeWrapper"]
