"""``cluster_weights``: cluster a model (through the graph analyzer) or a single layer.

The per-layer decision lives in :func:`cluster_layer` so that a policy can call it with
per-layer parameters; :func:`cluster_weights` only selects layers (``layer_filter``),
merges per-layer overrides (``configs``), validates everything, then wraps.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Mapping

import keras
import numpy as np

from kopt.clustering.clusterable import clusterable_weights, is_clusterable
from kopt.clustering.layout import matrix_shape, normalize_axes
from kopt.clustering.settings import ClusterSettings
from kopt.clustering.wrapper import ClusterWrapper, derive_seed, validate_cluster_parameters
from kopt.core.errors import (
    ClusteringConfigError,
    GraphRewriteError,
    KoptWarning,
    NotClusterableError,
    UnsupportedModelError,
)
from kopt.core.validation import check_finite_weights
from kopt.graph import analyze, clone_layer, map_layers
from kopt.graph.model_type import like_input
from kopt.graph.sublayers import sublayer_key
from kopt.technique import coverage
from kopt.technique.inplace import choose_sublayers, closed_blocks, nested_layers, wrap_sublayers
from kopt.technique.wrapper import KoptWrapper

LAYER_PARAMETERS = ("number_of_clusters", "init", "per_channel", "preserve_sparsity", "gradient_aggregation", "seed")


def layer_notes(layer: keras.layers.Layer, number_of_clusters: int, per_channel: bool) -> list[str]:
    """Checks one built layer against its parameters: raises when impossible, returns
    remarks (things the user may not expect) otherwise."""
    notes = []
    for weight in clusterable_weights(layer):
        shape = tuple(weight.variable.shape)
        size = int(np.prod(shape))
        if number_of_clusters > size:
            raise ClusteringConfigError(
                f"Layer {layer.name!r}: number_of_clusters={number_of_clusters} exceeds the {size} values of its "
                f"weight {weight.name!r}; give this layer fewer clusters (configs={{{layer.name!r}: "
                "{'number_of_clusters': ...}}) or leave it out (layer_filter=...)."
            )
        if not per_channel:
            continue
        if weight.channel_axes is None:
            notes.append(f"{layer.name!r}.{weight.name} has no output-channel axis: clustered per tensor")
            continue
        per, channels = matrix_shape(shape, normalize_axes(weight.channel_axes, len(shape)))
        if per <= number_of_clusters:
            notes.append(
                f"{layer.name!r}.{weight.name} has only {per} values per channel for {number_of_clusters} clusters "
                "per channel: clustering leaves it unchanged (use per_channel=False for it)"
            )
    return notes


def cluster_layer(
    layer: keras.layers.Layer,
    number_of_clusters: int,
    init: str = "kmeans++",
    per_channel: bool = False,
    preserve_sparsity: bool = False,
    gradient_aggregation: str = "sum",
    seed: int | None = None,
) -> ClusterWrapper:
    """Wrap one layer (the object given, not a copy) in a :class:`ClusterWrapper`.

    Validates the parameters against the layer and warns about surprises (per-channel
    clustering of a weight without channel axis, or with fewer values per channel than
    clusters).
    """
    where = f"layer {getattr(layer, 'name', layer)!r}"
    validate_cluster_parameters(number_of_clusters, init, gradient_aggregation, preserve_sparsity, where)
    if isinstance(layer, KoptWrapper):
        raise NotClusterableError(
            f"{where} is already wrapped by {type(layer).__name__}; call kopt.strip(model) first, then cluster "
            "(with preserve_sparsity=True to keep pruned zeros)."
        )
    if layer.built:
        notes = layer_notes(layer, number_of_clusters, per_channel)
        if notes:
            warnings.warn("Clustering: " + "; ".join(notes) + ".", KoptWarning, stacklevel=2)
    return ClusterWrapper(
        layer,
        number_of_clusters=number_of_clusters,
        init=init,
        per_channel=per_channel,
        preserve_sparsity=preserve_sparsity,
        gradient_aggregation=gradient_aggregation,
        seed=seed,
    )


def cluster_weights(
    model_or_layer: keras.Model | keras.layers.Layer,
    number_of_clusters: int,
    init: str = "kmeans++",
    per_channel: bool = False,
    preserve_sparsity: bool = False,
    *,
    gradient_aggregation: str = "sum",
    seed: int | None = None,
    layer_filter: Callable[[keras.layers.Layer], bool] | None = None,
    configs: Mapping[str, Mapping[str, Any] | ClusterSettings] | None = None,
) -> keras.Model | ClusterWrapper:
    """Cluster the weights of a Sequential/Functional model, or of one layer.

    For a model, returns a new model (the original is not modified) in which every
    clusterable layer accepted by ``layer_filter`` (called on clusterable layers only;
    default: accept all) or named in ``configs`` is wrapped in a
    :class:`ClusterWrapper`; ``configs`` maps layer names to overrides of any of
    ``number_of_clusters, init, per_channel, preserve_sparsity, gradient_aggregation,
    seed`` (a dict, or a :class:`~kopt.clustering.settings.ClusterSettings`). Layers of other types are kept as they are. Each layer's seed derives from
    ``seed`` and its name, so the same seed gives the same clustered model.

    For a layer, returns ``ClusterWrapper(layer, ...)``. Everything is validated before
    anything is built; a layer clustered per tensor that feeds a BatchNormalization
    raises a warning (folding the BN scales every output channel differently).
    """
    validate_cluster_parameters(number_of_clusters, init, gradient_aggregation, preserve_sparsity)
    check_finite_weights(model_or_layer, "kopt.clustering.cluster_weights")
    defaults = {
        "number_of_clusters": number_of_clusters,
        "init": init,
        "per_channel": per_channel,
        "preserve_sparsity": preserve_sparsity,
        "gradient_aggregation": gradient_aggregation,
        "seed": seed,
    }
    if not isinstance(model_or_layer, keras.Model):
        if not isinstance(model_or_layer, keras.layers.Layer):
            raise UnsupportedModelError(f"cluster_weights expects a keras.Model or keras.layers.Layer, got {type(model_or_layer).__name__}.")
        if layer_filter is not None or configs:
            raise ClusteringConfigError("layer_filter and configs apply to models; pass parameters directly for a layer.")
        return cluster_layer(model_or_layer, **defaults)

    model = model_or_layer
    graph = analyze(model)
    layers = graph.layers()
    blocks = closed_blocks(graph)
    nested = {name: _plan_nested(name, block, defaults, layer_filter, configs or {}) for name, block in blocks.items()}
    nested_keys = {sublayer_key(name, path) for name, planned in nested.items() for path in planned}
    plan = _plan(layers, defaults, layer_filter, {k: v for k, v in (configs or {}).items() if k not in nested_keys})
    base_seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)
    for name, planned in nested.items():
        for path, params in planned.items():
            where = f"layer {name}/{path}"
            validate_cluster_parameters(
                params["number_of_clusters"], params["init"], params["gradient_aggregation"], params["preserve_sparsity"], where
            )
            if params["seed"] is None:
                params["seed"] = derive_seed(base_seed, sublayer_key(name, path))

    notes: list[str] = []
    for layer in layers:
        if id(layer) in plan:
            params = plan[id(layer)]
            validate_cluster_parameters(
                params["number_of_clusters"], params["init"], params["gradient_aggregation"],
                params["preserve_sparsity"], f"layer {layer.name!r}",
            )
            notes += layer_notes(layer, params["number_of_clusters"], params["per_channel"])
            if params["seed"] is None:
                params["seed"] = derive_seed(base_seed, layer.name)
    for name, planned in nested.items():
        for path, params in planned.items():
            notes += layer_notes(get_planned(blocks[name], path), params["number_of_clusters"], params["per_channel"])
    if notes:
        warnings.warn("Clustering: " + "; ".join(notes) + ".", KoptWarning, stacklevel=2)
    _warn_batch_norm_consumers(graph, layers, plan)

    flat = graph.flat_names()  # map_layers hands wrap a copy under this name when names clash
    by_name = {flat[id(layer)]: plan[id(layer)] for layer in layers if id(layer) in plan}

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if nested.get(layer.name):
            planned = nested[layer.name]

            def choose(path: str, sub: keras.layers.Layer) -> ClusterWrapper | None:
                return ClusterWrapper(sub, **planned[path], name=f"cluster_{sub.name}") if path in planned else None

            try:
                return wrap_sublayers(layer, choose, name=f"cluster_{layer.name}")
            except GraphRewriteError:  # kept whole: coverage names its kernels
                return None
        if layer.name not in by_name:
            return None
        return ClusterWrapper(clone_layer(layer), **by_name[layer.name])

    clustered = like_input(model, map_layers(model, wrap, graph=graph), "cluster_weights")
    chosen_out = {layer.name for layer in layers if id(layer) not in plan and is_clusterable(layer)}
    chosen_out |= {  # sublayers of closed blocks left out by layer_filter / configs
        sublayer_key(name, path)
        for name, block in blocks.items()
        for path, sub in nested_layers(block)
        if path not in nested[name] and is_clusterable(sub)
    }
    coverage.measure(clustered, "cluster", excluded=chosen_out).warn(stacklevel=3)
    return clustered


def _plan_nested(
    name: str,
    block: keras.layers.Layer,
    defaults: dict[str, Any],
    layer_filter: Callable[[keras.layers.Layer], bool] | None,
    configs: Mapping[str, Mapping[str, Any] | ClusterSettings],
) -> dict[str, dict[str, Any]]:
    """``sublayer path -> parameters`` for the clusterable sublayers of a closed block (clustered in place);
    ``configs`` names them ``"block/path"``."""

    def choose(path: str, sub: keras.layers.Layer) -> dict[str, Any] | None:
        if isinstance(sub, KoptWrapper) or not is_clusterable(sub):
            return None
        override = configs.get(sublayer_key(name, path))
        if is_dataclass(override):
            override = asdict(override)
        if override is None and layer_filter is not None and not layer_filter(sub):
            return None
        return {**defaults, **(override or {})}

    return choose_sublayers(block, choose)


def get_planned(block: keras.layers.Layer, path: str) -> keras.layers.Layer:
    """The sublayer of ``block`` at ``path`` (``"attn/qkv"``), as :func:`choose_sublayers` named it."""
    return next(sub for key, sub in nested_layers(block) if key == path)


def _plan(
    layers: list[keras.layers.Layer],
    defaults: dict[str, Any],
    layer_filter: Callable[[keras.layers.Layer], bool] | None,
    configs: Mapping[str, Mapping[str, Any] | ClusterSettings],
) -> dict[int, dict[str, Any]]:
    """Layer id -> parameters, for every layer to cluster."""
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in configs if name not in by_name]
    if unknown:
        raise ClusteringConfigError(
            f"configs names layers {unknown} that are not in the model; its layers are {sorted(by_name)}."
        )
    plan: dict[int, dict[str, Any]] = {}
    for layer in layers:
        override = configs.get(layer.name)
        if is_dataclass(override):  # a ClusterSettings from a policy plan
            override = asdict(override)
        if override is not None:
            bad = [key for key in override if key not in LAYER_PARAMETERS]
            if bad:
                raise ClusteringConfigError(
                    f"configs[{layer.name!r}] has unknown keys {bad}; valid keys: {', '.join(LAYER_PARAMETERS)}."
                )
        if isinstance(layer, KoptWrapper):
            wanted = override is not None or (
                is_clusterable(layer.layer) and (layer_filter is None or layer_filter(layer))
            )
            if wanted:
                raise NotClusterableError(
                    f"Layer {layer.name!r} is already wrapped by {type(layer).__name__}; call kopt.strip(model) "
                    "first, then cluster (with preserve_sparsity=True to keep pruned zeros)."
                )
            continue
        if not is_clusterable(layer):
            if override is not None:
                clusterable_weights(layer)  # raises NotClusterableError naming the layer
            continue
        if override is not None or layer_filter is None or layer_filter(layer):
            plan[id(layer)] = {**defaults, **(override or {})}
    return plan


def _warn_batch_norm_consumers(graph: Any, layers: list[keras.layers.Layer], plan: dict[int, dict[str, Any]]) -> None:
    feeding = []
    for layer in layers:
        if id(layer) not in plan or plan[id(layer)]["per_channel"]:
            continue
        consumers = {c for node in graph.nodes_of(layer) for c in graph.consumers(node)}
        if any(isinstance(graph.layer(c), keras.layers.BatchNormalization) for c in consumers):
            feeding.append(layer.name)
    if feeding:
        shown = ", ".join(repr(n) for n in feeding[:8]) + (f" and {len(feeding) - 8} more" if len(feeding) > 8 else "")
        warnings.warn(
            f"Clustering: {len(feeding)} layer(s) clustered per tensor feed a BatchNormalization ({shown}). Folding "
            "the BN into them at export scales each output channel differently, so a tensor keeps at most "
            "number_of_clusters values per channel but not per tensor, and compresses less. Use per_channel=True "
            "for these layers, or fold the BatchNormalization before clustering.",
            KoptWarning,
            stacklevel=3,
        )
