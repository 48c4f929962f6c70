"""Give a rewritten model the type of the model it came from: a ``Sequential`` in gives a
``Sequential`` out.

kopt rewrites every model as a DAG and rebuilds a Functional model from it. User code
written for Sequential models (``model.layers[i]``, ``model.add``, TFMOT's tutorials) breaks
when a Sequential comes back Functional, so the technique entry points (pruning, clustering,
quantization, strip) pass their result through :func:`like_input`.
"""

from __future__ import annotations

import warnings

import keras

from kopt.core.errors import KoptWarning
from kopt.graph.model_graph import analyze


def linear_layers(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The layers of ``model`` in call order when it is a plain chain (one input, one output,
    each layer called once on the previous layer's output, no raw ``keras.ops`` calls); else None."""
    graph = analyze(model)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1 or graph.outputs[0][1] != 0:
        return None
    previous = graph.inputs[0]
    layers: list[keras.layers.Layer] = []
    for node in graph.topological_nodes()[1:]:
        data = graph.dag.nodes[node]
        if data["kind"] != "layer" or len(data["outputs"]) != 1:
            return None
        edges = list(graph.dag.in_edges(node, data=True))
        if len(edges) != 1 or edges[0][0] != previous or edges[0][2]["src_index"] != 0:
            return None
        if data["arguments"] is not None and len(data["tensors"]) != 1:
            return None
        layers.append(graph.layer(node))
        previous = node
    if graph.outputs[0][0] != previous or len({id(layer) for layer in layers}) != len(layers):
        return None
    return layers


def like_input(original: object, rebuilt: keras.Model, what: str = "kopt") -> keras.Model:
    """``rebuilt`` as a ``keras.Sequential`` when ``original`` is one, else ``rebuilt`` itself.

    The layers are reused (no copy), so weights and wrappers are the ones ``rebuilt`` holds.
    When the rewrite made the model non-linear (it cannot be a Sequential), a warning names
    the reason and the Functional model is returned.
    """
    if not isinstance(original, keras.Sequential) or isinstance(rebuilt, keras.Sequential):
        return rebuilt
    layers = linear_layers(rebuilt)
    if layers is None:
        warnings.warn(
            f"{what}: Sequential model {original.name!r} became a non-linear graph, so it is returned as a "
            "Functional model (index layers by name, e.g. model.get_layer(...), not by position).",
            KoptWarning,
            stacklevel=3,
        )
        return rebuilt
    source = rebuilt.inputs[0]
    first = keras.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=source.name)
    model = keras.Sequential([first, *layers], name=rebuilt.name, trainable=rebuilt.trainable)
    return model
