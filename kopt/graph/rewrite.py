"""Model-level rewrites built on analyze + rebuild: the entry point every technique uses to wrap layers."""

from __future__ import annotations

from typing import Callable

import keras

from kopt.graph.model_graph import analyze
from kopt.graph.rebuild import clone_layer


def map_layers(
    model: keras.Model,
    fn: Callable[[keras.layers.Layer], keras.layers.Layer | None],
    *,
    clone: bool = True,
    name: str | None = None,
) -> keras.Model:
    """A new model in which each distinct layer is replaced by ``fn(layer)``.

    ``fn`` returns the replacement (e.g. a wrapper around ``clone_layer(layer)``) or
    ``None`` to keep the layer. Kept layers are copied when ``clone`` is true, so the
    returned model shares no variables with ``model`` and training it never changes
    the user's original. A shared layer is replaced once and stays shared; nested
    sub-models are flattened. ``fn`` must not modify the layer it is given.
    """
    graph = analyze(model)
    for layer in graph.layers():
        replacement = fn(layer)
        if replacement is None:
            replacement = clone_layer(layer) if clone else layer
        if replacement is not layer:
            graph.replace_layer(layer, replacement)
    return graph.rebuild(name=name)
