"""Which QuantizeConfig each layer class gets: registries, the user registry and the default 8-bit table.

A registry maps a layer (or raw ``keras.ops`` operation) class — matched exactly, so a
subclass that changes ``call`` is not silently treated as its parent — to a
:class:`QuantizeConfig` or to a factory ``layer -> QuantizeConfig | None`` (``None``: this
variant of the layer is not supported, e.g. a ``ReLU(max_value=3)``).

Users extend quantization to their own layers with :func:`register` (also usable as a
decorator on a factory); those entries take precedence over every scheme's table.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import keras

from kopt.core.errors import InvalidArgumentTypeError
from kopt.core.keras_compat import ops_core, ops_image, ops_math, ops_nn, ops_numpy
from kopt.graph.composite import keep_closed
from kopt.quantization.config import QuantizeConfig
from kopt.quantization.quantizers import WeightQuantizer

ConfigFactory = Callable[[keras.Operation], Union[QuantizeConfig, None]]
ConfigEntry = Union[QuantizeConfig, ConfigFactory]


class QuantizeRegistry:
    """Layer class -> QuantizeConfig (or factory). Lookups match the exact class."""

    def __init__(self, entries: Mapping[type, ConfigEntry] | None = None):
        self._entries: dict[type, ConfigEntry] = {}
        for cls, entry in (entries or {}).items():
            self.register(cls, entry)

    def register(self, cls: type, config: ConfigEntry | None = None) -> Any:
        """Register ``config`` for ``cls``; without ``config``, return a decorator for a factory."""
        if not isinstance(cls, type):
            raise InvalidArgumentTypeError(f"register() needs a layer class, got {cls!r}.")
        if config is None:

            def decorator(factory: ConfigFactory) -> ConfigFactory:
                self.register(cls, factory)
                return factory

            return decorator
        if not isinstance(config, QuantizeConfig) and not callable(config):
            raise InvalidArgumentTypeError(
                f"register({cls.__name__}, ...) needs a QuantizeConfig or a function layer -> QuantizeConfig, "
                f"got {config!r}."
            )
        self._entries[cls] = config
        return config

    def unregister(self, cls: type) -> None:
        self._entries.pop(cls, None)

    def __contains__(self, cls: type) -> bool:
        return cls in self._entries

    def classes(self) -> list[type]:
        return list(self._entries)

    def lookup(self, layer: keras.Operation) -> QuantizeConfig | None:
        """The config for ``layer``, or None when its class (or this variant of it) is not covered."""
        entry = self._entries.get(type(layer))
        if entry is None:
            return None
        config = entry if isinstance(entry, QuantizeConfig) else entry(layer)
        if config is not None and not isinstance(config, QuantizeConfig):
            raise InvalidArgumentTypeError(
                f"The quantize-config factory registered for {type(layer).__name__} returned {config!r}; "
                "it must return a QuantizeConfig or None."
            )
        return config

    def merged(self, *others: "QuantizeRegistry") -> "QuantizeRegistry":
        """A new registry: this one's entries, overridden by those of ``others`` in order."""
        merged = QuantizeRegistry()
        for registry in (self, *others):
            merged._entries.update(registry._entries)
        return merged


#: Entries registered by users; consulted before any scheme's own table.
USER_REGISTRY = QuantizeRegistry()


def register(cls: type, config: ConfigEntry | None = None) -> Any:
    """Tell every scheme how to quantize layers of class ``cls``.

    ``kopt.quantization.register(MyLayer, QuantizeConfig(weights={"kernel": WeightQuantizer()}))``,
    or as a decorator on a factory::

        @kopt.quantization.register(MyLayer)
        def my_layer_config(layer):
            return QuantizeConfig(weights={"kernel": WeightQuantizer()}, output="range")

    A registered class is quantized as one layer, so the graph analyzer keeps it closed.
    """
    if isinstance(cls, type):
        keep_closed(cls)
    return USER_REGISTRY.register(cls, config)


# ----------------------------------------------------------------- activations
_FUSABLE = {"relu", "relu6", "linear"}
#: The output range TFLite's int8 kernels impose (``real = scale * (q - zero_point)`` over int8 codes):
#: SOFTMAX and LOGISTIC write scale 1/256, zero point -128; TANH scale 1/128, zero point 0.
FIXED_OUTPUT_RANGES = {"softmax": (0.0, 255.0 / 256.0), "sigmoid": (0.0, 255.0 / 256.0), "tanh": (-1.0, 127.0 / 128.0)}
_FIXED = set(FIXED_OUTPUT_RANGES)  # activations whose output parameters TFLite imposes
_OWN_RANGE = {"silu", "swish", "hard_silu", "hard_swish", "hard_sigmoid", "leaky_relu", "relu", "gelu"}


