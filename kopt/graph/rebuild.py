"""ModelGraph -> keras.Model: call every node's layer on the new tensors, in topological order."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import tree

from kopt.core.errors import GraphRewriteError

if TYPE_CHECKING:
    from kopt.graph.model_graph import ModelGraph


def clone_layer(layer: keras.layers.Layer, name: str | None = None) -> keras.layers.Layer:
    """A new layer with the same config (``name`` if given), built to the same shapes, holding copies of the weights.

    Not every layer round-trips through its config: a composite whose ``build`` does not build its sublayers
    (keras-hub's ``SwinTransformerBlock``) has no weights after ``build_from_config``. Such a copy is run
    once on zeros of the recorded input shape, which creates them. A layer that still cannot be copied
    raises :class:`GraphRewriteError` naming it (``rebuild(clone=True)`` then reuses the layer itself) rather
    than a copy that computes something else.
    """
    copy = fresh_copy(layer, name=name)
    try:
        if layer.weights:
            copy.set_weights(layer.get_weights())
    except Exception as error:  # noqa: BLE001 - re-raised with the layer's name
        raise GraphRewriteError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be copied from its config: {error}"
        ) from error
    return copy


def fresh_copy(
    layer: keras.layers.Layer, name: str | None = None, like: list[tuple] | None = None
) -> keras.layers.Layer:
    """A new layer from ``layer``'s config, built to the same shapes, with freshly initialised weights.

    Its weights have the shapes ``like`` lists (default: ``layer``'s); a copy whose ``build`` made
    fewer is run once on zeros (see :func:`clone_layer`). Raises :class:`GraphRewriteError` naming the layer.
    """
    like = [tuple(w.shape) for w in layer.weights] if like is None else [tuple(s) for s in like]
    try:
        config = layer.get_config()
        if name is not None:
            config["name"] = name
        copy = layer.__class__.from_config(config)
        build_config = layer.get_build_config()
        if build_config is not None and not copy.built:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras' "does not have a build() method" (handled below)
                copy.build_from_config(build_config)
        if not _same_weight_shapes(copy, like):
            _run_once(copy, build_config)
        if not _same_weight_shapes(copy, like):
            raise ValueError(
                f"the copy holds weights of shapes {[tuple(w.shape) for w in copy.weights]}, "
                f"the layer {like}"
            )
    except Exception as error:  # noqa: BLE001 - re-raised with the layer's name
        raise GraphRewriteError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be copied from its config: {error}"
        ) from error
    return copy


def _same_weight_shapes(copy: keras.layers.Layer, shapes: list[tuple]) -> bool:
    return [tuple(w.shape) for w in copy.weights] == shapes


def _run_once(copy: keras.layers.Layer, build_config: dict | None) -> None:
    """Call ``copy`` on zeros (batch 1) of its recorded input shape: sublayers create their weights on call."""
    shapes = (build_config or {}).get("input_shape")
    if shapes is None:
        raise ValueError("no recorded input shape")
    zeros = tree.map_shape_structure(lambda shape: np.zeros([1 if d is None else d for d in shape], "float32"), shapes)
    copy(zeros)


def _accepted_kwargs(layer: keras.Operation, kwargs: dict) -> dict:
    """Drop a recorded ``mask=`` the layer's ``call`` cannot take.

    Keras records the ``mask`` it auto-fills for a layer whose ``call`` has a ``mask``
    parameter (a wrapper, an RNN). A replacement without one (the stripped inner Dense)
    still gets the mask from its input tensor, but must not receive the keyword.
    """
    if "mask" not in kwargs or not isinstance(layer, keras.layers.Layer):
        return kwargs
    parameters = inspect.signature(layer.call).parameters
    if "mask" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key != "mask"}


def rebuild_model(graph: "ModelGraph", name: str | None = None, clone: bool = False) -> keras.Model:
    dag = graph.dag
    produced: dict[str, list] = {}
    clones: dict[int, keras.Operation] = {}
    flat_names = graph.flat_names()
    if not clone:
        renamed = sorted(node for node in graph.layer_nodes() if flat_names[id(graph.layer(node))] != graph.layer(node).name)
        if renamed:
            raise GraphRewriteError(
                f"Layers {renamed} share their names with other layers of model {graph.name!r} (nested sub-models "
                "with same-named layers). A flattened model needs unique names, which only copies can take: "
                "rebuild with clone=True, or use kopt.graph.map_layers (it names the copies after their paths)."
            )

    def layer_for(node: str) -> keras.Operation:
        layer = dag.nodes[node]["layer"]
        if not clone or not isinstance(layer, keras.layers.Layer):
            return layer
        if id(layer) not in clones:
            try:
                clones[id(layer)] = clone_layer(layer, name=flat_names[id(layer)])
            except GraphRewriteError:
                # Never rebuilt from a config that does not round-trip: the model shares this one layer.
                clones[id(layer)] = layer
        return clones[id(layer)]

    for node in graph.topological_nodes():
        data = dag.nodes[node]
        if data["kind"] == "input":
            produced[node] = list(data["outputs"])
            continue
        in_edges = sorted(dag.in_edges(node, data=True), key=lambda e: e[2]["dst_index"])
        new_inputs = [produced[u][d["src_index"]] for u, _, d in in_edges]
        if len(new_inputs) != len(data["tensors"]):
            raise GraphRewriteError(
                f"Node {node!r} expects {len(data['tensors'])} input tensors but the graph gives it {len(new_inputs)}."
            )
        layer = layer_for(node)
        if data["arguments"] is not None:
            tensor_map = {id(old): new for old, new in zip(data["tensors"], new_inputs)}
            args, kwargs = data["arguments"].fill_in(tensor_map)
            outputs = layer(*args, **_accepted_kwargs(layer, kwargs))
        else:
            outputs = layer(new_inputs[0] if len(new_inputs) == 1 else new_inputs)
        produced[node] = tree.flatten(outputs)

    inputs = [produced[n][0] for n in graph.inputs]
    outputs = [produced[n][i] for n, i in graph.outputs]
    return keras.Model(
        inputs=tree.pack_sequence_as(graph.inputs_struct, inputs),
        outputs=tree.pack_sequence_as(graph.outputs_struct, outputs),
        name=name or graph.name,
    )
