"""Collaborative optimization: QAT that keeps what pruning and clustering produced.

Plain QAT trains every weight freely, so a pruned kernel's zeros drift away from zero and
a clustered kernel's shared values split apart: the int8 model loses the structure that
made it compress. The quantizers here wrap a scheme's weight quantizer and take the
weight the layer computes with from their own state (:meth:`source_weight`, read by
:class:`~kopt.quantization.wrapper.QuantizeWrapper` and :class:`FoldedBatchNorm` before
any BatchNorm fold or fake-quant):

* :class:`SparsityPreservingQuantizer` (PQAT) records the zeros of the kernel it is built
  on as a mask variable; the layer computes with ``where(mask, kernel, 0)``, so the zeros
  get no gradient and stay exactly 0 in training, after the last step, after strip and,
  since symmetric int8 has zero point 0, in the ``.tflite`` weights.
* :class:`ClusterPreservingQuantizer` (CQAT) recovers the centroids and indices of an
  already-clustered kernel (:func:`kopt.clustering.recover_clusters`); the centroids are
  trained, the indices fixed, and the layer computes with ``centroids[indices]``. A
  per-channel BatchNorm fold and per-channel fake-quant map each channel's values one to
  one, so each int8 output channel keeps at most as many values as the kernel had.
  ``preserve_sparsity=True`` (PCQAT) also keeps the zeros exactly zero.

Schemes ``"prune_preserve"``, ``"cluster_preserve"`` and ``"prune_cluster_preserve"`` are
the default 8-bit scheme with its weight quantizers wrapped this way; they are registered
when :mod:`kopt.quantization` is imported.

Which kernel counts as clustered: the cluster-preserving scheme inspects each layer's
kernel when the model is quantized. Per tensor when the whole kernel has at most
``max_clusters`` distinct values, else per output channel when every channel has at most
``max_clusters``; otherwise it raises :class:`NotClusteredError` naming the layer, before
anything is built. The default ``max_clusters=256`` is what one int8 channel can hold, so a
*small* unclustered layer passes: each of its distinct values becomes its own centroid,
which trains like plain QAT. Use :func:`cluster_preserve_scheme` with the number of clusters
you used (plus one with sparsity preservation) for a strict check.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kopt.clustering.assign import gather_centroids, nearest_centroid_np
from kopt.clustering.layout import from_matrix, from_matrix_np, normalize_axes, to_matrix, to_matrix_np
from kopt.clustering.recover import recover_clusters, unique_values
from kopt.core.errors import InvalidArgumentError, InvalidArgumentTypeError, NotClusteredError
from kopt.core.initializers import HostArray
from kopt.core.layers import channel_axes_of
from kopt.quantization.quantizers import Quantizer, WeightQuantizer, deserialize, serialize
from kopt.quantization.schemes import Scheme, get_scheme, register_built_in_scheme

#: Most distinct values per channel a kernel may have and still count as clustered (an int8
#: channel holds at most 255 values, so preserving more would be meaningless).
MAX_CLUSTERS = 256


def _as_quantizer(quantizer: Quantizer | dict | None) -> Quantizer:
    quantizer = WeightQuantizer() if quantizer is None else deserialize(quantizer)
    if not isinstance(quantizer, Quantizer):
        raise InvalidArgumentTypeError(f"Expected a kopt.quantization.Quantizer to wrap, got {quantizer!r}.")
    return quantizer


def _host_values(weight: keras.Variable) -> np.ndarray:
    return np.array(ops.convert_to_numpy(weight))


class PreservingQuantizer(Quantizer):
    """Base of the preserving quantizers: fake-quantizes with ``quantizer`` whatever
    :meth:`source_weight` produced. Holds settings only; the recorded structure lives in
    variables created on the host layer by :meth:`build` (saved with the model)."""

    def __init__(self, quantizer: Quantizer | dict | None = None):
        self.quantizer = _as_quantizer(quantizer)

    @property
    def num_bits(self) -> int | None:
        return getattr(self.quantizer, "num_bits", None)

    def build(
        self, host: keras.layers.Layer, name: str, shape: tuple, weight: keras.Variable | None = None
    ) -> dict[str, keras.Variable]:
        return dict(self.quantizer.build(host, name, shape, weight))

    def source_weight(self, value: Any, state: dict[str, keras.Variable]) -> Any:
        """The weight the layer computes with (variable shape), before any fold or fake-quant."""
        return value

    def __call__(self, x: Any, state: dict[str, keras.Variable], training: bool = False) -> Any:
        return self.quantizer(x, state, training)

    def get_config(self) -> dict[str, Any]:
        return {"quantizer": serialize(self.quantizer)}


@keras.saving.register_keras_serializable(package="kopt")
class SparsityPreservingQuantizer(PreservingQuantizer):
    """PQAT: the kernel's zeros at build time stay exactly zero (a fixed mask, not re-pruning).

    Build it on the stripped pruned kernel (``quantize_model(..., scheme="prune_preserve")``
    does). A kernel without zeros trains as with plain QAT.
    """

    def build(
        self, host: keras.layers.Layer, name: str, shape: tuple, weight: keras.Variable | None = None
    ) -> dict[str, keras.Variable]:
        state = super().build(host, name, shape, weight)
        if weight is None:
            return state
        values = _host_values(weight)
        state["sparsity_mask"] = host.add_weight(
            name=f"{name}_sparsity_mask",
            shape=values.shape,
            initializer=HostArray((values != 0).astype(values.dtype)),
            dtype=weight.dtype,
            trainable=False,
        )
        return state

    def source_weight(self, value: Any, state: dict[str, keras.Variable]) -> Any:
        mask = state.get("sparsity_mask")
        if mask is None:
            return value
        return ops.where(ops.convert_to_tensor(mask) > 0, value, ops.zeros_like(value))


@keras.saving.register_keras_serializable(package="kopt")
class ClusterPreservingQuantizer(PreservingQuantizer):
    """CQAT (PCQAT with ``preserve_sparsity``): train the centroids of a clustered kernel.

    At build the kernel's centroids ``(C, K)`` (trainable) and indices (int32, the kernel's
    shape, fixed) are recovered from its values, per tensor (``C = 1``) or per output channel
    along ``channel_axes``. The kernel variable itself is then frozen (not trainable): the
    layer computes with ``centroids[indices]`` (times the zero mask with
    ``preserve_sparsity``), so the number of distinct values per channel cannot grow.

    Args:
        quantizer: the fake-quant applied to the effective (possibly BatchNorm-folded) kernel.
        number_of_clusters: ``K``, the centroids per channel (channels with fewer values repeat
            their last centroid; it has no indices pointing at it twice).
        per_channel: one row of centroids per output channel instead of one for the tensor.
        channel_axes: the kernel's output-channel axes (``(-1,)`` for Dense/Conv,
            ``(-2, -1)`` for DepthwiseConv2D).
        preserve_sparsity: keep the kernel's zeros exactly zero.

    A kernel with more than ``K`` distinct values per channel when built (a model loaded
    from ``.keras`` is built on fresh weights, then its saved centroids are loaded) starts
    from ``K`` evenly spaced centroids per channel, each weight on its nearest one.
    """

    def __init__(
        self,
        quantizer: Quantizer | dict | None = None,
        number_of_clusters: int = 16,
        per_channel: bool = False,
        channel_axes: Sequence[int] | None = (-1,),
        preserve_sparsity: bool = False,
    ):
        super().__init__(quantizer)
        if isinstance(number_of_clusters, bool) or not isinstance(number_of_clusters, (int, np.integer)):
            raise InvalidArgumentTypeError(f"ClusterPreservingQuantizer number_of_clusters must be an int, got {number_of_clusters!r}.")
        if number_of_clusters < 1:
            raise InvalidArgumentError(f"ClusterPreservingQuantizer number_of_clusters must be >= 1, got {number_of_clusters}.")
        self.number_of_clusters = int(number_of_clusters)
        self.per_channel = bool(per_channel)
        self.channel_axes = None if channel_axes is None else tuple(int(a) for a in channel_axes)
        self.preserve_sparsity = bool(preserve_sparsity)

    def axes_for(self, ndim: int) -> tuple[int, ...]:
        """The clustering axes for a kernel of rank ``ndim`` (``()``: per tensor)."""
        return normalize_axes(self.channel_axes, ndim) if self.per_channel else ()

    def initial_clusters(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(centroids (C, K), indices (kernel shape))`` for ``values``: recovered exactly when
        it has at most K values per channel, else K evenly spaced centroids per channel."""
        axes = self.axes_for(values.ndim)
        k = self.number_of_clusters
        try:
            clusters = recover_clusters(values, axes, max_clusters=k)
        except ValueError:
            matrix = to_matrix_np(values, axes)
            low, high = matrix.min(axis=0), matrix.max(axis=0)
            centroids = np.linspace(low, high, k, axis=1).astype(values.dtype)
            return centroids, from_matrix_np(nearest_centroid_np(matrix, centroids), values.shape, axes)
        centroids = clusters.centroids
        if centroids.shape[1] < k:
            filler = np.repeat(centroids[:, -1:], k - centroids.shape[1], axis=1)
            centroids = np.concatenate([centroids, filler], axis=1)
        return centroids, clusters.indices

    def build(
        self, host: keras.layers.Layer, name: str, shape: tuple, weight: keras.Variable | None = None
    ) -> dict[str, keras.Variable]:
        state = super().build(host, name, shape, weight)
        if weight is None:
            return state
        values = _host_values(weight)
        centroids, indices = self.initial_clusters(values)
        state["centroids"] = host.add_weight(
            name=f"{name}_centroids",
            shape=centroids.shape,
            initializer=HostArray(centroids),
            dtype=weight.dtype,
            trainable=True,
        )
        state["cluster_indices"] = host.add_weight(
            name=f"{name}_cluster_indices",
            shape=values.shape,
            initializer=HostArray(indices.astype(np.int32)),
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
        )
        if self.preserve_sparsity:
            state["sparsity_mask"] = host.add_weight(
                name=f"{name}_sparsity_mask",
                shape=values.shape,
                initializer=HostArray((values != 0).astype(values.dtype)),
                dtype=weight.dtype,
                trainable=False,
            )
        weight.trainable = False  # the centroids are trained instead (no "missing gradient" warnings)
        return state

    def source_weight(self, value: Any, state: dict[str, keras.Variable]) -> Any:
        if "centroids" not in state:
            return value
        shape = tuple(value.shape)
        axes = self.axes_for(len(shape))
        indices = to_matrix(ops.convert_to_tensor(state["cluster_indices"]), axes)
        clustered = from_matrix(gather_centroids(ops.convert_to_tensor(state["centroids"]), indices), shape, axes)
        mask = state.get("sparsity_mask")
        if mask is not None:
            clustered = ops.where(ops.convert_to_tensor(mask) > 0, clustered, ops.zeros_like(clustered))
        return clustered

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "number_of_clusters": self.number_of_clusters,
            "per_channel": self.per_channel,
            "channel_axes": None if self.channel_axes is None else list(self.channel_axes),
            "preserve_sparsity": self.preserve_sparsity,
        }


