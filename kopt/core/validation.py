"""Input checks shared by kopt's public entry points, run before anything is built or changed.

A model whose weights hold NaN or Inf (a diverged training run, a corrupted checkpoint)
cannot be pruned, clustered or quantized meaningfully: magnitudes, centroids and ranges
computed from it are garbage, and the damage only shows much later as a useless int8
model. Every entry point therefore refuses such a model up front and names the weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kopt.core.errors import NonFiniteWeightsError

#: How many bad weights the message lists by name (all of them are in the error's ``weights``).
LISTED_WEIGHTS = 5


def _split_path(variable: keras.Variable) -> tuple[str, str]:
    path = getattr(variable, "path", None) or variable.name
    layer, _, weight = path.rpartition("/")
    return layer or "?", weight


def non_finite_weights(model_or_layer: keras.layers.Layer) -> list[tuple[str, str, int, int]]:
    """``(layer path, weight name, NaN count, Inf count)`` for every weight holding NaN or Inf."""
    bad = []
    seen: set[int] = set()
    for variable in model_or_layer.weights:
        if id(variable) in seen or not keras.backend.is_float_dtype(variable.dtype):
            continue
        seen.add(id(variable))
        values = np.asarray(keras.ops.convert_to_numpy(variable.value))
        if values.dtype.kind != "f":  # bfloat16 and other ml_dtypes: count in float32
            values = values.astype(np.float32)
        if np.isfinite(values).all():
            continue
        layer, weight = _split_path(variable)
        bad.append((layer, weight, int(np.isnan(values).sum()), int(np.isinf(values).sum())))
    return bad


def check_finite_weights(model_or_layer: Any, caller: str) -> None:
    """Raise :class:`~kopt.errors.NonFiniteWeightsError` when a weight of ``model_or_layer`` is NaN/Inf.

    ``caller`` names the public function (``"kopt.sparsity.prune_low_magnitude"``) for the
    message. Unbuilt layers (no weights yet) and non-Keras objects pass: other checks own them.
    """
    if not isinstance(model_or_layer, keras.layers.Layer) or not model_or_layer.built:
        return
    bad = non_finite_weights(model_or_layer)
    if not bad:
        return
    kind = "Model" if isinstance(model_or_layer, keras.Model) else "Layer"
    listed = "; ".join(
        f"layer {layer!r} weight {weight!r} ({nan} NaN, {inf} Inf)" for layer, weight, nan, inf in bad[:LISTED_WEIGHTS]
    )
    more = f"; and {len(bad) - LISTED_WEIGHTS} more" if len(bad) > LISTED_WEIGHTS else ""
    raise NonFiniteWeightsError(
        f"{caller}: {kind} {model_or_layer.name!r} has {len(bad)} weight(s) holding NaN or Inf: {listed}{more}. "
        "Nothing was changed. Such weights usually come from a training run that diverged or a corrupted "
        "checkpoint: reload good weights, or retrain (lower learning rate, gradient clipping) and check "
        "that every weight is finite (numpy.isfinite) before optimizing.",
        weights=bad,
    )


__all__ = ["check_finite_weights", "non_finite_weights"]
