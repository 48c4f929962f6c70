"""``prune_low_magnitude``: wrap a model's prunable layers (or one layer) in :class:`PruneWrapper`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras

from kopt.core.errors import (
    GraphRewriteError,
    InvalidArgumentTypeError,
    KoptWarning,
    UnsupportedLayerError,
    UnsupportedModelError,
    listing,
)
from kopt.core.validation import check_finite_weights
from kopt.graph import analyze, clone_layer, map_layers
from kopt.graph.model_type import like_input
from kopt.graph.sublayers import sublayer_key
from kopt.sparsity.prunable import NotPrunable, is_unknown_with_weights, plan_layer
from kopt.sparsity.schedules import PruningSchedule
from kopt.sparsity.wrapper import PruneWrapper, check_options, count_steps_in_place, warn_skipped_weights
from kopt.technique import coverage
from kopt.technique.inplace import choose_sublayers, closed_blocks, wrap_sublayers
from kopt.technique.wrapper import KoptWrapper


@dataclass
class PruningReport:
    """What ``prune_low_magnitude`` did to each layer of a model.

    ``wrapped`` maps layer name -> names of the weights being pruned; ``skipped`` maps layer
    name -> why it was left alone; ``dense_weights`` maps layer name -> {weight: reason} for
    weights of wrapped layers that stay dense (e.g. M:N on a depthwise kernel).
    """

    wrapped: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    dense_weights: dict[str, dict[str, str]] = field(default_factory=dict)
    coverage: Any = None  # kopt.coverage.Coverage: kernel weights reached, over the whole model

    def __str__(self) -> str:
        lines = [f"Pruning: {len(self.wrapped)} layer(s) wrapped, {len(self.skipped)} left alone."]
        for name, weights in self.wrapped.items():
            lines.append(f"  pruned   {name}: {', '.join(weights)}")
            for weight, reason in self.dense_weights.get(name, {}).items():
                lines.append(f"           {name}.{weight} stays dense: {reason}")
        for name, reason in self.skipped.items():
            lines.append(f"  skipped  {name}: {reason}")
        if self.coverage is not None and self.coverage.short:
            lines.append(self.coverage.message())
        return "\n".join(lines)


def prune_low_magnitude(
    to_prune: keras.Model | keras.layers.Layer,
    schedule: PruningSchedule | None = None,
    m_by_n: Sequence[int] | None = None,
    block_size: Sequence[int] = (1, 1),
    *,
    return_report: bool = False,
    layer_filter: Callable[[keras.layers.Layer], bool] | None = None,
) -> Any:
    """Wrap every prunable layer of a model (or one layer) so training prunes it by magnitude.

    Args:
        to_prune: a Functional or Sequential model (nested models are flattened and shared
            layers stay shared; the model passed in is not modified) or a single layer.
        schedule: :class:`ConstantSparsity` or :class:`PolynomialDecay`; default
            ``ConstantSparsity(0.5, begin_step=0)``.
        m_by_n: ``(m, n)``: at least ``m`` zeros in every ``n`` consecutive weights along the
            input-channel axis of the weight as the deployed TFLite op stores it (innermost
            axis of FULLY_CONNECTED ``[out, in]`` and CONV_2D ``OHWI``; Keras axis ``in`` of a
            Dense ``(in, out)`` or Conv2D ``(kh, kw, in, out)`` kernel). In a model, layers whose
            input-channel count is not a multiple of ``n`` (a first conv on RGB input) and
            weights without an input-channel axis (depthwise kernels, embeddings) stay dense
            and are listed in the report; for a single layer that cannot take the pattern at
            all, an :class:`~kopt.errors.UnsupportedLayerError` is raised.
        block_size: ``(rows, cols)`` blocks over the last two axes of each weight (Keras
            layout) scored by mean magnitude and pruned together.
        return_report: also return a :class:`PruningReport` (model input only).
        layer_filter: model input only: called on each layer kopt could prune; ``False``
            leaves it dense (reported as "excluded by layer_filter"). Default: prune all.

    Returns:
        The new model (or wrapper), or ``(model, report)`` with ``return_report=True``.
        Layers kopt does not know are left unwrapped, listed in the report and, when they
        hold weights, named in a warning. Train with ``model.fit`` as usual; pruning
        advances inside each training step, on every backend.
    """
    schedule, m_by_n, block_size = check_options(schedule, m_by_n, block_size)
    check_finite_weights(to_prune, "kopt.sparsity.prune_low_magnitude")
    if layer_filter is not None and not callable(layer_filter):
        raise InvalidArgumentTypeError(f"layer_filter must be a callable taking a layer, got {layer_filter!r}.")
    if isinstance(to_prune, keras.Model):
        model, report = _prune_model(to_prune, schedule, m_by_n, block_size, layer_filter)
        return (model, report) if return_report else model
    if isinstance(to_prune, keras.layers.Layer):
        if return_report or layer_filter is not None:
            raise InvalidArgumentTypeError("return_report and layer_filter need a model; a single layer either is wrapped or raises.")
        return _prune_layer(to_prune, schedule, m_by_n, block_size)
    raise UnsupportedModelError(
        f"prune_low_magnitude expects a keras.Model or keras.layers.Layer, got {type(to_prune).__name__}."
    )


def _prune_layer(layer: keras.layers.Layer, schedule: PruningSchedule, m_by_n: Any, block_size: Any) -> PruneWrapper:
    if isinstance(layer, KoptWrapper):
        raise UnsupportedLayerError(f"Layer {layer.name!r} is already wrapped by kopt ({type(layer).__name__}).")
    wrapper = PruneWrapper(layer, schedule=schedule, m_by_n=m_by_n, block_size=block_size)
    if layer.built:
        input_shape = _build_shape(layer)
        wrapper.build(input_shape)
        warn_skipped_weights(wrapper)
    return wrapper


def _build_shape(layer: keras.layers.Layer) -> Any:
    config = layer.get_build_config() or {}
    return config.get("input_shape")


def _prune_model(
    model: keras.Model,
    schedule: PruningSchedule,
    m_by_n: Any,
    block_size: Any,
    layer_filter: Callable[[keras.layers.Layer], bool] | None = None,
) -> tuple[keras.Model, PruningReport]:
    graph = analyze(model)
    flat = graph.flat_names()  # map_layers hands fn a copy under this name when names clash
    report = PruningReport()
    calls: dict[str, int] = {}
    for node in graph.layer_nodes():
        key = flat[id(graph.layer(node))]
        calls[key] = calls.get(key, 0) + 1

    decisions: dict[str, Any] = {}
    unknown: list[str] = []
    blocks = closed_blocks(graph)
    nested: dict[str, dict[str, Any]] = {}  # closed block -> {sublayer path: plan}, wrapped in place
    for layer in graph.layers():
        decision = _decide(layer, m_by_n, block_size, report, layer_filter)
        decisions[flat[id(layer)]] = decision
        if decision is None and flat[id(layer)] in blocks:
            nested[flat[id(layer)]] = _decide_nested(flat[id(layer)], layer, m_by_n, block_size, report, layer_filter)
            if nested[flat[id(layer)]]:
                continue
        if decision is None and is_unknown_with_weights(layer) and not isinstance(layer, KoptWrapper):
            unknown.append(f"{layer.name} ({type(layer).__name__})")
    if not report.wrapped:
        wrapped = [getattr(layer, "layer", layer).name for layer in graph.layers() if isinstance(layer, KoptWrapper)]
        if wrapped:
            kinds = sorted({type(layer).__name__ for layer in graph.layers() if isinstance(layer, KoptWrapper)})
            raise UnsupportedLayerError(
                f"Model {model.name!r} is already wrapped for training: {listing(wrapped)} by {', '.join(kinds)}. "
                "Strip first: call kopt.strip(model), then prune the stripped model (its zeros are kept)."
            )
        reasons = [f"{name}: {why}" for name, why in report.skipped.items()]
        raise UnsupportedLayerError(
            f"No layer of model {model.name!r} can be pruned with these options ({listing(reasons, 5)}).\n"
            "Hint: prune_low_magnitude(..., return_report=True) on a model with a prunable layer lists every decision."
        )
    if unknown:
        warnings.warn(
            f"Left unpruned because kopt does not know their weights: {', '.join(unknown)}. "
            "Give a custom layer a `get_prunable_weights()` method to opt in "
            "(prune_low_magnitude(..., return_report=True) lists every decision).",
            KoptWarning,
            stacklevel=3,
        )

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if nested.get(layer.name):
            planned = nested[layer.name]

            def choose(path: str, sub: keras.layers.Layer) -> PruneWrapper | None:
                if path not in planned:
                    return None
                options = dict(schedule=schedule, m_by_n=m_by_n, block_size=block_size)
                return PruneWrapper(sub, **options, name=f"prune_{sub.name}")

            try:
                wrapped = wrap_sublayers(layer, choose, name=f"prune_{layer.name}")
                return count_steps_in_place(wrapped, calls[layer.name])
            except GraphRewriteError as error:  # kept whole: coverage names its kernels with this reason
                report.skipped[layer.name] = (
                    f"kopt keeps this composite layer whole and cannot wrap its sublayers in place ({error}); make "
                    "its config round-trip (get_config / from_config) or give it a `get_prunable_weights()` method"
                )
                for path in planned:
                    report.wrapped.pop(sublayer_key(layer.name, path), None)
                return None
        if decisions.get(layer.name) is None:
            return None
        return PruneWrapper(
            clone_layer(layer),
            schedule=schedule,
            m_by_n=m_by_n,
            block_size=block_size,
            calls_per_step=calls[layer.name],
            name=f"prune_{layer.name}",
        )

    pruned = like_input(model, map_layers(model, wrap, graph=graph), "prune_low_magnitude")
    reasons = {**report.skipped}
    reasons.update({f"{layer}.{weight}": why for layer, dense in report.dense_weights.items() for weight, why in dense.items()})
    report.coverage = coverage.warn_pruning(pruned, reasons=reasons, stacklevel=4)
    return pruned, report


def _decide_nested(
    name: str,
    block: keras.layers.Layer,
    m_by_n: Any,
    block_size: Any,
    report: PruningReport,
    layer_filter: Callable[[keras.layers.Layer], bool] | None,
) -> dict[str, Any]:
    """Plans for the sublayers of a closed block (wrapped in place), reported as ``"block/path"``."""

    def decide(path: str, sub: keras.layers.Layer) -> Any:
        try:
            plan = plan_layer(sub, m_by_n, block_size)
        except NotPrunable:
            return None
        if layer_filter is not None and not layer_filter(sub):
            report.skipped[sublayer_key(name, path)] = "excluded by layer_filter"
            return None
        report.wrapped[sublayer_key(name, path)] = [w.name for w in plan.prune]
        if plan.skipped:
            report.dense_weights[sublayer_key(name, path)] = dict(plan.skipped)
        return plan

    planned = choose_sublayers(block, decide)
    if planned:
        report.skipped.pop(name, None)
    return planned


def _decide(
    layer: keras.layers.Layer,
    m_by_n: Any,
    block_size: Any,
    report: PruningReport,
    layer_filter: Callable[[keras.layers.Layer], bool] | None = None,
) -> Any:
    """Record in ``report`` whether ``layer`` gets wrapped; return its plan or ``None``."""
    if isinstance(layer, KoptWrapper):
        report.skipped[layer.name] = f"already wrapped by kopt ({type(layer).__name__})"
        return None
    try:
        plan = plan_layer(layer, m_by_n, block_size)
    except NotPrunable as reason:
        report.skipped[layer.name] = str(reason)
        return None
    if layer_filter is not None and not layer_filter(layer):
        report.skipped[layer.name] = "excluded by layer_filter"
        return None
    report.wrapped[layer.name] = [w.name for w in plan.prune]
    if plan.skipped:
        report.dense_weights[layer.name] = dict(plan.skipped)
    return plan