def activation_name(fn: Any) -> str | None:
    """Keras' registered name of an activation function (``None`` for a custom one)."""
    if fn is None:
        return "linear"
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return None
    try:
        return name if keras.activations.get(name) is fn else None
    except (ValueError, TypeError):
        return None


def relu_variant(layer: keras.Operation) -> str | None:
    """``"relu"`` / ``"relu6"`` when ``layer`` is a ReLU TFLite can fuse into its producer."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if type(layer) is keras.layers.Activation:
        name = activation_name(layer.activation)
        return name if name in ("relu", "relu6") else None
    if type(layer) is ops_nn.Relu:
        return "relu"
    if type(layer) is ops_nn.Relu6:
        return "relu6"
    return None


def fixed_output_range(layer: keras.Operation) -> tuple[float, float] | None:
    """The int8 output range TFLite imposes on this ``"fixed"`` layer (softmax, sigmoid, tanh), if known."""
    inner = getattr(layer, "layer", None)
    if inner is not None and not isinstance(layer, keras.Model):
        return fixed_output_range(inner)
    if isinstance(layer, keras.layers.Activation):
        return FIXED_OUTPUT_RANGES.get(activation_name(layer.activation) or "")
    return FIXED_OUTPUT_RANGES.get(type(layer).__name__.lower())


def has_nonnegative_output(layer: keras.Operation) -> bool:
    """The layer ends in a ReLU / ReLU6 (its own or its ``activation``): its output is never negative."""
    if relu_variant(layer) is not None:
        return True
    inner = getattr(layer, "layer", None)  # a wrapper: look at the wrapped layer's activation
    if inner is not None and not isinstance(layer, keras.Model):
        return has_nonnegative_output(inner)
    return hasattr(layer, "activation") and activation_name(layer.activation) in ("relu", "relu6")


def is_fusable_activation(layer: keras.Operation) -> bool:
    """TFLite folds this activation into a preceding CONV/DEPTHWISE/FC/ADD/SUB/MUL."""
    return relu_variant(layer) is not None


def layer_activation_fusable(layer: keras.Operation) -> bool:
    """The layer's own ``activation`` argument can stay inside it (linear, relu, relu6)."""
    return activation_name(getattr(layer, "activation", None)) in _FUSABLE


