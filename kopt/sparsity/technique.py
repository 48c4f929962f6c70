"""Pruning as a registered technique (:mod:`kopt.technique.registry`): settings, weights, wrap, one-shot."""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from kopt.core.errors import GraphRewriteError, PolicyError
from kopt.core.layers import layout_of
from kopt.graph import analyze, clone_layer, map_layers
from kopt.graph.sublayers import sublayer_key
from kopt.sparsity.masks import magnitude_mask
from kopt.sparsity.prunable import NotPrunable, plan_layer, prunable_weights
from kopt.sparsity.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from kopt.sparsity.settings import PruneSettings
from kopt.sparsity.wrapper import PruneWrapper, count_steps_in_place
from kopt.technique.inplace import choose_sublayers, closed_blocks, wrap_sublayers
from kopt.technique.registry import NotEligible, Target, Technique, float_variable, register_technique


def prune_schedule(settings: PruneSettings, steps: int | None, *, layer: str = "") -> PruningSchedule:
    """The schedule for ``settings``; ``end_step=None`` ends at 2/3 of ``steps`` (the stage's training steps)."""
    end = settings.end_step
    if end is None:
        if settings.schedule == "constant":
            end = -1
        elif steps is None:
            raise PolicyError(
                f"Cannot place the end of the pruning schedule{f' of layer {layer!r}' if layer else ''}: "
                "prune.end_step is not set and the number of training steps is unknown. Pass steps_per_epoch= "
                "(or steps=), or set prune.end_step in the policy."
            )
        else:
            end = max(settings.begin_step + 1, round(steps * 2 / 3))
    if settings.schedule == "constant":
        return ConstantSparsity(settings.sparsity, settings.begin_step, end, settings.frequency)
    if end <= settings.begin_step:
        raise PolicyError(
            f"prune.end_step={end} must be after prune.begin_step={settings.begin_step} for a polynomial schedule."
        )
    return PolynomialDecay(settings.initial_sparsity, settings.sparsity, settings.begin_step, end, frequency=settings.frequency)


class Pruning(Technique):
    name = "prune"
    order = 10
    settings_type = PruneSettings
    default_levels = (0.5, 0.75, 0.9)
    level_meaning = "sparsities (numbers strictly between 0 and 1), e.g. (0.5, 0.75, 0.9)"
    levels_descend = False
    wraps_in_place = True

    def weights(self, layer: keras.layers.Layer) -> list[Target]:
        try:
            weights = prunable_weights(layer)
        except NotPrunable as error:
            raise NotEligible(str(error)) from None
        found = [Target(w.name, w.variable) for w in weights if float_variable(w.variable)]
        if not found:
            raise NotEligible("it has no float weight to prune")
        return found

    def on_by_default(self, layer: keras.layers.Layer) -> bool:
        """Not the layers the layer-layout table keeps dense unless a rule asks (depthwise kernels: a handful of
        weights per channel, so pruning them costs accuracy and saves almost nothing; TFMOT does the same)."""
        layout = layout_of(layer)
        return layout is None or layout.prune_by_default

    def wrap(
        self,
        model: keras.Model,
        per_layer: Mapping[str, PruneSettings],
        *,
        steps: int | None = None,
        notes: list[str] | None = None,
        **_: Any,
    ) -> keras.Model:
        """Each named layer in a PruneWrapper with its own schedule (``steps`` places open-ended ones).

        A layer whose weights cannot take its M:N pattern stays dense and is listed in ``notes``.
        """
        graph = analyze(model)
        calls: dict[int, int] = {}
        for node in graph.layer_nodes():
            calls[id(graph.layer(node))] = calls.get(id(graph.layer(node)), 0) + 1
        chosen: dict[int, tuple[PruneSettings, PruningSchedule]] = {}
        for layer in graph.layers():
            settings = per_layer.get(layer.name)
            if settings is None:
                continue
            try:
                weight_plan = plan_layer(layer, settings.m_by_n)
            except NotPrunable as reason:
                if notes is not None:
                    notes.append(f"{layer.name}: not pruned ({reason})")
                continue
            if notes is not None:
                for weight, why in weight_plan.skipped.items():
                    notes.append(f"{layer.name}.{weight}: stays dense ({why})")
            chosen[id(layer)] = (settings, prune_schedule(settings, steps, layer=layer.name))
        nested = self._plan_nested(graph, per_layer, steps, notes)
        if not chosen and not any(nested.values()):
            raise PolicyError(f"The policy prunes no layer of model {model.name!r}: no planned layer can be pruned.")

        def wrap_layer(layer: keras.layers.Layer) -> keras.layers.Layer | None:
            if nested.get(layer.name):
                planned = nested[layer.name]

                def choose(path: str, sub: keras.layers.Layer) -> PruneWrapper | None:
                    if path not in planned:
                        return None
                    settings, schedule = planned[path]
                    return PruneWrapper(sub, schedule=schedule, m_by_n=settings.m_by_n, name=f"prune_{sub.name}")

                try:
                    wrapped = wrap_sublayers(layer, choose, name=f"prune_{layer.name}")
                    return count_steps_in_place(wrapped, calls.get(id(layer), 1))
                except GraphRewriteError as error:  # kept whole: the coverage warning names its kernels
                    if notes is not None:
                        notes.append(f"{layer.name}: its sublayers are not pruned ({error})")
                    return None
            if id(layer) not in chosen:
                return None
            settings, schedule = chosen[id(layer)]
            return PruneWrapper(
                clone_layer(layer),
                schedule=schedule,
                m_by_n=settings.m_by_n,
                calls_per_step=calls[id(layer)],
                name=f"prune_{layer.name}",
            )

        return map_layers(model, wrap_layer)

    @staticmethod
    def _plan_nested(
        graph: Any, per_layer: Mapping[str, PruneSettings], steps: int | None, notes: list[str] | None
    ) -> dict[str, dict[str, tuple[PruneSettings, PruningSchedule]]]:
        """``block -> {sublayer path: (settings, schedule)}`` for the planned sublayers of blocks kept whole."""
        nested: dict[str, dict[str, tuple[PruneSettings, PruningSchedule]]] = {}
        for name, block in closed_blocks(graph).items():

            def choose(path: str, sub: keras.layers.Layer, name: str = name) -> Any:
                settings = per_layer.get(sublayer_key(name, path))
                if settings is None:
                    return None
                try:
                    plan_layer(sub, settings.m_by_n)
                except NotPrunable as reason:
                    if notes is not None:
                        notes.append(f"{sublayer_key(name, path)}: not pruned ({reason})")
                    return None
                return settings, prune_schedule(settings, steps, layer=sublayer_key(name, path))

            nested[name] = choose_sublayers(block, choose)
        return nested

    def level(self, value: Any) -> float | None:
        real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        return float(value) if real and math.isfinite(float(value)) and 0.0 < float(value) < 1.0 else None

    def one_shot(
        self,
        layer: keras.layers.Layer,
        weights: Sequence[Target],
        values: Sequence[np.ndarray],
        level: float | int,
        *,
        seed: int = 0,
        preserve_sparsity: bool = False,
    ) -> list[np.ndarray]:
        """Each weight times its magnitude mask at sparsity ``level`` (what ``PruneWrapper`` applies)."""
        pruned = []
        for value in values:
            mask = np.asarray(ops.convert_to_numpy(magnitude_mask(ops.convert_to_tensor(value), float(level))))
            pruned.append((value * mask.astype(value.dtype)).astype(value.dtype))
        return pruned



PRUNING = register_technique(Pruning())

__all__ = ["PRUNING", "Pruning", "prune_schedule"]
