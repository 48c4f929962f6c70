"""``ClusterWrapper``: trains a layer whose weights share N centroid values.

Per clustered weight the wrapper holds

* the layer's original weight, still trainable (the "shadow" weight),
* ``<name>_centroids`` ``(C, K)``, trainable (``C = 1`` per tensor, else one row per
  output channel),
* ``<name>_assignments`` (int32, the weight's shape): which centroid of its channel each
  weight uses, recomputed from the shadow weight at every training step,
* with ``preserve_sparsity``, ``<name>_sparsity_mask`` (1 where the weight was non-zero
  when wrapped); centroid 0 of every channel is then fixed at exactly 0.0.

Forward pass: the layer runs with ``centroids[assignments]`` in place of the weight. In
training the gathered tensor is made straight-through for the shadow weight, so one
backward pass updates both the centroids (sum or mean of their weights' gradients) and
the shadow weights, whose new values move the assignments at the next step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from kopt.clustering.assign import gather_centroids, nearest_centroid, nearest_centroid_np, straight_through
from kopt.clustering.clusterable import ClusterableWeight, clusterable_weights, is_clusterable
from kopt.clustering.init import INIT_METHODS, initial_centroid_matrix
from kopt.clustering.layout import from_matrix, from_matrix_np, normalize_axes, to_matrix, to_matrix_np
from kopt.clustering.recover import Clusters
from kopt.core.errors import ClusteringConfigError, InvalidArgumentError, NotClusterableError, UnknownNameError
from kopt.core.initializers import HostArray
from kopt.technique.wrapper import KoptWrapper

GRADIENT_AGGREGATIONS: tuple[str, ...] = ("sum", "mean")


def validate_cluster_parameters(
    number_of_clusters: Any,
    init: Any,
    gradient_aggregation: Any = "sum",
    preserve_sparsity: bool = False,
    where: str = "",
) -> None:
    """Raise :class:`ClusteringConfigError` naming the bad argument (``where`` names the layer)."""
    prefix = f"{where}: " if where else ""
    if isinstance(number_of_clusters, bool) or not isinstance(number_of_clusters, (int, np.integer)):
        raise ClusteringConfigError(f"{prefix}number_of_clusters must be an int, got {number_of_clusters!r}.")
    if number_of_clusters < 1:
        raise ClusteringConfigError(f"{prefix}number_of_clusters must be at least 1, got {number_of_clusters}.")
    if preserve_sparsity and number_of_clusters < 2:
        raise ClusteringConfigError(
            f"{prefix}preserve_sparsity=True reserves one cluster for exact zeros, so number_of_clusters must be "
            f"at least 2, got {number_of_clusters}."
        )
    if init not in INIT_METHODS:
        raise ClusteringConfigError(f"{prefix}unknown init {init!r}; valid ones: {', '.join(map(repr, INIT_METHODS))}.")
    if gradient_aggregation not in GRADIENT_AGGREGATIONS:
        raise ClusteringConfigError(
            f"{prefix}gradient_aggregation must be one of {GRADIENT_AGGREGATIONS}, got {gradient_aggregation!r}."
        )


@dataclass
class _ClusteredWeight:
    weight: ClusterableWeight
    axes: tuple[int, ...]  # normalized channel axes actually used; () = per tensor
    centroids: keras.Variable
    assignments: keras.Variable
    mask: keras.Variable | None


def _variable_name(path: str) -> str:
    return path.replace(".", "_").replace("/", "_")


@keras.saving.register_keras_serializable(package="kopt")
class ClusterWrapper(KoptWrapper):
    """Clusters the weights of ``layer`` into ``number_of_clusters`` shared values.

    Args:
        layer: a clusterable layer (see :func:`kopt.clustering.is_clusterable`).
        number_of_clusters: centroids per tensor, or per output channel with ``per_channel``.
        init: ``"linear"``, ``"random"``, ``"density"`` or ``"kmeans++"`` (see
            :mod:`kopt.clustering.init`).
        per_channel: one set of centroids per output channel (weights without a channel
            axis, e.g. ``Embedding``, stay per tensor).
        preserve_sparsity: zeros of the weights stay exactly zero (fixed zero centroid and
            a mask), so a pruned layer keeps its sparsity.
        gradient_aggregation: ``"sum"`` or ``"mean"`` of the weights' gradients per centroid.
        seed: fixes the initialisation; ``None`` draws one from NumPy's global generator
            (seeded by ``keras.utils.set_random_seed``) and stores it in the config.
    """

    technique = "cluster"

    def __init__(
        self,
        layer: keras.layers.Layer,
        number_of_clusters: int,
        init: str = "kmeans++",
        per_channel: bool = False,
        preserve_sparsity: bool = False,
        gradient_aggregation: str = "sum",
        seed: int | None = None,
        **kwargs: Any,
    ):
        where = f"layer {getattr(layer, 'name', layer)!r}"
        if not is_clusterable(layer):
            if isinstance(layer, KoptWrapper):
                raise NotClusterableError(
                    f"{where} is already wrapped by {type(layer).__name__}; call kopt.strip(model) first, then "
                    "cluster (with preserve_sparsity=True to keep pruned zeros)."
                )
            clusterable_weights(layer)  # raises the detailed message
        validate_cluster_parameters(number_of_clusters, init, gradient_aggregation, preserve_sparsity, where)
        kwargs.setdefault("name", f"cluster_{layer.name}")
        super().__init__(layer, **kwargs)
        self.number_of_clusters = int(number_of_clusters)
        self.init = init
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.gradient_aggregation = gradient_aggregation
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
        self._clustered: list[_ClusteredWeight] = []
        if layer.built:  # initialise now, from the weights the layer holds
            build_config = layer.get_build_config() or {}
            self.build(build_config.get("input_shape"))

    # ------------------------------------------------------------------- build
    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        super().build(input_shape)
        for index, weight in enumerate(clusterable_weights(self.layer)):
            self._clustered.append(self._add_cluster_variables(index, weight))
        self.built = True

    def _add_cluster_variables(self, index: int, weight: ClusterableWeight) -> _ClusteredWeight:
        variable = weight.variable
        shape = tuple(variable.shape)
        axes = normalize_axes(weight.channel_axes, len(shape)) if self.per_channel else ()
        size = int(np.prod(shape))
        if self.number_of_clusters > size:
            raise ClusteringConfigError(
                f"Layer {self.layer.name!r}: number_of_clusters={self.number_of_clusters} exceeds the {size} values "
                f"of its weight {weight.name!r}; use fewer clusters for this layer or leave it out."
            )
        centroids, assignments, mask = self._initial_state(variable, axes, index)
        base = _variable_name(weight.name)
        centroid_variable = self.add_weight(
            name=f"{base}_centroids",
            shape=centroids.shape,
            initializer=HostArray(centroids),
            dtype=variable.dtype,
            trainable=True,
        )
        assignment_variable = self.add_weight(
            name=f"{base}_assignments",
            shape=shape,
            initializer=HostArray(assignments),
            dtype="int32",
            trainable=False,
            aggregation="only_first_replica",
        )
        mask_variable = None
        if mask is not None:
            mask_variable = self.add_weight(
                name=f"{base}_sparsity_mask", shape=shape, initializer=HostArray(mask), dtype=variable.dtype, trainable=False
            )
        return _ClusteredWeight(weight, axes, centroid_variable, assignment_variable, mask_variable)

    def _initial_state(
        self, variable: keras.Variable, axes: tuple[int, ...], index: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Centroids, assignments and sparsity mask from the current weights, computed on the
        host: seeded, nothing to compile, the same result on every backend."""
        values = np.asarray(ops.convert_to_numpy(variable))
        rng = np.random.default_rng([self.seed, index])
        centroids, indices = initial_clusters(
            values, axes, self.number_of_clusters, self.init, rng, preserve_sparsity=self.preserve_sparsity
        )
        mask = (values != 0).astype(centroids.dtype) if self.preserve_sparsity else None
        return centroids, indices, mask

    # --------------------------------------------------------------- numerics
    def _centroid_values(self, state: _ClusteredWeight) -> Any:
        centroids = state.centroids.value
        if self.preserve_sparsity:  # centroid 0 is the fixed, exact zero
            zero = ops.zeros((centroids.shape[0], 1), dtype=centroids.dtype)
            centroids = ops.concatenate([zero, centroids[:, 1:]], axis=1)
        return centroids

    def transformed_weights(self, training: bool = False) -> list[tuple[keras.Variable, Any]]:
        pairs = []
        for state in self._clustered:
            variable = state.weight.variable
            shape = tuple(variable.shape)
            if training:
                matrix = to_matrix(variable.value, state.axes)
                centroids = self._centroid_values(state)
                if state.mask is not None:
                    # The zero centroid is reserved for the pruned weights: a small non-zero weight
                    # joins its nearest non-zero centroid, so sparsity is kept, not silently raised.
                    indices = nearest_centroid(matrix, centroids[:, 1:]) + 1
                    indices = ops.where(to_matrix(state.mask.value, state.axes) > 0, indices, 0)
                else:
                    indices = nearest_centroid(matrix, centroids)
                state.assignments.assign(from_matrix(indices, shape, state.axes))
                clustered = straight_through(gather_centroids(centroids, indices, self.gradient_aggregation), matrix)
            else:
                indices = to_matrix(state.assignments.value, state.axes)
                clustered = gather_centroids(self._centroid_values(state), indices)
            if state.mask is not None:
                keep = to_matrix(state.mask.value, state.axes) > 0
                clustered = ops.where(keep, clustered, ops.zeros_like(clustered))
            pairs.append((variable, from_matrix(clustered, shape, state.axes)))
        return pairs

    # ------------------------------------------------------------- inspection
    @property
    def clustered_weight_names(self) -> list[str]:
        return [state.weight.name for state in self._clustered]

    def clusters(self, name: str | None = None) -> Clusters:
        """Centroids ``(C, K)`` and assignments (weight shape) of one clustered weight
        (the only one when ``name`` is None), as NumPy arrays."""
        if not self._clustered:
            raise InvalidArgumentError(f"{self.name!r} is not built yet.")
        if name is None:
            if len(self._clustered) > 1:
                raise InvalidArgumentError(f"{self.name!r} clusters several weights {self.clustered_weight_names}; pass name=.")
            state = self._clustered[0]
        else:
            matches = [s for s in self._clustered if s.weight.name == name]
            if not matches:
                raise UnknownNameError(f"{self.name!r} has no clustered weight {name!r}; it has {self.clustered_weight_names}.")
            state = matches[0]
        return Clusters(
            centroids=ops.convert_to_numpy(self._centroid_values(state)),
            indices=ops.convert_to_numpy(state.assignments),
            channel_axes=state.axes,
        )

    # ---------------------------------------------------------- serialization
    def reached_variables(self) -> list[keras.Variable]:
        return [state.weight.variable for state in self._clustered] if self.built else []

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "number_of_clusters": self.number_of_clusters,
            "init": self.init,
            "per_channel": self.per_channel,
            "preserve_sparsity": self.preserve_sparsity,
            "gradient_aggregation": self.gradient_aggregation,
            "seed": self.seed,
        }


