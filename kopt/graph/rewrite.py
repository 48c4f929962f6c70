"""Model-level rewrites built on analyze + rebuild: the entry point every technique uses to wrap layers."""

from __future__ import annotations

from typing import Callable

import keras

from kopt.core.errors import GraphRewriteError
from kopt.graph.model_graph import ModelGraph, analyze
from kopt.graph.rebuild import clone_layer


def map_layers(
    model: keras.Model,
    fn: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    *,
    clone: bool = True,
    name: str | None = None,
    graph: ModelGraph | None = None,
) -> keras.Model:
    """A new model in which each distinct layer is replaced by ``fn(layer)``.

    ``fn`` returns the replacement (e.g. a wrapper around ``clone_layer(layer)``) or
    ``None`` to keep the layer. Kept layers are copied when ``clone`` is true, so the
    returned model shares no variables with ``model`` and training it never changes
    the user's original. A shared layer is replaced once and stays shared; nested
    sub-models are flattened, and a layer whose name another nested layer has too is
    copied under its flattened name (:meth:`ModelGraph.flat_names`) before ``fn`` sees it.
    ``fn`` must not modify the layer it is given. A kept layer that cannot be copied from its config
    (:func:`clone_layer` raises) is never rebuilt from it: the new model shares that one layer. ``graph``: ``analyze(model)`` when the caller
    has it already (its layers are then the ones ``fn`` sees; it is rewritten in place).
    """
    graph = analyze(model) if graph is None else graph
    flat_names = graph.flat_names()
    for layer in graph.layers():
        given = layer
        if flat_names[id(layer)] != layer.name:
            given = clone_layer(layer, name=flat_names[id(layer)])
        replacement = fn(given)
        if replacement is None:
            replacement = _copy(given) if clone and given is layer else given
        if replacement is not layer:
            graph.replace_layer(layer, replacement)
    return graph.rebuild(name=name)


def _copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    try:
        return clone_layer(layer)
    except GraphRewriteError:  # a config that does not round-trip: share the layer rather than rebuild it wrongly
        return layer
