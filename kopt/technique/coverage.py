"""How much of a model a technique reaches, and a loud warning when it reaches less than asked.

A technique wraps the layers it knows; kernels it cannot see (a Conv2D inside a custom
composite layer, a layer without a config) stay as they were. This module counts, over every
kernel of the wrapped model (each float trainable weight of rank >= 2 but a bias, found through all
sublayers, so kernels hidden inside composite layers count), which ones the technique's wrappers
reach, and says which are left and why:

* pruning: warn when the reachable sparsity (requested sparsity x share of kernel weights
  wrapped) is below 90 % of the requested one;
* clustering and QAT: warn for every kernel left unclustered / in float, except those the
  caller chose to leave out (``excluded`` layer names).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from kopt.core.errors import CoverageWarning, InvalidArgumentError
from kopt.graph import analyze
from kopt.graph.sublayers import nested_sublayers, sublayer_key
from kopt.technique.inplace import InPlaceWrapped

#: Pruning must reach at least this share of the requested sparsity over all kernels.
PRUNE_REACH = 0.9
#: Every CoverageWarning message starts with this (reports pick the lines out by it).
PREFIX = "Coverage:"


@dataclass(frozen=True)
class Kernel:
    """One kernel of a model: its variable path, its top-level layer (the graph node) and its size."""

    path: str
    top: str
    top_class: str
    inside_composite: bool
    size: int
    #: The class of the layer that owns the variable (a sublayer, for a kernel inside a composite layer).
    owner: str = ""
    #: Whether its composite layer has sublayers wrapped in place (kept whole, but reached where kopt can).
    in_place: bool = False
    #: Inside such a block: the plan key of its sublayer (``"block/attn/qkv"``), which ``excluded`` may name.
    key: str = ""


@dataclass
class Coverage:
    """What a technique reached: kernel elements reached / total, and the kernels it missed with reasons."""

    technique: str
    total: int = 0
    reached: int = 0
    missed: list[tuple[Kernel, str]] = field(default_factory=list)
    requested_sparsity: float | None = None
    reachable_sparsity: float | None = None

    @property
    def fraction(self) -> float:
        return self.reached / self.total if self.total else 1.0

    @property
    def short(self) -> bool:
        """Less than asked: pruning under 90 % of the requested sparsity; otherwise any kernel missed."""
        if self.technique == "prune":
            requested = self.requested_sparsity or 0.0
            return requested > 0 and (self.reachable_sparsity or 0.0) < PRUNE_REACH * requested
        return bool(self.missed)

    def message(self, limit: int = 12) -> str:
        verb = {"prune": "pruning", "cluster": "clustering", "quantize": "quantization-aware training"}[self.technique]
        head = f"{PREFIX} {verb} reaches {self.reached}/{self.total} kernel weights ({100 * self.fraction:.1f} %)"
        if self.technique == "prune":
            head += (
                f": at most {100 * (self.reachable_sparsity or 0):.1f} % sparsity over all kernels for the "
                f"{100 * (self.requested_sparsity or 0):.1f} % requested"
            )
        lines = [head + f"; {len(self.missed)} kernel(s) left out:"]
        for kernel, reason in self.missed[:limit]:
            lines.append(f"  - {kernel.path} ({kernel.size} weights, in layer {kernel.top!r} {kernel.top_class}): {reason}")
        if len(self.missed) > limit:
            lines.append(f"  - ... and {len(self.missed) - limit} more")
        return "\n".join(lines)

    def warn(self, stacklevel: int = 3) -> None:
        """Emit a :class:`CoverageWarning` when the technique fell short."""
        if self.short:
            warnings.warn(self.message(), CoverageWarning, stacklevel=stacklevel)


def _kopt_layer(layer: keras.layers.Layer) -> bool:
    return bool(getattr(layer, "kopt_internal", False))


def _own_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    """Variables the layer created itself (not its sublayers')."""
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def _is_kernel(variable: keras.Variable) -> bool:
    if variable.name == "bias":  # an EinsumDense bias has rank 2 (heads, key_dim) but is no kernel
        return False
    return bool(variable.trainable) and len(variable.shape) >= 2 and "float" in str(variable.dtype)


def _in_place(layer: keras.layers.Layer) -> bool:
    """A block kept whole whose sublayers a technique wrapped in place (:mod:`kopt.technique.inplace`)."""
    return isinstance(layer, InPlaceWrapped)


def _sublayer_keys(block: keras.layers.Layer) -> dict[int, str]:
    """``id(variable) -> "block/path"`` of the sublayer holding it (a wrapper's path for its inner layer's)."""
    keys: dict[int, str] = {}
    for path, sub in nested_sublayers(block):
        variables = sub.weights if _kopt_layer(sub) else _own_variables(sub)
        for variable in variables:
            keys.setdefault(id(variable), sublayer_key(block.name, path))
    return keys


def _top_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return analyze(model).layers()


def kernels(model: keras.Model) -> dict[int, Kernel]:
    """Every kernel of ``model`` keyed by ``id(variable)`` (kopt's own wrapper variables excluded)."""
    found: dict[int, Kernel] = {}
    for top in _top_layers(model):
        wrapped = top
        while _kopt_layer(wrapped) and isinstance(getattr(wrapped, "layer", None), keras.layers.Layer):
            wrapped = wrapped.layer
        keys = _sublayer_keys(wrapped) if _in_place(top) else {}
        for layer in top._flatten_layers(include_self=True, recursive=True):
            if _kopt_layer(layer):
                continue
            for variable in _own_variables(layer):
                if id(variable) in found or not _is_kernel(variable):
                    continue
                found[id(variable)] = Kernel(
                    path=variable.path,
                    top=wrapped.name,
                    top_class=type(wrapped).__name__,
                    inside_composite=layer is not wrapped and (not _kopt_layer(top) or _in_place(top)),
                    size=int(np.prod(variable.shape)),
                    owner=type(layer).__name__,
                    in_place=_in_place(top),
                    key=keys.get(id(variable), ""),
                )
    return found


def reached_variables(model: keras.Model, technique: str) -> set[int]:
    """``id``s of the variables the technique's wrappers act on (their ``reached_variables()``)."""
    return {
        id(variable)
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if getattr(layer, "technique", None) == technique
        for variable in layer.reached_variables()
    }


def _reason(kernel: Kernel, technique: str, reasons: dict[str, str]) -> str:
    weight = f"{kernel.top}.{kernel.path.split('/')[-1]}"
    if weight in reasons or kernel.top in reasons:
        return reasons.get(weight) or reasons[kernel.top]
    if kernel.inside_composite and kernel.in_place:
        return (
            f"inside composite layer {kernel.top!r} ({kernel.top_class}), kept whole: kopt wraps its sublayers in "
            f"place, but this weight of its {kernel.owner} is not one kopt can "
            + {
                "prune": "prune (give that layer a `get_prunable_weights()` method)",
                "cluster": "cluster (give that layer a `get_clusterable_weights()` method)",
                "quantize": "quantize (register a QuantizeConfig for its class: kopt.quantization.register)",
            }[technique]
        )
    if kernel.inside_composite:
        return (
            f"inside composite layer {kernel.top!r} ({kernel.top_class}), which kopt does not open; "
            + {
                "prune": "give it a `get_prunable_weights()` method (kopt.sparsity.PrunableLayer) or build the "
                "model from its sublayers",
                "cluster": "give it a `get_clusterable_weights()` method or build the model from its sublayers",
                "quantize": "register a QuantizeConfig for it (kopt.quantization.register) or build the model "
                "from its sublayers",
            }[technique]
        )
    return {
        "prune": "its layer is not pruned",
        "cluster": "its layer has no clusterable weight kopt knows",
        "quantize": "its layer is left in float",
    }[technique]


def measure(
    model: keras.Model,
    technique: str,
    *,
    requested_sparsity: float | None = None,
    targets: dict[int, float] | None = None,
    excluded: set[str] = frozenset(),
    reasons: dict[str, str] | None = None,
) -> Coverage:
    """Coverage of the wrapped ``model`` by ``technique`` (``"prune"``, ``"cluster"``, ``"quantize"``).

    Pruning: ``targets`` maps reached variable ids to their final sparsity (default: the
    requested one); the reachable sparsity is the size-weighted sum over all kernels.
    ``excluded``: top-level layer names (or ``"block/path"`` sublayers of blocks wrapped in place) the caller
    left out on purpose (not counted as missed).
    ``reasons``: top-level layer name (or ``"layer.weight"``) -> why it was left out (e.g. from a pruning report).
    """
    if technique not in ("prune", "cluster", "quantize"):
        raise InvalidArgumentError(f"technique must be 'prune', 'cluster' or 'quantize', got {technique!r}.")
    found = kernels(model)
    reached = reached_variables(model, technique)
    coverage = Coverage(technique)
    removed = 0.0
    for key, kernel in found.items():
        if (kernel.top in excluded or kernel.key in excluded) and key not in reached:
            continue
        coverage.total += kernel.size
        if key in reached:
            coverage.reached += kernel.size
            removed += kernel.size * (targets or {}).get(key, requested_sparsity or 0.0)
        else:
            coverage.missed.append((kernel, _reason(kernel, technique, reasons or {})))
    coverage.missed.sort(key=lambda item: -item[0].size)
    if technique == "prune":
        coverage.requested_sparsity = requested_sparsity
        coverage.reachable_sparsity = removed / coverage.total if coverage.total else 0.0
    return coverage


def pruning_targets(model: keras.Model) -> tuple[dict[int, float], float]:
    """Each pruned variable's final sparsity (its wrapper's ``final_sparsity()``) and the size-weighted mean."""
    targets: dict[int, float] = {}
    total = weighted = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "technique", None) != "prune":
            continue
        target = layer.final_sparsity()
        for variable in layer.reached_variables():
            size = float(np.prod(variable.shape))
            targets[id(variable)] = target
            total, weighted = total + size, weighted + size * target
    return targets, (weighted / total if total else 0.0)


def warn_pruning(
    model: keras.Model, reasons: dict[str, str] | None = None, excluded: set[str] = frozenset(), stacklevel: int = 3
) -> Coverage:
    """Measure a pruning-wrapped model and warn when it cannot reach 90 % of the requested sparsity.

    ``excluded``: layers left dense on purpose (e.g. by a policy), not counted against it.
    """
    targets, requested = pruning_targets(model)
    coverage = measure(
        model, "prune", requested_sparsity=requested, targets=targets, excluded=excluded, reasons=reasons
    )
    coverage.warn(stacklevel=stacklevel + 1)
    return coverage