# ------------------------------------------------------------ default table
def _default_table(weight_bits: int, dense_per_channel: bool) -> dict[type, ConfigEntry]:
    L = keras.layers
    conv_kernel = WeightQuantizer(weight_bits, per_channel=True)
    depthwise_kernel = WeightQuantizer(weight_bits, per_channel=True, channel_dims=2)
    dense_kernel = WeightQuantizer(weight_bits, per_channel=dense_per_channel)
    tensor_kernel = WeightQuantizer(weight_bits, per_channel=False)

    def weighted(kernel: WeightQuantizer) -> ConfigFactory:
        def factory(layer: keras.Operation) -> QuantizeConfig:
            return QuantizeConfig(weights={"kernel": kernel}, output="range", fuses_activation=True)

        return factory

    def conv1d(layer: keras.layers.Conv1D) -> QuantizeConfig:
        # Per-channel only where kernels.py can run the 2-D view the converter needs.
        from kopt.quantization.kernels import uses_conv2d_view

        kernel = conv_kernel if uses_conv2d_view(layer) else tensor_kernel
        return QuantizeConfig(weights={"kernel": kernel}, output="range", fuses_activation=True)

    def conv2d_transpose(layer: keras.layers.Conv2DTranspose) -> QuantizeConfig:
        # TRANSPOSE_CONV: the converter rejects a per-channel FakeQuant on axis -2; it fuses no activation.
        return QuantizeConfig(weights={"kernel": tensor_kernel}, output="range", fuses_activation=False)

    def channels_last(layer: keras.Operation) -> bool:
        return getattr(layer, "data_format", "channels_last") == "channels_last"

    def weighted_channels_last(kernel: WeightQuantizer) -> ConfigFactory:
        def factory(layer: keras.Operation) -> QuantizeConfig | None:
            from kopt.quantization.decompose import is_depthwise_grouped_conv

            if is_depthwise_grouped_conv(layer):  # becomes a DepthwiseConv2D (decompose.grouped_convs_as_depthwise)
                return QuantizeConfig(weights={"kernel": depthwise_kernel}, output="range", fuses_activation=True)
            if not channels_last(layer) or getattr(layer, "groups", 1) != 1:
                return None
            return weighted(kernel)(layer)

        return factory

    def separable(layer: keras.layers.SeparableConv2D) -> QuantizeConfig | None:
        # Split by a transform into DepthwiseConv2D + 1x1 Conv2D before wrapping.
        if not channels_last(layer):
            return None
        return QuantizeConfig(
            weights={"depthwise_kernel": depthwise_kernel, "pointwise_kernel": conv_kernel},
            output="range",
            fuses_activation=True,
        )

    def affine(layer: keras.Operation) -> QuantizeConfig | None:
        # Standalone per-channel affine layers become ChannelAffine (a quantized 1x1 depthwise conv).
        rank = _input_rank(layer)
        if rank is None or rank not in (2, 3, 4):
            return None
        if isinstance(layer, L.BatchNormalization):
            if layer.axis not in (-1, rank - 1) or getattr(layer, "renorm", False):
                return None
        if isinstance(layer, L.Normalization):
            if getattr(layer, "invert", False) or not set(getattr(layer, "_keep_axis", ())) <= {rank - 1}:
                return None
        kernel = WeightQuantizer(weight_bits, per_channel=True)
        return QuantizeConfig(weights={"kernel": kernel}, output="range", fuses_activation=True)

    def relu(layer: keras.Operation) -> QuantizeConfig | None:
        if isinstance(layer, L.ReLU) and relu_variant(layer) is None:
            if float(layer.threshold) != 0.0 or layer.max_value is not None:
                return None  # lowers to several ops (MINIMUM, SUB...) with unquantized tensors between
        return QuantizeConfig(output="range")

    def activation(layer: keras.layers.Activation) -> QuantizeConfig | None:
        name = activation_name(layer.activation)
        if name in _FIXED:
            return QuantizeConfig(output="fixed")
        if name == "linear":
            return QuantizeConfig(output="passthrough")
        if name in _OWN_RANGE or name == "relu6":
            return QuantizeConfig(output="range")
        return None

    def same_data_format(rule: str) -> ConfigFactory:
        def factory(layer: keras.Operation) -> QuantizeConfig | None:
            return QuantizeConfig(output=rule) if channels_last(layer) else None

        return factory

    def resize(layer: keras.Operation) -> QuantizeConfig | None:
        interpolation = getattr(layer, "interpolation", "nearest")
        return QuantizeConfig(output="passthrough") if interpolation in ("nearest", "bilinear") else None

    def reduce_op(rule: str) -> ConfigFactory:
        return lambda op: QuantizeConfig(output=rule)

    def raw_activation(op: keras.Operation) -> QuantizeConfig:
        return QuantizeConfig(output="range")

    def layer_norm(layer: keras.layers.LayerNormalization) -> QuantizeConfig | None:
        from kopt.quantization.decompose import is_last_axis_layer_norm

        # written as MEAN/SUB/MUL/RSQRT ops + ScaleShift by decompose.decompose_layer_norms
        return QuantizeConfig(output="range") if is_last_axis_layer_norm(layer) else None

    def scale_shift(layer: keras.Operation) -> QuantizeConfig:
        return QuantizeConfig(weights={"kernel": WeightQuantizer(weight_bits, per_channel=True)}, output="range",
                              fuses_activation=True)

    def identity_cast(op: keras.Operation) -> QuantizeConfig | None:
        # keras-hub's DeepLabV3 pyramid pooling casts each branch to the dtype it already has: no op in TFLite.
        # A cast that changes the dtype (an int8 / uint8 image to float) has no input range to pass on.
        dtypes = {str(t.dtype) for node in getattr(op, "_inbound_nodes", []) for t in node.input_tensors}
        return passthrough if dtypes == {str(keras.backend.standardize_dtype(op.dtype))} else None

    passthrough = QuantizeConfig(output="passthrough")
    shared = QuantizeConfig(output="shared")
    own = QuantizeConfig(output="range")
    own_fusing = QuantizeConfig(output="range", fuses_activation=True)
    fixed = QuantizeConfig(output="fixed")

    table: dict[type, ConfigEntry] = {
        # weighted layers
        L.Conv2D: weighted_channels_last(conv_kernel),
        L.DepthwiseConv2D: weighted_channels_last(depthwise_kernel),
        L.Dense: weighted(dense_kernel),
        L.EinsumDense: weighted(tensor_kernel),  # a Dense when it contracts trailing axes (decompose.py)
        L.LayerNormalization: layer_norm,
        L.Conv1D: conv1d,
        L.Conv2DTranspose: conv2d_transpose,
        L.SeparableConv2D: separable,
        # per-channel affine layers
        L.BatchNormalization: affine,
        L.Rescaling: affine,
        L.Normalization: affine,
        # arithmetic with its own output range
        L.Add: own_fusing,
        L.Subtract: own_fusing,
        L.Multiply: own_fusing,
        L.GlobalAveragePooling1D: same_data_format("range"),
        L.GlobalAveragePooling2D: same_data_format("range"),
        # activations
        L.ReLU: relu,
        L.Activation: activation,
        L.LeakyReLU: own,
        L.Softmax: fixed,
        # same scale on inputs and output
        L.Concatenate: shared,
        L.Maximum: shared,
        L.Minimum: shared,
        # pass-through: TFLite keeps the input's parameters
        L.MaxPooling1D: same_data_format("passthrough"),
        L.MaxPooling2D: same_data_format("passthrough"),
        L.AveragePooling1D: same_data_format("passthrough"),
        L.AveragePooling2D: same_data_format("passthrough"),
        L.GlobalMaxPooling1D: same_data_format("passthrough"),
        L.GlobalMaxPooling2D: same_data_format("passthrough"),
        L.Reshape: passthrough,
        L.Flatten: passthrough,
        L.Permute: passthrough,
        L.ZeroPadding1D: passthrough,
        L.ZeroPadding2D: same_data_format("passthrough"),
        L.Cropping1D: passthrough,
        L.Cropping2D: same_data_format("passthrough"),
        L.UpSampling1D: passthrough,
        L.UpSampling2D: resize,
        L.Resizing: resize,
        L.Dropout: passthrough,
        L.SpatialDropout1D: passthrough,
        L.SpatialDropout2D: passthrough,
        L.GaussianNoise: passthrough,
        L.GaussianDropout: passthrough,
        L.AlphaDropout: passthrough,
        L.ActivityRegularization: passthrough,
        L.Identity: passthrough,
        # raw keras.ops nodes of Functional models
        ops_numpy.Add: own_fusing,
        ops_numpy.Subtract: own_fusing,
        ops_numpy.Multiply: own_fusing,
        ops_numpy.Mean: reduce_op("range"),
        ops_numpy.Max: reduce_op("passthrough"),
        ops_numpy.Maximum: shared,
        ops_numpy.Minimum: shared,
        ops_numpy.Concatenate: shared,
        ops_numpy.Reshape: passthrough,
        ops_numpy.ExpandDims: passthrough,
        ops_numpy.Squeeze: passthrough,
        ops_numpy.Transpose: passthrough,
        ops_numpy.GetItem: passthrough,
        ops_numpy.Tanh: fixed,
        ops_nn.Relu: own,
        ops_nn.Relu6: own,
        ops_nn.Sigmoid: fixed,
        ops_nn.Softmax: fixed,
        ops_nn.Silu: raw_activation,
        ops_nn.HardSilu: raw_activation,
        ops_nn.HardSigmoid: raw_activation,  # lowered as ADD + RELU6 + MUL (kopt.quantization.hard_activations)
        ops_nn.LeakyRelu: raw_activation,
        ops_image.Resize: resize,
        ops_numpy.Pad: lambda op: passthrough if getattr(op, "mode", "constant") == "constant" else None,
        # every piece keeps the input's range: TFLite's int8 SPLIT requires equal scales (CSPNet's cross stage)
        ops_numpy.Split: passthrough,
        ops_core.Unstack: passthrough,
        ops_numpy.Take: passthrough,  # rows of a table (Swin's relative position bias): GATHER moves values
        ops_numpy.Roll: passthrough,  # Swin's shifted windows
        ops_core.Cast: identity_cast,
        ops_numpy.Einsum: own,  # attention scores / context: BATCH_MATMUL of two activations
        ops_numpy.Matmul: own,
        ops_math.Rsqrt: own,
        ops_nn.Gelu: raw_activation,
    }
    from kopt.graph.parameter import Constant, Parameter
    from kopt.quantization.decompose import SaturatingRsqrt, ScaleShift

    table[Parameter] = QuantizeConfig(weights={"value": tensor_kernel}, output="range")
    table[Constant] = QuantizeConfig(output="none")
    table[ScaleShift] = scale_shift
    table[SaturatingRsqrt] = own  # a decomposed LayerNormalization's RSQRT (its output range is saturating)
    return table


def _input_rank(layer: keras.Operation) -> int | None:
    """Rank of the (first) input the layer was built for, if known."""
    build_config = layer.get_build_config() if hasattr(layer, "get_build_config") else None
    shape = (build_config or {}).get("input_shape")
    if shape is None or not isinstance(shape, (list, tuple)) or (shape and isinstance(shape[0], (list, tuple))):
        return None
    return len(shape)


def default_8bit_registry(weight_bits: int = 8, dense_per_channel: bool = False) -> QuantizeRegistry:
    """The built-in table of the ``"default_8bit"`` scheme (TFLite int8 spec)."""
    return QuantizeRegistry(_default_table(weight_bits, dense_per_channel))