# ------------------------------------------------------------------ detection
def kernel_channel_axes(layer: keras.Operation, attr: str) -> tuple[int, ...] | None:
    """Output-channel axes of ``layer.<attr>`` as clustering sees them (None: per tensor only)."""
    return channel_axes_of(layer, attr)


def cluster_layout(
    values: np.ndarray,
    channel_axes: Sequence[int] | None,
    *,
    max_clusters: int = MAX_CLUSTERS,
    per_channel: bool | None = None,
    where: str = "the kernel",
) -> tuple[bool, int]:
    """``(per_channel, number_of_clusters)`` describing an already-clustered kernel.

    ``per_channel=None`` detects it: per tensor when the whole kernel has at most
    ``max_clusters`` distinct values, else per channel. Raises :class:`NotClusteredError`
    when the chosen layout needs more than ``max_clusters`` centroids.
    """
    values = np.asarray(values)
    axes = normalize_axes(channel_axes, values.ndim)
    per_tensor = int(np.unique(values).size)
    widest = int(unique_values(values, axes).max()) if axes else per_tensor
    if per_channel is None:
        per_channel = per_tensor > max_clusters and bool(axes)
    needed = widest if per_channel and axes else per_tensor
    if needed > max_clusters:
        layout = "one of its output channels" if per_channel and axes else "it"
        raise NotClusteredError(
            f"{where} is not clustered: {layout} has {needed} distinct values, more than max_clusters={max_clusters}. "
            "Cluster the model first (kopt.clustering.cluster_weights, fine-tune, kopt.strip), leave this layer out "
            "of quantization, or use a scheme that does not preserve clusters (e.g. 'default_8bit' or "
            "'prune_preserve'). If it was clustered with more clusters, raise max_clusters "
            "(kopt.quantization.cluster_preserve_scheme(max_clusters=...))."
        )
    return bool(per_channel and axes), needed


