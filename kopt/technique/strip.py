"""``kopt.strip``: remove every kopt wrapper, keeping the weights the wrappers deploy."""

from __future__ import annotations

import keras

from kopt.core.compile_settings import CompileSettings
from kopt.core.errors import CompileSettingsError
from kopt.graph import map_layers
from kopt.graph.model_type import like_input
from kopt.technique.wrapper import KoptWrapper


def strip(model: keras.Model) -> keras.Model:
    """A new plain Keras model equal to ``model`` at inference, without kopt wrappers.

    Pruning masks are applied and cluster centroids gathered into the kernels. The
    returned model shares no variables with ``model``. Wrappers whose :meth:`strip`
    keeps them (quantization keeps its fake-quant ranges for lowering) stay in place.
    A Sequential model gives a Sequential model. A compiled ``model`` gives a model compiled
    with the same settings and a fresh optimizer, so the next stage of a hand-written loop
    (``kopt.prepare``) can fine-tune it without compiling again.
    """
    stripped = map_layers(model, lambda layer: layer.strip() if isinstance(layer, KoptWrapper) else None)
    stripped = like_input(model, stripped, "kopt.strip")
    if getattr(model, "compiled", False):
        try:
            CompileSettings.from_model(model).compile(stripped)
        except CompileSettingsError:  # compiled without a loss: nothing to carry over
            pass
    return stripped
