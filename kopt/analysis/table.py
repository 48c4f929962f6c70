"""The result of a sensitivity analysis: accuracy drop per layer and level, and what to do with it.

A :class:`SensitivityTable` is plain data (JSON round trip with :meth:`~SensitivityTable.to_dict`
/ :meth:`~SensitivityTable.from_dict`) with the two questions a user or an automatic search
asks of it: *how far can each layer go* (:meth:`~SensitivityTable.levels_within`) and *give me
the policy that does that* (:meth:`~SensitivityTable.to_policy`).

Drops are fractions of accuracy (``0.01`` = one point), measured with only that layer changed,
one-shot, without fine-tuning: an upper bound of what fine-tuning will leave, and a ranking
of the layers. A level the pipeline could not apply to a layer (more clusters than a weight
has values) has ``nan`` accuracy and drop (``None`` in JSON, ``n/a`` in Markdown) and is never
chosen.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from kopt.core.errors import InvalidArgumentError

#: Levels closer than this are the same level (``0.75`` and ``np.float32(0.75)``).
_LEVEL_TOLERANCE = 1e-9
#: Slack when comparing a drop with ``max_drop`` (drops are differences of counts / samples).
_DROP_TOLERANCE = 1e-12

_TECHNIQUE_WORDS = {"prune": "pruned", "cluster": "clustered", "quantize": "quantized"}
_AXIS_LABELS = {"prune": "sparsity", "cluster": "clusters per tensor", "quantize": "weight bits"}


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's row: ``accuracy`` and ``drop`` hold one value per level of the table, in order.

    ``parameters`` counts the weights the technique touches in this layer; ``path`` is the
    layer's node path (``sub_model/layer`` in nested models); ``preserve_sparsity`` is what
    clustering used for the layer (``None`` for the other techniques).
    """

    name: str
    class_name: str
    parameters: int
    accuracy: tuple[float, ...]
    drop: tuple[float, ...]
    path: str = ""
    preserve_sparsity: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path or self.name,
            "class_name": self.class_name,
            "parameters": self.parameters,
            "accuracy": [_json_number(a) for a in self.accuracy],
            "drop": [_json_number(d) for d in self.drop],
            "preserve_sparsity": self.preserve_sparsity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerSensitivity":
        return cls(
            name=str(data["name"]),
            class_name=str(data["class_name"]),
            parameters=int(data["parameters"]),
            accuracy=tuple(_from_json_number(a) for a in data["accuracy"]),
            drop=tuple(_from_json_number(d) for d in data["drop"]),
            path=str(data.get("path") or data["name"]),
            preserve_sparsity=data.get("preserve_sparsity"),
        )