def initial_clusters(
    values: np.ndarray,
    axes: tuple[int, ...],
    number_of_clusters: int,
    init: str,
    rng: np.random.Generator,
    *,
    preserve_sparsity: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Initial centroids ``(C, K)`` (``values``' dtype) and each weight's centroid index (``values``' shape).

    Channels are the ``axes`` (``()``: one channel, per-tensor clusters). With
    ``preserve_sparsity`` centroid 0 is an exact zero kept by the zeros; the other weights
    choose among centroids ``1..K-1``. Computed on the host: seeded by ``rng``, the same on
    every backend.
    """
    matrix = to_matrix_np(values, axes)
    centroids = initial_centroid_matrix(
        matrix.astype(np.float64), number_of_clusters, init, rng, zero_centroid=preserve_sparsity
    ).astype(values.dtype)
    if preserve_sparsity:  # non-zeros choose among centroids 1.., zeros keep centroid 0
        indices = nearest_centroid_np(matrix, centroids[:, 1:]) + 1
        indices[matrix == 0] = 0
    else:
        indices = nearest_centroid_np(matrix, centroids)
    return centroids, from_matrix_np(indices, values.shape, axes)


def derive_seed(seed: int, layer_name: str) -> int:
    """A per-layer seed that depends only on the model-level seed and the layer's name."""
    return int(np.random.default_rng([seed, zlib.crc32(layer_name.encode())]).integers(0, 2**31 - 1))
