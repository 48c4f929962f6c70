"""Per-layer sensitivity: how much accuracy each layer loses, alone, at each level of a technique.

For every eligible layer and every level, only that layer's weights are changed, one-shot
(no fine-tuning), the model is evaluated, and the layer's weights are put back bit for bit.
The table says which layers tolerate aggressive settings and which must be spared — the
"selective" pruning / clustering / quantization of the TFLite guides, from measurements.

Cost: one evaluation per (layer, level) plus the baseline, each a pass of ``model.predict_on_batch``
over at most ``limit`` samples (the compiled predict function is reused; only variable values
change between passes).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np

from kopt.analysis.table import LayerSensitivity, SensitivityTable
from kopt.analysis.techniques import (
    AUTO_PRESERVE_SHARE,
    NotEligible,
    Target,
    applicable,
    check_levels,
    check_technique,
    host_value,
    targets,
    transformed,
    zero_share,
)
from kopt.core.data import check_data
from kopt.core.errors import InvalidArgumentError, UnsupportedLayerError
from kopt.core.validation import check_finite_weights
from kopt.graph import analyze
from kopt.metrics import top1_predictions, top1_targets
from kopt.pipeline.training import as_arrays, num_samples

CALLER = "kopt.analysis.sensitivity"


def sensitivity(
    model: keras.Model,
    data: Any,
    *,
    technique: str = "prune",
    levels: Sequence[float | int] | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    limit: int | None = 2000,
    seed: int = 0,
    preserve_sparsity: bool | None = None,
) -> SensitivityTable:
    """Accuracy drop of each layer alone at each level of ``technique`` (one-shot, no fine-tuning).

    Args:
        model: a built Functional or Sequential model with one output (nested models are
            flattened, a shared layer is one row). It is never modified: each layer's weights
            are restored, bit for bit, after its levels — also when an error interrupts.
        data: ``(x, y)`` (or ``(x, y, sample_weight)``; weights are ignored), a
            ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` of ``(x, y)``. Labels are
            integer classes or one-hot; a single-unit output is a sigmoid (threshold 0.5).
        technique: ``"prune"`` (levels: sparsities in (0, 1), default ``(0.5, 0.75, 0.9)``),
            ``"cluster"`` (cluster counts, default ``(32, 16, 8, 4)``) or ``"quantize"``
            (weight bits 2..8, default ``(8, 4)``). See :mod:`kopt.analysis.techniques` for
            exactly what each does to a layer.
        levels: the levels to measure; the table orders them mildest first.
        layers: restrict the analysis to these layer names (default: every eligible layer).
        batch_size: samples per ``predict_on_batch`` call.
        limit: evaluate on at most this many samples (``None``: all of ``data``).
        seed: fixes the clustering initialisation (derived per layer as ``kopt.optimize`` does).
        preserve_sparsity: clustering only: keep zeros as an exact zero centroid. ``None``
            decides per layer: on when its clusterable weights are at least 10% exact zeros.

    Returns:
        a :class:`SensitivityTable`; ``drop = baseline accuracy - accuracy`` (negative when
        the change helped).
    """
    technique = check_technique(technique)
    levels_checked = check_levels(technique, levels)
    batch_size = _positive_int("batch_size", batch_size)
    limit = None if limit is None else _positive_int("limit", limit)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidArgumentError(f"seed must be an integer, got {seed!r}.")
    if preserve_sparsity not in (None, True, False):
        raise InvalidArgumentError(
            f"preserve_sparsity must be True, False or None (automatic), got {preserve_sparsity!r}."
        )
    if technique == "cluster" and preserve_sparsity and min(levels_checked) < 2:
        raise InvalidArgumentError(
            f"preserve_sparsity=True reserves one cluster for the zeros, so every cluster level must be >= 2; "
            f"got levels={levels_checked!r}. Drop level 1 or pass preserve_sparsity=False."
        )

    graph = analyze(model)
    if len(graph.outputs) != 1:
        raise InvalidArgumentError(
            f"Model {model.name!r} has {len(graph.outputs)} outputs; the sensitivity analysis measures the top-1 "
            "accuracy of a single output. Build a model of the output to analyse (keras.Model(inputs, output))."
        )
    check_finite_weights(model, CALLER)
    if not (isinstance(data, tuple) and len(data) >= 2 and data[1] is None):  # _load names missing labels
        check_data(model, data, argument="sensitivity data", loss=getattr(model, "loss", None))
    selected = _select_layers(graph, technique, layers)

    x, y = _load(model, data, limit)
    evaluator = _Evaluator(model, x, y, batch_size)
    baseline = evaluator.correct()
    total = evaluator.total

    rows = []
    for layer, path, weights in selected:
        originals = [host_value(w.variable) for w in weights]
        preserve = False
        if technique == "cluster":
            preserve = bool(preserve_sparsity) if preserve_sparsity is not None else (
                zero_share(originals) >= AUTO_PRESERVE_SHARE
            )
        accuracy, drop = [], []
        try:
            for level in levels_checked:
                if not applicable(technique, level, originals, preserve):
                    accuracy.append(math.nan)
                    drop.append(math.nan)
                    continue
                new_values = transformed(
                    technique, layer, weights, originals, level, seed=int(seed), preserve_sparsity=preserve
                )
                for weight, value in zip(weights, new_values):
                    weight.variable.assign(value)
                correct = evaluator.correct()
                accuracy.append(correct / total)
                drop.append((baseline - correct) / total)
        finally:
            for weight, value in zip(weights, originals):
                weight.variable.assign(value)
        rows.append(
            LayerSensitivity(
                name=layer.name,
                class_name=type(layer).__name__,
                parameters=int(sum(v.size for v in originals)),
                accuracy=tuple(accuracy),
                drop=tuple(drop),
                path=path,
                preserve_sparsity=preserve if technique == "cluster" else None,
            )
        )
    return SensitivityTable(
        technique=technique,
        levels=levels_checked,
        baseline_accuracy=baseline / total,
        rows=rows,
        samples=evaluator.samples,
        seed=int(seed),
        model_name=model.name,
    )


# ------------------------------------------------------------------ layers
def _select_layers(
    graph: Any, technique: str, names: Sequence[str] | None
) -> list[tuple[keras.layers.Layer, str, list[Target]]]:
    """``(layer, node path, weights)`` of the layers to analyse, in execution order."""
    from kopt.technique.wrapper import KoptWrapper

    eligible: dict[str, tuple[keras.layers.Layer, str, list[Target]]] = {}
    reasons: dict[str, str] = {}
    wrapped = []
    for layer in graph.layers():
        if isinstance(layer, KoptWrapper):
            wrapped.append(layer.name)
        try:
            weights = targets(technique, layer)
        except NotEligible as error:
            reasons.setdefault(layer.name, f"{type(layer).__name__}: {error}")
            continue
        if layer.name in eligible:
            raise InvalidArgumentError(
                f"Two layers of model {graph.name!r} are named {layer.name!r} (in different sub-models); the "
                "sensitivity table and policies identify layers by name: rename one of them."
            )
        eligible[layer.name] = (layer, graph.nodes_of(layer)[0], weights)

    if not eligible:
        hint = (
            f" Layers {wrapped[:5]} are kopt training wrappers: call kopt.strip(model) first." if wrapped else ""
        )
        raise UnsupportedLayerError(
            f"Model {graph.name!r} has no layer that {technique!r} can change.{hint} Layers and why: "
            + "; ".join(f"{n} ({r})" for n, r in list(reasons.items())[:8])
            + ("; ..." if len(reasons) > 8 else "")
        )
    if names is None:
        return list(eligible.values())
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise InvalidArgumentError(f"layers is empty: name at least one of the eligible layers {list(eligible)}.")
    selected = []
    for name in dict.fromkeys(names):
        if name in eligible:
            selected.append(eligible[name])
        elif name in reasons:
            raise InvalidArgumentError(
                f"Layer {name!r} cannot be changed by {technique!r} ({reasons[name]}); "
                f"eligible layers: {list(eligible)}."
            )
        else:
            raise InvalidArgumentError(
                f"Model {graph.name!r} has no layer {name!r}; eligible layers for {technique!r}: {list(eligible)}."
            )
    order = {name: i for i, name in enumerate(eligible)}
    return sorted(selected, key=lambda entry: order[entry[0].name])


# ------------------------------------------------------------------ data
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _load(model: keras.Model, data: Any, limit: int | None) -> tuple[Any, np.ndarray]:
    """``(x, y)`` arrays from whatever the user gave, with a message that says labels are needed."""
    if isinstance(data, tuple) and len(data) >= 2 and data[1] is None:
        raise InvalidArgumentError(
            "The sensitivity analysis needs labelled data to measure accuracy, but the labels are None: "
            "give (x, y) with integer or one-hot labels."
        )
    rank = None
    try:
        rank = len(model.inputs[0].shape) - 1
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    try:
        x, y = as_arrays(data, limit, sample_rank=rank)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(
            f"The sensitivity analysis needs labelled data to measure accuracy: {error} Give (x, y) arrays "
            "or a dataset yielding (x, y) batches."
        ) from None
    if y is None or (isinstance(y, np.ndarray) and y.dtype == object):
        raise InvalidArgumentError("The data has no usable labels: give (x, y) with integer or one-hot labels.")
    return x, y


class _Evaluator:
    """Top-1 accuracy of the model on fixed arrays, as a count of correct predictions."""

    def __init__(self, model: keras.Model, x: Any, y: np.ndarray, batch_size: int):
        self.model = model
        self.samples = num_samples(x)
        if self.samples == 0:
            raise InvalidArgumentError("The data yielded no samples.")
        if len(y) != self.samples:
            raise InvalidArgumentError(f"The data has {self.samples} inputs but {len(y)} labels.")
        self.batches = [
            keras.tree.map_structure(lambda a, s=start: a[s : s + batch_size], x)
            for start in range(0, self.samples, batch_size)
        ]
        self.labels = y
        self.targets: np.ndarray | None = None
        self.total = 0

    def _predict(self) -> np.ndarray:
        parts = []
        for batch in self.batches:
            out = self.model.predict_on_batch(batch)
            if isinstance(out, (list, tuple, dict)):
                out = keras.tree.flatten(out)[0]
            parts.append(np.asarray(out))
        return np.concatenate(parts)

    def correct(self) -> int:
        predictions = self._predict()
        if self.targets is None:
            self.targets = top1_targets(self.labels, predictions)
            self.total = int(self.targets.size)
        return int(np.count_nonzero(top1_predictions(predictions) == self.targets))


__all__ = ["sensitivity"]
