"""Fake-quantizers that mirror the TFLite int8 scheme (how a tensor is quantized).

Convention (TFLite's): ``real = scale * (q - zero_point)``. Every quantizer ends in
``keras.quantizers.fake_quant_with_min_max_vars``, which on TensorFlow is the
``FakeQuantWithMinMaxVars[PerChannel]`` op the TFLite converter turns into int8 params;
on JAX and PyTorch it is Keras' generic implementation. In training, the gradient is
kopt's straight-through estimator on every backend (see :func:`fake_quant`).

Two details make the three backends and the converter agree bit for bit:

* the range is *nudged* here, before the Keras op, so that 0.0 is exactly on the grid.
  The zero point is rounded half away from zero as TensorFlow and TFLite do
  (``keras.ops.round`` would round half to even, and Keras' generic path uses it);
  the op's own nudging then finds an integral zero point and changes nothing;
* the range gets no gradient (``stop_gradient``): weights are trained through the
  straight-through estimator only, activation ranges by moving statistics.

Values exactly halfway between two grid points round up (TF FakeQuant semantics); the
TFLite QUANTIZE kernel rounds them away from zero. Only exact negative ties differ.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import keras
import numpy as np
from keras import ops

from kopt.core import host_ops
from kopt.core.backend import FUSE_MIN_ELEMENTS, branches_on_host, fused, scalars_on_host
from kopt.core.distribute import cross_replica_extremes
from kopt.core.errors import InvalidArgumentError

#: Below this width an activation range is widened (an all-zero tensor would give scale 0).
MIN_RANGE_WIDTH = 1e-3
#: Weight channels whose largest magnitude is below this are treated as all-zero.
MIN_WEIGHT_MAGNITUDE = 1e-6

ACTIVATION_MODES = ("moving_average", "last_value", "all_values")


def quant_bounds(num_bits: int, narrow_range: bool) -> tuple[int, int]:
    """The unsigned grid ``[qmin, qmax]`` FakeQuant uses (``[1, 255]`` for 8-bit narrow range)."""
    return (1 if narrow_range else 0), (1 << num_bits) - 1


def nudged_range(
    min_value: Any, max_value: Any, num_bits: int = 8, narrow_range: bool = False, *, xp: Any = ops
) -> tuple[Any, Any]:
    """``(min, max)`` moved so that 0.0 is a grid point, as TF FakeQuant and the converter do.

    The zero point is ``clip(qmin - min / scale, qmin, qmax)`` rounded half away from zero.
    ``xp``: ``keras.ops``, or :mod:`kopt.core.host_ops` for host values (the same results).
    """
    qmin, qmax = quant_bounds(num_bits, narrow_range)
    min_value = xp.cast(min_value, "float32")
    max_value = xp.cast(max_value, "float32")
    scale = (max_value - min_value) / float(qmax - qmin)
    zero_point = xp.clip(qmin - min_value / scale, float(qmin), float(qmax))
    zero_point = xp.floor(zero_point + 0.5)  # zero_point >= 0: half up == half away from zero
    return (qmin - zero_point) * scale, (qmax - zero_point) * scale


def symmetric_nudged_range(magnitude: Any, num_bits: int = 8, *, xp: Any = ops) -> tuple[Any, Any]:
    """``nudged_range(-magnitude, magnitude, num_bits, narrow_range=True)``, bit for bit, in
    four ops instead of fourteen (weights are quantized at every training step, so the
    scalar ops add up): the narrow grid puts the zero point exactly at ``2**(num_bits-1)``."""
    qmin, qmax = quant_bounds(num_bits, narrow_range=True)
    magnitude = xp.cast(magnitude, "float32")
    scale = (magnitude + magnitude) / float(qmax - qmin)  # == magnitude - (-magnitude)
    high = float(qmax - (1 << (num_bits - 1))) * scale
    return -high, high


def nonnegative_nudged_range(max_value: Any, num_bits: int = 8, *, xp: Any = ops) -> tuple[Any, Any]:
    """``nudged_range(0.0, max_value, num_bits)``, bit for bit: with a minimum of exactly 0
    the zero point is 0 and only the maximum is rounded through the scale."""
    qmin, qmax = quant_bounds(num_bits, narrow_range=False)
    max_value = xp.cast(max_value, "float32")
    high = float(qmax) * (max_value / float(qmax - qmin))
    return xp.zeros_like(high), high


def fake_quant(
    x: Any,
    min_value: Any,
    max_value: Any,
    *,
    num_bits: int = 8,
    narrow_range: bool = False,
    per_channel: bool = False,
    training: bool = False,
    nonnegative: bool = False,
    nudged: bool = False,
    bounds: tuple[Any, Any] | None = None,
    unclipped: Any = None,
) -> Any:
    """Fake-quantize ``x`` to the grid of ``[min_value, max_value]`` (per last-axis channel if asked).

    The range is nudged first (``nudged=True``: it already is, by :func:`nudged_range` or one
    of its exact shortcuts, which quantizers that know their range's shape use) and carries
    no gradient; ``x`` gets the straight-through gradient (1 inside the nudged range, 0
    outside). In training the gradient is computed here rather than by TF's FakeQuant
    gradient op, which also reduces gradients for the range that nobody uses (most of the
    fake-quant's backward cost); in inference the plain op is emitted, which is what the
    TFLite converter reads. ``nonnegative`` promises ``x >= 0`` (a ReLU output;
    ``min_value <= 0`` always): the mask then only checks the maximum.

    ``bounds``: ``(lower, upper)`` with ``lower <= x <= upper`` (scalars, or per channel like
    the range) that the caller already has (an activation quantizer's batch extremes). When
    they lie inside the nudged range nothing was clipped, so the gradient passes through
    unmasked: the same values, without the mask's three passes over ``x`` (half of an
    activation fake-quant's cost). ``unclipped``: that test's boolean result, when the caller
    computed it already (with ``bounds``); where branches are taken on the host (eager PyTorch)
    it is read once in the forward pass, and the backward pass dispatches no op for it.
    """
    low, high = (min_value, max_value) if nudged else nudged_range(min_value, max_value, num_bits, narrow_range)
    low, high = ops.stop_gradient(low), ops.stop_gradient(high)

    def quantize(values: Any, lo: Any, hi: Any) -> Any:
        if keras.backend.backend() == "tensorflow":  # the FakeQuant op the TFLite converter reads
            return keras.quantizers.fake_quant_with_min_max_vars(
                values, lo, hi, num_bits=num_bits, narrow_range=narrow_range, axis=-1 if per_channel else None
            )
        return grid_fake_quant(values, lo, hi, num_bits=num_bits, narrow_range=narrow_range, nonnegative=nonnegative)

    if not training:
        return quantize(x, low, high)

    def inside(values: Any, lo: Any, hi: Any) -> Any:
        return _inside(values, lo, hi, nonnegative)

    if branches_on_host():  # eager PyTorch: the gradient's branch is decided now, on the host
        passes_through = bounds is not None and unclipped is not None and bool(unclipped)
        return _straight_through_on_host(x, low, high, num_bits=num_bits, narrow_range=narrow_range,
                                         nonnegative=nonnegative, unclipped=passes_through)

    @ops.custom_gradient
    def straight_through(values: Any, lo: Any, hi: Any, lower: Any, upper: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:
                (upstream,) = args

            def masked() -> Any:
                return masked_gradient(values, lo, hi, upstream, nonnegative=nonnegative)

            if bounds is None:
                gradient = masked()
            else:
                unclipped = ops.all(ops.logical_and(inside(lower, lo, hi), inside(upper, lo, hi)))
                gradient = ops.cond(unclipped, lambda: upstream, masked)
            return gradient, ops.zeros_like(lo), ops.zeros_like(hi), ops.zeros_like(lower), ops.zeros_like(upper)

        return quantize(values, lo, hi), grad

    # Without bounds the range stands in for them: the custom gradient takes a fixed set of tensors.
    if bounds is None:
        lower, upper = low, high
    else:
        lower, upper = (ops.stop_gradient(ops.cast(b, "float32")) for b in bounds)
    return straight_through(x, low, high, lower, upper)


def _straight_through_on_host(
    x: Any, low: Any, high: Any, *, num_bits: int, narrow_range: bool, nonnegative: bool, unclipped: bool
) -> Any:
    """``fake_quant(x, low, high, nudged=True, training=True)`` where branches are read on the host (eager
    PyTorch), with the gradient's branch already decided (``unclipped``: pass ``upstream`` through, else
    mask it). The range may be backend tensors or NumPy values computed on the host (the quantizers'
    ``*_on_host`` methods); the grid's arithmetic then runs there too. Only ``x`` enters the custom
    gradient: the range gets none."""

    @ops.custom_gradient
    def straight_through(values: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:
                (upstream,) = args
            if unclipped:
                return upstream
            lo, hi = ops.convert_to_tensor(low), ops.convert_to_tensor(high)
            return masked_gradient(values, lo, hi, upstream, nonnegative=nonnegative)

        snapped = grid_fake_quant(values, low, high, num_bits=num_bits, narrow_range=narrow_range, nonnegative=nonnegative)
        return snapped, grad

    return straight_through(x)


def _inside(values: Any, lo: Any, hi: Any, nonnegative: bool, xp: Any = ops) -> Any:
    if nonnegative:
        return xp.less_equal(values, hi)
    return xp.logical_and(xp.greater_equal(values, lo), xp.less_equal(values, hi))


@fused
def masked_gradient(values: Any, lo: Any, hi: Any, upstream: Any, *, nonnegative: bool = False) -> Any:
    """The straight-through gradient: ``upstream`` where ``values`` lie in ``[lo, hi]``, else 0."""
    return ops.where(_inside(values, lo, hi, nonnegative), upstream, ops.zeros((), upstream.dtype))


def grid_fake_quant(
    x: Any, min_value: Any, max_value: Any, *, num_bits: int = 8, narrow_range: bool = False, nonnegative: bool = False
) -> Any:
    """TF FakeQuant's forward arithmetic in ``keras.ops``, for the JAX and PyTorch backends.

    ``keras.quantizers.fake_quant_with_min_max_vars`` off TensorFlow also builds the gradient
    masks of the range in its forward pass (three more passes over ``x``, unused: kopt supplies
    its own straight-through gradient) and rounds through the zero point; this is the TF
    kernel's own sequence: nudge (a no-op on a nudged range, as the op re-nudges too), clamp,
    shift, ``floor(v / scale + 0.5)``, back to floats as ``(code - zero_point) * scale`` (one rounding,
    as Keras' generic op does). Ranges broadcast against ``x`` (per last-axis
    channel when they are vectors). ``nonnegative`` (``x >= 0`` and ``min_value`` exactly 0, a
    ReLU output's range): the shift by the minimum is skipped, as it adds and subtracts 0.0.
    """
    values = ops.convert_to_tensor(x)
    if _on_host(min_value):  # a range held on the host (eager PyTorch, quantizers' *_on_host methods)
        if math.prod(values.shape) < FUSE_MIN_ELEMENTS:  # its grid's arithmetic there too; one op per pass
            parameters = _grid_parameters(num_bits, narrow_range, nonnegative)(min_value, max_value, host_ops)
            scalar = np.ndim(min_value) == 0  # a tensor's range: plain numbers; per channel: vectors
            parameters = [float(p) if scalar else ops.convert_to_tensor(p) for p in parameters]
            return (_snap_nonnegative if nonnegative else _snap)(values, *parameters)
        min_value, max_value = ops.convert_to_tensor(min_value), ops.convert_to_tensor(max_value)
    return _snapper(num_bits, narrow_range, nonnegative)(values, min_value, max_value)


def _on_host(value: Any) -> bool:
    """A range held by NumPy on the host (see :mod:`kopt.core.host_ops`), not a backend tensor."""
    return isinstance(value, (np.ndarray, np.generic))


@functools.lru_cache(maxsize=None)
def _snapper(num_bits: int, narrow_range: bool, nonnegative: bool) -> Callable[..., Any]:
    """:func:`grid_fake_quant`'s arithmetic for one grid: ``(values, low, high) -> snapped values``.

    On PyTorch, for a large tensor, one fused kernel: its passes over the tensor and the scalar range
    arithmetic before them; a small one runs eagerly. One function per grid, so that its bounds are
    constants of the compiled kernel."""
    parameters = _grid_parameters(num_bits, narrow_range, nonnegative)

    @fused
    def snap(values: Any, min_value: Any, max_value: Any) -> Any:
        if nonnegative:
            return _snap_nonnegative(values, *parameters(min_value, max_value))
        return _snap(values, *parameters(min_value, max_value))

    return snap


@functools.lru_cache(maxsize=None)
def _grid_parameters(num_bits: int, narrow_range: bool, nonnegative: bool) -> Callable[..., Any]:
    """``(low, high) ->`` the arguments of :func:`_snap` (``_snap_nonnegative``) after ``values``."""
    qmin, qmax = quant_bounds(num_bits, narrow_range)
    steps = float(qmax - qmin)

    def grid(min_value: Any, max_value: Any, xp: Any = ops) -> tuple[Any, ...]:
        low, high = xp.cast(min_value, "float32"), xp.cast(max_value, "float32")
        # xp.divide, not `steps / high`: PyTorch computes a number over a tensor as a reciprocal times the
        # number, one rounding more than TensorFlow, JAX and NumPy.
        if nonnegative:  # minimum 0: the zero point is qmin, the nudged maximum steps * scale
            scale, inverse = high / steps, xp.divide(steps, high)
            return xp.zeros_like(scale), scale * steps, inverse, scale
        scale, inverse = (high - low) / steps, xp.divide(steps, high - low)
        zero_point = xp.floor(xp.clip(float(qmin) - low / scale, float(qmin), float(qmax)) + 0.5)
        offset = float(qmin) - zero_point  # an integer: (code + offset) * scale rounds once
        low, high = offset * scale, (float(qmax) - zero_point) * scale
        return low, high, inverse, scale, offset

    return grid


# The passes over the tensor itself, after the scalar range arithmetic of _snapper.
def _snap_nonnegative(values: Any, zero: Any, high: Any, inverse: Any, scale: Any) -> Any:
    return ops.floor(ops.clip(values, zero, high) * inverse + 0.5) * scale


def _snap(values: Any, low: Any, high: Any, inverse: Any, scale: Any, offset: Any) -> Any:
    return (ops.floor((ops.clip(values, low, high) - low) * inverse + 0.5) + offset) * scale


class Quantizer:
    """Base class: how one tensor is fake-quantized. Holds settings, never state.

    State (activation ranges, later cluster centroids) lives in variables that
    :meth:`build` creates on the *host* layer, so it is saved with the model and
    updated inside ``call`` on every backend.
    """

    def build(
        self, host: keras.layers.Layer, name: str, shape: tuple, weight: keras.Variable | None = None
    ) -> dict[str, keras.Variable]:
        """Create the variables this quantizer needs on ``host``; the default needs none.

        ``weight`` is the variable a weight quantizer will see (e.g. to record which of its
        entries are zero, for a sparsity-preserving quantizer); None for activations.
        """
        return {}

    def __call__(self, x: Any, state: dict[str, keras.Variable], training: bool) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Quantizer":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="kopt")
class WeightQuantizer(Quantizer):
    """Symmetric, narrow-range weight fake-quant: int8 values in [-127, 127], zero point 0.

    The range is the current largest magnitude (per output channel or per tensor), so
    no state is kept and the converter recomputes the same scale from the frozen graph.

    Args:
        num_bits: 8 for TFLite int8 (and the Edge TPU). Experimental: 4 (``[-7, 7]``);
            TF 2.21's converter then stores INT4 weights, which TFLite's CPU kernels run but
            the Edge TPU and most delegates do not.
        per_channel: one scale per output channel (TFLite CONV_2D / DEPTHWISE_CONV_2D).
        channel_dims: how many trailing axes of the tensor form the output channel
            (2 for a ``DepthwiseConv2D`` kernel ``(kh, kw, in, multiplier)``, whose TFLite
            channel is ``in * multiplier``); the tensor given must have them last.
    """

    def __init__(self, num_bits: int = 8, per_channel: bool = True, channel_dims: int = 1):
        if not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
            raise ValueError(f"WeightQuantizer num_bits must be an int in [2, 8], got {num_bits!r}.")
        if channel_dims not in (1, 2):
            raise ValueError(f"WeightQuantizer channel_dims must be 1 or 2, got {channel_dims!r}.")
        self.num_bits = num_bits
        self.per_channel = bool(per_channel)
        self.channel_dims = channel_dims

    def __call__(self, x: Any, state: dict[str, keras.Variable] | None = None, training: bool = False) -> Any:
        # A value, not the variable itself (TF's custom gradient refuses functions that read variables).
        x = ops.convert_to_tensor(x)
        if training and keras.backend.backend() == "tensorflow":
            x = ops.copy(x)
        if not self.per_channel:
            return self._quantize(x, None, training)
        if self.channel_dims == 1:
            return self._quantize(x, tuple(range(x.ndim - 1)), training)
        shape = tuple(x.shape)
        channels = shape[-2] * shape[-1]
        flat = ops.reshape(x, shape[:-2] + (channels,))
        return ops.reshape(self._quantize(flat, tuple(range(flat.ndim - 1)), training), shape)

    def _quantize(self, x: Any, reduce_axes: tuple | None, training: bool) -> Any:
        magnitude = ops.max(ops.abs(x), axis=reduce_axes)
        if training and scalars_on_host():
            return self._quantize_on_host(x, ops.convert_to_numpy(magnitude))
        magnitude = ops.where(magnitude < MIN_WEIGHT_MAGNITUDE, ops.ones_like(magnitude), magnitude)
        low, high = symmetric_nudged_range(magnitude, self.num_bits)
        return fake_quant(
            x,
            low,
            high,
            nudged=True,
            num_bits=self.num_bits,
            narrow_range=True,
            per_channel=reduce_axes is not None,
            training=training,
        )

    def _quantize_on_host(self, x: Any, magnitude: Any) -> Any:
        """:meth:`_quantize` in training where branches are read on the host (eager PyTorch): each
        channel's range is computed there (:mod:`kopt.core.host_ops`, the same values), and with it
        whether any weight lies outside its nudged range (the mask is then skipped: all ones)."""
        largest = magnitude
        magnitude = host_ops.where(magnitude < MIN_WEIGHT_MAGNITUDE, host_ops.ones_like(magnitude), magnitude)
        low, high = symmetric_nudged_range(magnitude, self.num_bits, xp=host_ops)
        return _straight_through_on_host(x, low, high, num_bits=self.num_bits, narrow_range=True, nonnegative=False,
                                         unclipped=bool(host_ops.all(largest <= high)))

    def get_config(self) -> dict[str, Any]:
        return {"num_bits": self.num_bits, "per_channel": self.per_channel, "channel_dims": self.channel_dims}


@keras.saving.register_keras_serializable(package="kopt")
class ActivationQuantizer(Quantizer):
    """Asymmetric per-tensor activation fake-quant whose range is learnt from the data.

    During training the batch range ``[min(x), max(x)]`` (widened to contain 0) updates
    the stored range; in inference the stored range is used as is. Modes:

    * ``"moving_average"`` (default): exponential moving average with ``decay``; the
      first training batch sets the range directly (no slow drift from an arbitrary init);
    * ``"last_value"``: the range of the latest batch;
    * ``"all_values"``: the extremes of every batch seen.

    ``nonnegative=True`` declares the input never negative (a ReLU / ReLU6 output, the
    quantizer placement sets it): the range minimum is then 0 without a reduction, and the
    gradient mask only checks the maximum — the same results, a cheaper training step.

    ``num_calls > 1`` serves a range *shared* by several tensors (the inputs of a
    Concatenate, which TFLite requires to have one scale): the host layer is called once
    per tensor in each forward pass, the batch ranges of the calls are united, and the
    stored range is updated once, on the last call.

    ``saturating=True`` serves the output of an op whose int8 TFLite kernel saturates where its float
    result is infinite (:class:`~kopt.quantization.decompose.SaturatingRsqrt`: TFLite's int8 RSQRT maps an
    input code of 0 to the output's maximum code). A ``+inf`` entry then stands for the range maximum: in
    training it is quantized to it (no gradient) and left out of the range update, which learns from the
    finite values only (an infinite maximum would turn every later step into NaN); in inference the
    fake-quant op clamps it to the maximum by itself, so no op is added to what the converter reads.

    ``fixed_range=(min, max)`` serves the output of an op whose int8 TFLite kernel imposes its output
    parameters (SOFTMAX and LOGISTIC: scale 1/256, zero point -128, i.e. ``[0, 255/256]``; TANH: scale
    1/128, zero point 0, i.e. ``[-1, 127/128]``). Nothing is learnt. In inference the tensor is
    fake-quantized to that grid: without it the Keras model carried the float softmax into the next op
    while TFLite rounds it to 1/256 (a ViT's attention weights were up to half a step off, and the
    difference grew through every later block); the converter still writes the imposed parameters, as
    the range is exactly theirs, so no requantize op appears. Training leaves the tensor float, as
    TFMOT does for softmax: the grid has nothing to learn, and training through it (straight-through
    gradient) cost accuracy on issue #20's tiny ViT on digits (int8 88.4 % against 91.2 % with float
    training; float model 90.4 %; one seed). The int8 file is then the one kopt wrote before.

    ``symmetric=True`` quantizes to ``[-m, m]`` with ``m`` the larger magnitude of the range, on
    the narrow grid (zero point 0): TFLite's 16x8 scheme, whose int16 activations are symmetric.
    ``num_bits=16`` requires it (the ``"int16x8"`` scheme); the converter then writes int16
    activations and int8 weights.

    Args:
        num_bits: 8 for TFLite int8, 16 (with ``symmetric=True``) for TFLite 16x8. Other widths
            only simulate in Keras: the converter rejects 4-bit activations.
        mode: one of :data:`ACTIVATION_MODES`.
        decay: moving-average decay (``"moving_average"`` only).
        init_range: range used before any training step (so an untrained model still lowers).
    """

    def __init__(
        self,
        num_bits: int = 8,
        mode: str = "moving_average",
        decay: float = 0.99,
        init_range: tuple[float, float] = (-6.0, 6.0),
        num_calls: int = 1,
        nonnegative: bool = False,
        symmetric: bool = False,
        saturating: bool = False,
        fixed_range: tuple[float, float] | None = None,
    ):
        if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not (2 <= num_bits <= 8 or num_bits == 16):
            raise InvalidArgumentError(f"ActivationQuantizer num_bits must be an int in [2, 8] or 16, got {num_bits!r}.")
        if num_bits == 16 and not symmetric:
            raise InvalidArgumentError(
                "ActivationQuantizer num_bits=16 is TFLite's 16x8 scheme, whose int16 activations are symmetric: "
                "pass symmetric=True (or quantize with the 'int16x8' scheme)."
            )
        if mode not in ACTIVATION_MODES:
            raise ValueError(f"ActivationQuantizer mode must be one of {ACTIVATION_MODES}, got {mode!r}.")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ActivationQuantizer decay must be in [0, 1), got {decay!r}.")
        low, high = (float(v) for v in init_range)
        if not low <= 0.0 <= high or high - low <= 0:
            raise ValueError(f"ActivationQuantizer init_range must satisfy min <= 0 <= max, min < max; got {init_range!r}.")
        if not isinstance(num_calls, int) or num_calls < 1:
            raise InvalidArgumentError(f"ActivationQuantizer num_calls must be a positive int, got {num_calls!r}.")
        self.num_bits = num_bits
        self.mode = mode
        self.decay = float(decay)
        self.init_range = (low, high)
        self.num_calls = num_calls
        self.nonnegative = bool(nonnegative)
        self.symmetric = bool(symmetric)
        self.saturating = bool(saturating)
        if fixed_range is not None:
            fixed_low, fixed_high = (float(v) for v in fixed_range)
            if not fixed_low <= 0.0 <= fixed_high or fixed_high - fixed_low <= 0:
                raise ValueError(f"ActivationQuantizer fixed_range must satisfy min <= 0 <= max, min < max; got {fixed_range!r}.")
            fixed_range = (fixed_low, fixed_high)
        self.fixed_range = fixed_range

    def with_calls(
        self,
        num_calls: int,
        nonnegative: bool | None = None,
        saturating: bool | None = None,
        fixed_range: tuple[float, float] | None = None,
    ) -> "ActivationQuantizer":
        """The same quantizer serving ``num_calls`` tensors that share one range (``fixed_range``:
        a range imposed by TFLite instead of a learnt one)."""
        changes: dict[str, Any] = {"num_calls": num_calls}
        if nonnegative is not None:
            changes["nonnegative"] = nonnegative
        if saturating is not None:
            changes["saturating"] = saturating
        if fixed_range is not None:
            changes["fixed_range"] = fixed_range
        return ActivationQuantizer(**{**self.get_config(), **changes})

    # Layout of the single state variable: one variable (not six) keeps model building and
    # every training step cheap.
    MIN, MAX, SEEN, BATCH_MIN, BATCH_MAX, CALL = range(6)

    def build(
        self, host: keras.layers.Layer, name: str, shape: tuple = (), weight: keras.Variable | None = None
    ) -> dict[str, keras.Variable]:
        """One float32 variable ``range``: ``[min, max, initialized]``, plus
        ``[batch_min, batch_max, call_index]`` when the range is shared by several calls."""
        initial = [self.init_range[0], self.init_range[1], 0.0]
        if self.fixed_range is not None:  # stored for inspection (``ActivationQuantize.range``), never updated
            initial = [self.fixed_range[0], self.fixed_range[1], 1.0]
        if self.num_calls > 1:
            initial += [0.0, 0.0, 0.0]
        variable = host.add_weight(
            name=f"{name}_range" if name else "range",
            shape=(len(initial),),
            dtype="float32",
            initializer=keras.initializers.Constant(initial),
            trainable=False,
            autocast=False,
            # Every replica computes the same update (batch extremes are reduced across
            # replicas in _update), so replica 0's value is everyone's.
            aggregation="only_first_replica",
        )
        return {"range": variable}

    def stored_range(self, state: dict[str, keras.Variable]) -> tuple[Any, Any]:
        values = ops.convert_to_tensor(state["range"])
        return values[self.MIN], values[self.MAX]

    def __call__(self, x: Any, state: dict[str, keras.Variable], training: bool = False) -> Any:
        if self.fixed_range is not None:  # TFLite's imposed output grid (softmax: scale 1/256, zero point -128)
            if training:
                return x  # see the class docstring: the grid is applied in inference only
            low, high = nudged_range(self.fixed_range[0], self.fixed_range[1], self.num_bits, narrow_range=False)
            return fake_quant(x, low, high, num_bits=self.num_bits, nudged=True)
        if not training:
            low, high = self.stored_range(state)
            if self.symmetric:
                low, high = symmetric_nudged_range(ops.maximum(-low, high), self.num_bits)
                return fake_quant(x, low, high, num_bits=self.num_bits, narrow_range=True, nudged=True)
            return fake_quant(x, low, high, num_bits=self.num_bits, narrow_range=False)
        saturated = None
        if self.saturating:
            x = ops.convert_to_tensor(x)
            saturated = ops.equal(x, float("inf"))
            # 0.0 is inside every range (_containing_zero): the range is learnt from the finite values only.
            observed = ops.where(saturated, ops.zeros_like(x), x)
        else:
            observed = x
        if self.num_calls == 1 and scalars_on_host():
            low, high, unclipped = self._step_on_host(observed, state)
            if saturated is not None:
                x = _saturate(x, saturated, ops.convert_to_tensor(high))
            return _straight_through_on_host(x, low, high, num_bits=self.num_bits, narrow_range=self.symmetric,
                                             nonnegative=self.nonnegative, unclipped=unclipped)
        if self.num_calls == 1:
            low, high, bounds, unclipped = self._step(observed, state)
        else:
            low, high, bounds = self._update(observed, state)
            (low, high), unclipped = self._nudged(low, high), None
        x = _saturate(x, saturated, high)
        return fake_quant(x, low, high, num_bits=self.num_bits, narrow_range=self.symmetric,
                          nonnegative=self.nonnegative, nudged=True, training=True, bounds=bounds, unclipped=unclipped)

    def _nudged(self, low: Any, high: Any, xp: Any = ops) -> tuple[Any, Any]:
        """The range a trained ``[low, high]`` quantizes with (0.0 on the grid; symmetric: ``[-m, m]``)."""
        if self.symmetric:
            return symmetric_nudged_range(xp.maximum(-low, high), self.num_bits, xp=xp)
        if self.nonnegative:  # the updated minimum is exactly 0.0 (see _update)
            return nonnegative_nudged_range(high, self.num_bits, xp=xp)
        return nudged_range(low, high, self.num_bits, narrow_range=False, xp=xp)

    def _step(self, x: Any, state: dict[str, keras.Variable]) -> tuple[Any, Any, tuple[Any, Any], Any]:
        """:meth:`_update` and :meth:`_nudged` for a range of one tensor: the batch extremes are taken
        here, the twenty-odd scalar ops after them in :meth:`_range_step`, and its new range vector is
        assigned. Returns the nudged range, the bounds of ``x`` and whether they
        lie inside the nudged range (nothing clipped)."""
        batch_min, batch_max = self._batch_extremes(x)
        stored, low, high, lower, upper, unclipped = self._range_step(
            ops.convert_to_tensor(state["range"]), batch_min, batch_max
        )
        state["range"].assign(stored)
        return low, high, (lower, upper), unclipped

    def _step_on_host(self, x: Any, state: dict[str, keras.Variable]) -> tuple[Any, Any, bool]:
        """:meth:`_step` where branches are read on the host (eager PyTorch): the scalar ops run there,
        on NumPy float32 (:mod:`kopt.core.host_ops`, the same values), after one read of the batch
        extremes; dispatched one by one, some twenty of them cost more than the passes over a small
        activation. Returns the nudged range as NumPy scalars and whether nothing was clipped."""
        batch_min, batch_max = (np.float32(float(value)) for value in self._batch_extremes(x))
        stored, low, high, _, _, unclipped = self._range_step(state["range"].numpy(), batch_min, batch_max, host_ops)
        state["range"].assign(stored)
        return low, high, bool(unclipped)

    def _range_step(self, stored: Any, batch_min: Any, batch_max: Any, xp: Any = ops) -> tuple[Any, ...]:
        """The scalar arithmetic of one training step of a one-tensor range: ``(new stored vector,
        nudged low, nudged high, lower bound, upper bound, unclipped)``, the ops of :meth:`_update`
        and :meth:`_nudged` in their order (the same values bit for bit). ``xp``: ``keras.ops``, or
        :mod:`kopt.core.host_ops` on host values."""
        seen = xp.greater(stored[self.SEEN], 0.5)
        if self.nonnegative:  # only the maximum moves; the minimum is exactly 0.0 from the first step on
            lower = new_min = xp.zeros_like(batch_max)
            width = xp.convert_to_tensor(MIN_RANGE_WIDTH, "float32")
            upper = xp.maximum(batch_max, width)  # == _containing_zero(0, batch_max)[1]
            new_max = self._fold(stored[self.MAX], upper, xp.maximum)
            new_max = xp.maximum(xp.where(seen, new_max, upper), width)
            new_stored = xp.stack([new_min, new_max, xp.ones_like(new_max)])
        else:
            lower, upper = _containing_zero(batch_min, batch_max, xp)
            new_min = xp.where(seen, self._fold(stored[self.MIN], lower, xp.minimum), lower)
            new_max = xp.where(seen, self._fold(stored[self.MAX], upper, xp.maximum), upper)
            new_min, new_max = _containing_zero(new_min, new_max, xp)
            new_stored = xp.stack([new_min, new_max, xp.ones_like(new_max)])
        low, high = self._nudged(new_min, new_max, xp)
        unclipped = xp.all(
            xp.logical_and(
                _inside(lower, low, high, self.nonnegative, xp), _inside(upper, low, high, self.nonnegative, xp)
            )
        )
        return new_stored, low, high, lower, upper, unclipped

    def _batch_extremes(self, x: Any) -> tuple[Any, Any]:
        """``x``'s minimum (0 for a nonnegative tensor) and maximum, across replicas under tf.distribute."""
        values = ops.stop_gradient(ops.cast(x, "float32"))
        batch_max = ops.max(values)
        batch_min = ops.zeros_like(batch_max) if self.nonnegative else ops.min(values)
        return cross_replica_extremes(batch_min, batch_max)

    def _update(self, x: Any, state: dict[str, keras.Variable]) -> tuple[Any, Any, tuple[Any, Any]]:
        """Fold this batch into the stored range; return the range to quantize with now and
        bounds of ``x`` (extremes widened to contain 0, and across replicas or shared calls),
        which let the gradient skip the clipping mask when nothing was clipped.

        A nonnegative quantizer's minimum is 0.0 from its first training step on: the
        batch minimum is taken as 0 and the stored one (the ``init_range`` until then)
        is replaced, not averaged.
        """
        stored = ops.convert_to_tensor(state["range"])
        batch_min, batch_max = self._batch_extremes(x)
        commit = True
        if self.num_calls > 1:
            index = stored[self.CALL]
            first = ops.less(index, 0.5)
            batch_min = ops.where(first, batch_min, ops.minimum(stored[self.BATCH_MIN], batch_min))
            batch_max = ops.where(first, batch_max, ops.maximum(stored[self.BATCH_MAX], batch_max))
            commit = ops.greater(index, self.num_calls - 1.5)
            next_index = ops.where(commit, 0.0, index + 1.0)
        partial_min, partial_max = batch_min, batch_max
        batch_min, batch_max = _containing_zero(batch_min, batch_max)

        old_min, old_max, initialized = stored[self.MIN], stored[self.MAX], stored[self.SEEN]
        seen = ops.greater(initialized, 0.5)
        new_min = ops.where(seen, self._fold(old_min, batch_min, ops.minimum), batch_min)
        new_max = ops.where(seen, self._fold(old_max, batch_max, ops.maximum), batch_max)
        new_min, new_max = _containing_zero(new_min, new_max)
        bounds = (batch_min, batch_max)
        if commit is True:
            state["range"].assign(ops.stack([new_min, new_max, ops.convert_to_tensor(1.0)]))
            return new_min, new_max, bounds
        new_min = ops.where(commit, new_min, old_min)
        new_max = ops.where(commit, new_max, old_max)
        new_initialized = ops.where(commit, 1.0, initialized)
        state["range"].assign(ops.stack([new_min, new_max, new_initialized, partial_min, partial_max, next_index]))
        # Until the first commit, the calls of the first step use the partial union.
        settled = ops.greater(new_initialized, 0.5)
        return ops.where(settled, new_min, batch_min), ops.where(settled, new_max, batch_max), bounds

    def _fold(self, stored: Any, batch: Any, extreme: Any) -> Any:
        """One range end after this batch, by ``mode`` (``extreme``: ops.minimum or ops.maximum)."""
        if self.mode == "moving_average":
            return stored * self.decay + batch * (1.0 - self.decay)
        if self.mode == "all_values":
            return extreme(stored, batch)
        return batch

    def get_config(self) -> dict[str, Any]:
        return {
            "num_bits": self.num_bits,
            "mode": self.mode,
            "decay": self.decay,
            "init_range": list(self.init_range),
            "num_calls": self.num_calls,
            "nonnegative": self.nonnegative,
            "symmetric": self.symmetric,
            "saturating": self.saturating,
            "fixed_range": list(self.fixed_range) if self.fixed_range is not None else None,
        }


def _saturate(x: Any, saturated: Any, high: Any) -> Any:
    """``x`` with its saturated (``+inf``) entries replaced by the range maximum ``high``, as a constant:
    they get no gradient (the int8 kernel's output there does not depend on its input). Inside the range,
    the straight-through mask keeps them, so ``fake_quant``'s ``bounds`` shortcut gives the same gradient."""
    if saturated is None:
        return x
    return ops.where(saturated, ops.cast(ops.stop_gradient(high), x.dtype), x)


def _containing_zero(low: Any, high: Any, xp: Any = ops) -> tuple[Any, Any]:
    """Widen ``[low, high]`` to contain 0 (0.0 must be exact) and to a usable width."""
    low = xp.minimum(low, 0.0)
    high = xp.maximum(high, 0.0)
    return low, xp.maximum(high, low + MIN_RANGE_WIDTH)


def serialize(quantizer: Quantizer | None) -> Any:
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)


def deserialize(config: Any) -> Quantizer | None:
    if config is None or isinstance(config, Quantizer):
        return config
    return keras.saving.deserialize_keras_object(config)