# -------------------------------------------------------------------- schemes
def _kernel_variable(layer: keras.Operation, attr: str) -> keras.Variable | None:
    variable = getattr(layer, attr, None)
    if isinstance(variable, keras.Variable) and keras.backend.is_float_dtype(variable.dtype):
        return variable
    return None


def prune_preserve_scheme(base: Scheme | str = "default_8bit") -> Scheme:
    """PQAT: ``base`` with every weight quantizer keeping the zeros of its kernel."""

    def hook(layer: keras.Operation, attr: str, quantizer: Quantizer) -> Quantizer:
        if _kernel_variable(layer, attr) is None:
            return quantizer  # e.g. a standalone BatchNorm's computed scale: nothing to preserve
        return SparsityPreservingQuantizer(quantizer)

    return get_scheme(base).with_weight_quantizer(hook, name="prune_preserve")


def cluster_preserve_scheme(
    base: Scheme | str = "default_8bit",
    *,
    preserve_sparsity: bool = False,
    max_clusters: int = MAX_CLUSTERS,
    per_channel: bool | None = None,
    planned: Mapping[str, tuple[int, bool | None]] | None = None,
) -> Scheme:
    """CQAT (PCQAT with ``preserve_sparsity``): ``base`` training the centroids of clustered kernels.

    Each layer's layout (per tensor / per channel, number of clusters) is read from its
    kernel when the model is quantized (:func:`cluster_layout`); ``per_channel`` forces one.
    ``planned`` maps layer names to ``(max_clusters, per_channel)`` of the clustering they went
    through: those layers are checked strictly against their own plan (what a policy's CQAT
    stage passes), the others against ``max_clusters`` / ``per_channel``.
    """
    _check_max_clusters(max_clusters, "max_clusters")
    planned = dict(planned or {})
    for name, (limit, _) in planned.items():
        _check_max_clusters(limit, f"planned[{name!r}]")

    def hook(layer: keras.Operation, attr: str, quantizer: Quantizer) -> Quantizer:
        variable = _kernel_variable(layer, attr)
        if variable is None:
            return quantizer
        axes = kernel_channel_axes(layer, attr)
        name = getattr(layer, "name", "?")
        limit, layout = planned.get(name, (max_clusters, per_channel))
        where = f"Layer {name!r} ({type(layer).__name__}), weight {attr!r},"
        chosen, k = cluster_layout(_host_values(variable), axes, max_clusters=limit, per_channel=layout, where=where)
        return ClusterPreservingQuantizer(
            quantizer, number_of_clusters=k, per_channel=chosen, channel_axes=axes, preserve_sparsity=preserve_sparsity
        )

    name = "prune_cluster_preserve" if preserve_sparsity else "cluster_preserve"
    return get_scheme(base).with_weight_quantizer(hook, name=name)


def _check_max_clusters(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}.")


def prune_cluster_preserve_scheme(
    base: Scheme | str = "default_8bit", *, max_clusters: int = MAX_CLUSTERS, per_channel: bool | None = None
) -> Scheme:
    """PCQAT: cluster-preserving QAT whose zeros also stay exactly zero."""
    return cluster_preserve_scheme(base, preserve_sparsity=True, max_clusters=max_clusters, per_channel=per_channel)


register_built_in_scheme("prune_preserve", prune_preserve_scheme)
register_built_in_scheme("cluster_preserve", cluster_preserve_scheme)
register_built_in_scheme("prune_cluster_preserve", prune_cluster_preserve_scheme)

__all__ = [
    "MAX_CLUSTERS",
    "ClusterPreservingQuantizer",
    "NotClusteredError",
    "PreservingQuantizer",
    "SparsityPreservingQuantizer",
    "cluster_layout",
    "cluster_preserve_scheme",
    "kernel_channel_axes",
    "prune_cluster_preserve_scheme",
    "prune_preserve_scheme",
]