@dataclass
class SensitivityTable:
    """Per-layer, per-level one-shot accuracy drops of one technique (see the module doc).

    ``levels`` run from the mildest to the most aggressive (ascending sparsity, descending
    cluster count, descending bit width); ``rows`` are in the model's execution order;
    ``samples`` is how many samples every accuracy was measured on; ``seed`` fixed the
    clustering initialisation.
    """

    technique: str
    levels: tuple[float | int, ...]
    baseline_accuracy: float
    rows: list[LayerSensitivity] = field(default_factory=list)
    samples: int = 0
    seed: int = 0
    model_name: str = ""

    # ------------------------------------------------------------ lookups
    @property
    def layer_names(self) -> list[str]:
        return [row.name for row in self.rows]

    def row(self, layer: str) -> LayerSensitivity:
        for row in self.rows:
            if row.name == layer:
                return row
        raise InvalidArgumentError(f"The sensitivity table has no layer {layer!r}; its layers: {self.layer_names}.")

    def level_index(self, level: float | int) -> int:
        if _is_number(level):
            for index, known in enumerate(self.levels):
                if abs(float(known) - float(level)) <= _LEVEL_TOLERANCE:
                    return index
        raise InvalidArgumentError(f"The sensitivity table has no level {level!r}; its levels: {list(self.levels)}.")

    def drop(self, layer: str, level: float | int) -> float:
        """Accuracy drop (fraction; negative: the change helped) of ``layer`` alone at ``level``."""
        return self.row(layer).drop[self.level_index(level)]

    def accuracy(self, layer: str, level: float | int) -> float:
        """Accuracy with only ``layer`` changed to ``level``."""
        return self.row(layer).accuracy[self.level_index(level)]

    def level_label(self, level: float | int) -> str:
        """How a level reads in tables and charts: ``75%``, ``16 clusters``, ``4-bit``."""
        if self.technique == "prune":
            return f"{float(level) * 100:g}%"
        if self.technique == "cluster":
            return f"{int(level)} cluster{'' if int(level) == 1 else 's'}"
        return f"{int(level)}-bit"

    @property
    def axis_label(self) -> str:
        return _AXIS_LABELS.get(self.technique, "level")

    # ------------------------------------------------------------ decisions
    def levels_within(self, max_drop: float) -> dict[str, float | int | None]:
        """For each layer, the most aggressive level whose drop is at most ``max_drop``.

        Levels are scanned from the mildest and the scan stops at the first level whose drop
        exceeds ``max_drop`` (a more aggressive level that happens to measure better is noise,
        not a reason to go further). ``None``: even the mildest applicable level exceeds it.
        Levels the pipeline cannot apply to the layer (``nan``) are skipped.
        """
        limit = _check_max_drop(max_drop)
        chosen: dict[str, float | int | None] = {}
        for row in self.rows:
            best = None
            for level, drop in zip(self.levels, row.drop):
                if math.isnan(drop):
                    continue
                if drop > limit + _DROP_TOLERANCE:
                    break
                best = level
            chosen[row.name] = best
        return chosen

    def to_policy(self, max_drop: float, *, name: str | None = None, base: Any = None) -> Any:
        """A :class:`kopt.Policy` giving each layer its :meth:`levels_within` level.

        Each analysed layer gets a ``name:<layer>`` rule: ``prune={"sparsity": s}``,
        ``cluster={"number_of_clusters": k}`` or ``quantize={"bits": b}``; a layer with no
        level gets ``prune=False`` / ``cluster=False`` (quantization cannot be turned off per
        layer in an int8 model, so it keeps ``bits=8``). The global settings of the technique
        come from ``base`` or the technique's defaults (for clustering, ``preserve_sparsity``
        as the analysis used it; a layer that used the other value gets it in its rule).
        Layers not in the table follow the global settings.

        ``base``'s other settings and rules are kept; a base rule that applied to an analysed
        layer is carried into that layer's name rule (a layer follows one rule only), its
        settings for this technique overridden by the level.
        """
        from kopt.policy import ClusterSettings, LayerRule, Policy, settings_types

        chosen = self.levels_within(max_drop)
        if base is not None and not isinstance(base, Policy):
            raise InvalidArgumentError(f"base must be a kopt.Policy or None, got {type(base).__name__}.")
        technique = self.technique
        if technique not in settings_types():
            raise InvalidArgumentError(f"Unknown technique {technique!r} in the sensitivity table.")
        policy = base if base is not None else Policy(name=f"sensitivity-{technique}-{max_drop * 100:g}pt")
        settings = getattr(policy, technique)
        if settings is None:
            if technique == "cluster":
                settings = ClusterSettings(preserve_sparsity=any(bool(r.preserve_sparsity) for r in self.rows))
            else:
                settings = settings_types()[technique]()
        rules = list(policy.rules)
        for row in self.rows:
            value = self._rule_value(row, chosen[row.name], settings)
            existing = policy._rule_for(row.name, row.path or row.name, row.class_name) if base is not None else None
            if existing is None:
                rules.append(LayerRule(match=f"name:{row.name}", **{technique: value}))
                continue
            old = getattr(existing, technique)
            if isinstance(old, Mapping) and isinstance(value, Mapping):
                value = {**old, **value}
            merged = replace(existing, match=f"name:{row.name}", **{technique: value})
            if existing.kind == "name":
                rules = [merged if rule is existing else rule for rule in rules]
            else:
                rules.append(merged)
        return replace(
            policy, name=name or policy.name, rules=tuple(rules), **{technique: settings}
        )

    def _rule_value(self, row: LayerSensitivity, level: float | int | None, settings: Any) -> Any:
        if self.technique == "prune":
            return False if level is None else {"sparsity": float(level)}
        if self.technique == "quantize":
            return {"bits": 8 if level is None else int(level)}
        if level is None:
            return False
        value: dict[str, Any] = {"number_of_clusters": int(level)}
        if row.preserve_sparsity is not None and bool(row.preserve_sparsity) != settings.preserve_sparsity:
            value["preserve_sparsity"] = bool(row.preserve_sparsity)
        return value

    # ------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        return {
            "technique": self.technique,
            "levels": list(self.levels),
            "baseline_accuracy": self.baseline_accuracy,
            "samples": self.samples,
            "seed": self.seed,
            "model_name": self.model_name,
            "rows": [row.to_dict() for row in self.rows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SensitivityTable":
        """Inverse of :meth:`to_dict` (e.g. a table saved by an earlier search)."""
        try:
            technique = str(data["technique"])
            cast = float if technique == "prune" else int
            return cls(
                technique=technique,
                levels=tuple(cast(v) for v in data["levels"]),
                baseline_accuracy=float(data["baseline_accuracy"]),
                rows=[LayerSensitivity.from_dict(r) for r in data.get("rows", [])],
                samples=int(data.get("samples", 0)),
                seed=int(data.get("seed", 0)),
                model_name=str(data.get("model_name", "")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgumentError(f"Not a sensitivity table: {error!r}.") from None

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        """A caption line, then a table: layer, class, parameters, drop in points at each level."""
        word = _TECHNIQUE_WORDS.get(self.technique, self.technique)
        caption = (
            f"Accuracy drop in points with only that layer {word} (one-shot, no fine-tuning); "
            f"baseline accuracy {self.baseline_accuracy:.2%} on {self.samples} samples."
        )
        header = "| layer | class | parameters | " + " | ".join(self.level_label(v) for v in self.levels) + " |"
        rule = "|---|---|---:|" + "---:|" * len(self.levels)
        lines = [caption, "", header, rule]
        for row in self.rows:
            cells = " | ".join("n/a" if math.isnan(d) else f"{d * 100:+.2f}" for d in row.drop)
            lines.append(f"| {row.path or row.name} | {row.class_name} | {row.parameters:,} | {cells} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | Path) -> Path:
        """PNG chart of the drops (:func:`kopt.plots.sensitivity_chart`); needs matplotlib."""
        from kopt.report.plots import sensitivity_chart

        return sensitivity_chart(self, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_max_drop(max_drop: Any) -> float:
    if not _is_number(max_drop) or not math.isfinite(float(max_drop)):
        raise InvalidArgumentError(
            f"max_drop must be a finite number (an accuracy fraction: 0.01 = one point), got {max_drop!r}."
        )
    return float(max_drop)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _from_json_number(value: Any) -> float:
    return float("nan") if value is None else float(value)


__all__ = ["LayerSensitivity", "SensitivityTable"]
