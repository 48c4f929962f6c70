"""What to do to a model, as plain data: global technique settings, per-layer rules, presets, JSON.

A :class:`Policy` never runs anything. :meth:`Policy.resolve` turns it into a
:class:`Plan` for one model graph (which technique, with which settings, on which layer);
the technique packages and :func:`kopt.optimize` act on the plan.

Rule matching and precedence
    A rule's ``match`` is one of
      * ``"name:<layer name>"`` (or a bare layer name): exact layer name;
      * ``"path:<regex>"``: ``re.fullmatch`` on the node path (``sub_model/layer`` for
        layers of nested models, ``layer`` otherwise);
      * ``"class:<ClassName>"``: the layer's class name (``Conv2D``...).
    For each layer the most specific kind of match wins: name, then path, then class.
    Sublayers of a composite block kopt keeps whole (its call cannot be traced; pruning and
    clustering wrap them in place) are named ``"<block>/<attribute path>"`` (``"block/attn/qkv"``)
    and their path is the block's node path followed by the same attribute path. A rule on the
    block holds for its sublayers too (``LayerRule("block", quantize=False)`` keeps all of them
    float); a rule naming a sublayer (name or path) overrides the settings it names, the block's
    rule the rest; a class rule matching a sublayer gives only what the block's rule leaves open.
    Two rules of the same kind matching one layer is an error (ambiguous), and so is a
    rule that matches no layer (unless ``validate=False``).
    A rule overrides only the settings it names; ``prune=False`` (likewise ``cluster``,
    ``quantize``) turns that technique off for the layer; ``exclude=True`` turns all off.

Depthwise convolutions are not pruned unless a rule asks (``prune=True`` or a dict of prune
settings, e.g. ``LayerRule("class:DepthwiseConv2D", prune={})``): a 3x3 depthwise kernel has 9
weights per channel, so pruning it costs accuracy and saves almost nothing (TFMOT never prunes
them either). The low-level :func:`kopt.sparsity.prune_low_magnitude` prunes what it is given.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from kopt.clustering.settings import ClusterSettings
from kopt.core.checks import check_bool, check_choice
from kopt.core.errors import PolicyError, listing, preview
from kopt.graph.sublayers import block_of, is_sublayer_key, sublayer_key
from kopt.quantization.settings import QuantizeSettings
from kopt.sparsity.settings import PruneSettings
from kopt.technique.registry import get_technique, techniques

TARGETS = ("int8", "edgetpu", "micro")
MATCH_KINDS = ("name", "path", "class")  # in precedence order


def settings_types() -> dict[str, type]:
    """``technique name -> settings dataclass``, from the technique registry (in stage order)."""
    return {technique.name: technique.settings_type for technique in techniques()}


@dataclass(frozen=True)
class LayerRule:
    """Per-layer override. Technique fields: ``None`` = inherit, ``False`` = off, a dict = override fields."""

    match: str
    prune: Mapping[str, Any] | bool | None = None
    cluster: Mapping[str, Any] | bool | None = None
    quantize: Mapping[str, Any] | bool | None = None
    exclude: bool = False

    def __post_init__(self) -> None:
        kind, pattern = parse_match(self.match)
        if kind == "path":
            try:
                re.compile(pattern)
            except re.error as err:
                raise PolicyError(f"Rule {self.match!r}: invalid regular expression ({err}).") from None
        check_bool(f"rule {self.match!r}: exclude", self.exclude)
        for technique, settings_type in settings_types().items():
            value = getattr(self, technique)
            if value is None or isinstance(value, bool):
                continue
            if not isinstance(value, Mapping):
                raise PolicyError(
                    f"Rule {self.match!r}: {technique} must be true/false or an object of settings, got {preview(value)}."
                )
            unknown = set(value) - {f.name for f in fields(settings_type)}
            if unknown:
                raise PolicyError(
                    f"Rule {self.match!r}: unknown {technique} setting(s) {sorted(unknown)}; "
                    f"valid: {[f.name for f in fields(settings_type)]}."
                )
            object.__setattr__(self, technique, dict(value))

    @property
    def kind(self) -> str:
        return parse_match(self.match)[0]

    def matches(self, name: str, path: str, class_name: str) -> bool:
        kind, pattern = parse_match(self.match)
        if kind == "name":
            return name == pattern
        if kind == "path":
            return re.fullmatch(pattern, path) is not None
        return class_name == pattern


def parse_match(match: str) -> tuple[str, str]:
    if not isinstance(match, str) or not match:
        raise PolicyError(f"A rule's match must be a non-empty string, got {match!r}.")
    kind, sep, pattern = match.partition(":")
    if sep and kind in MATCH_KINDS:
        if not pattern:
            raise PolicyError(f"Rule match {match!r} has nothing after '{kind}:'.")
        return kind, pattern
    return "name", match


# ------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class LayerPlan:
    """The settings resolved for one layer; ``None`` means the technique is off for it."""

    name: str
    path: str
    class_name: str
    prune: PruneSettings | None
    cluster: ClusterSettings | None
    quantize: QuantizeSettings | None
    rule: str | None = None


@dataclass(frozen=True)
class Plan:
    """Per-layer settings for one model, in execution order.

    Keyed by the name each layer has once the model is flattened
    (:meth:`kopt.graph.ModelGraph.flat_names`): the layer's own name, or its node path
    (``"a/dense"`` -> ``"a_dense"``) when layers of two nested sub-models share a name. Every
    stage flattens the model first, so each layer finds its own plan through all stages.
    """

    layers: dict[str, LayerPlan]
    policy: "Policy"

    def for_layer(self, name: str) -> LayerPlan:
        return self.layers[name]

    def table(self) -> str:
        """A Markdown table of the plan, one row per layer."""
        rows = ["| layer | class | prune | cluster | quantize | rule |", "|---|---|---|---|---|---|"]
        for p in self.layers.values():
            prune = "-" if p.prune is None else (f"{p.prune.m_by_n[0]}:{p.prune.m_by_n[1]}" if p.prune.m_by_n else f"{p.prune.sparsity:.0%}")
            cluster = "-" if p.cluster is None else f"{p.cluster.number_of_clusters}{' per-ch' if p.cluster.per_channel else ''}"
            quantize = "-" if p.quantize is None else f"{p.quantize.mode} {p.quantize.bits}-bit"
            rows.append(f"| {p.path} | {p.class_name} | {prune} | {cluster} | {quantize} | {p.rule or ''} |")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data: the policy and, per layer, its resolved settings (``None``: off)."""
        layers = []
        for p in self.layers.values():
            entry: dict[str, Any] = {"name": p.name, "path": p.path, "class_name": p.class_name, "rule": p.rule}
            for technique in settings_types():
                value = getattr(p, technique)
                entry[technique] = None if value is None else _settings_dict(value)
            layers.append(entry)
        return {"policy": self.policy.to_dict(), "layers": layers}

    def __str__(self) -> str:
        return self.table()


# -------------------------------------------------------------------- policy
@dataclass(frozen=True)
class Policy:
    """A frozen, JSON-serializable description of what to do to a model.

    ``prune`` / ``cluster`` / ``quantize`` hold the global settings of each technique
    (``None``: technique not used); ``rules`` override them per layer (see module doc).
    ``target`` is ``"int8"`` (fully-int8 TFLite), ``"edgetpu"`` (also int8 I/O, batch 1,
    and the Edge TPU check must report the model fully mapped) or ``"micro"`` (the int8 file
    LUT-compressed for TensorFlow Lite Micro, :func:`kopt.export.micro.compress`).
    """

    name: str = "custom"
    prune: PruneSettings | None = None
    cluster: ClusterSettings | None = None
    quantize: QuantizeSettings | None = None
    rules: tuple[LayerRule, ...] = ()
    target: str = "int8"
    validate: bool = True

    def __post_init__(self) -> None:
        check_choice("target", self.target, TARGETS)
        for technique, settings_type in settings_types().items():
            value = getattr(self, technique)
            if value is not None and not isinstance(value, settings_type):
                raise PolicyError(f"Policy.{technique} must be a {settings_type.__name__} or None, got {preview(value)}.")
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if not isinstance(rule, LayerRule):
                raise PolicyError(f"Policy.rules must hold LayerRule objects, got {rule!r}.")

    # presets ------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Policy":
        """A named deployment path, with common knobs as keywords.

        Knobs: ``sparsity``, ``m_by_n``, ``number_of_clusters``, ``per_channel``, ``init``,
        ``bits``, ``target``, ``rules``.
        """
        from kopt.policy.presets import build_preset

        return build_preset(cls, name, overrides)

    # resolution ---------------------------------------------------------
    def resolve(self, graph: Any) -> Plan:
        """Per-layer settings for the layers of ``graph`` (a ModelGraph or a Keras model)."""
        from kopt.graph import ModelGraph, analyze

        if not isinstance(graph, ModelGraph):
            graph = analyze(graph)
        flat_names = graph.flat_names()
        entries, layers, keys = [], [], []
        nested = _nested_entries(graph)
        for layer in graph.layers():
            entries.append((layer.name, graph.nodes_of(layer)[0], type(layer).__name__))
            layers.append(layer)
            keys.append(flat_names[id(layer)])
            for key, path, class_name, sub in nested.get(flat_names[id(layer)], []):  # right after their block
                entries.append((key, path, class_name))
                layers.append(sub)
                keys.append(key)
        used: set[int] = set()
        plans: dict[str, LayerPlan] = {}
        block_rules: dict[str, LayerRule | None] = {}
        for (name, path, class_name), layer, key in zip(entries, layers, keys):
            if is_sublayer_key(key):
                rules = self._sublayer_rules(name, path, class_name, block_rules.get(block_of(key)))
            else:
                rules = [rule] if (rule := self._rule_for(name, path, class_name)) is not None else []
                block_rules[key] = rule
            used.update(id(rule) for rule in rules)
            plans[key] = self._layer_plan(key, path, class_name, rules, layer, nested=is_sublayer_key(key))
        if self.validate:
            unmatched = [r.match for r in self.rules if id(r) not in used and not self._matches_any(r, entries)]
            if unmatched:
                raise PolicyError(
                    f"Policy rule(s) {listing(unmatched)} match no layer of model {graph.name!r}. Layer names: "
                    f"{[e[0] for e in entries][:20]}{'...' if len(entries) > 20 else ''}. "
                    "Fix the key, or pass validate=False to ignore rules that match nothing."
                )
        return Plan(layers=plans, policy=self)

    @staticmethod
    def _matches_any(rule: LayerRule, entries: list[tuple[str, str, str]]) -> bool:
        return any(rule.matches(*entry) for entry in entries)

    def _sublayer_rules(self, name: str, path: str, class_name: str, block_rule: LayerRule | None) -> list[LayerRule]:
        """The rules of a closed block's sublayer entry, most specific first: its own (as for any layer) and
        its block's, which holds for what is inside the block unless a rule names the sublayer (name or path)."""
        own = self._rule_for(name, path, class_name)
        rules = [block_rule, own] if own is not None and own.kind == "class" else [own, block_rule]
        return [rule for rule in rules if rule is not None]

    def _rule_for(self, name: str, path: str, class_name: str) -> LayerRule | None:
        for kind in MATCH_KINDS:
            hits = [r for r in self.rules if r.kind == kind and r.matches(name, path, class_name)]
            if len(hits) > 1:
                raise PolicyError(
                    f"Layer {name!r} matches several '{kind}' rules: {[r.match for r in hits]}. "
                    "Make the rules disjoint, or use a more specific kind of match (name beats path beats class)."
                )
            if hits:
                return hits[0]
        return None

    def _layer_plan(
        self, name: str, path: str, class_name: str, rules: list[LayerRule], layer: Any, nested: bool = False
    ) -> LayerPlan:
        """``rules``: those that apply, most specific first; each technique takes the first one that sets it."""
        resolved = {}
        for technique in settings_types():
            entry = get_technique(technique)
            applies = entry.wraps_in_place and entry.applies_in_place(layer) if nested else entry.applies(layer)
            if not applies:
                resolved[technique] = None
                continue
            settings = getattr(self, technique)
            rule = next((r for r in rules if _setting(r, technique) is not None), None)
            override = None if rule is None else _setting(rule, technique)
            if override is False:
                settings = None
            elif isinstance(override, Mapping):
                base = settings or entry.settings_type()
                settings = _replace(base, override, where=f"rule {rule.match!r}: {technique}")
            elif override is True and settings is None:
                settings = entry.settings_type()
            elif override is None and not entry.on_by_default(layer):
                settings = None  # opt in with a rule naming the layer or its class
            resolved[technique] = settings
        return LayerPlan(name, path, class_name, rule=", ".join(r.match for r in rules) or None, **resolved)

    # JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "target": self.target, "validate": self.validate}
        for technique in settings_types():
            value = getattr(self, technique)
            out[technique] = None if value is None else _settings_dict(value)
        out["rules"] = [
            {k: v for k, v in dataclasses.asdict(rule).items() if v is not None and not (k == "exclude" and v is False)}
            for rule in self.rules
        ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        if not isinstance(data, Mapping):
            raise PolicyError(f"A policy must be a JSON object, got {type(data).__name__}.")
        _check_fields(data, cls, "policy field(s)")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in settings_types():
                kwargs[key] = None if value is None else _settings_from(settings_types()[key], value, where=key)
            elif key == "rules":
                if not isinstance(value, list):
                    raise PolicyError(f"Policy 'rules' must be a list, got {type(value).__name__}.")
                kwargs[key] = tuple(_rule_from(item) for item in value)
            elif key in ("name", "target"):
                if not isinstance(value, str):
                    raise PolicyError(f"Policy '{key}' must be a string, got {preview(value)}.")
                kwargs[key] = value
            else:
                check_bool(key, value)
                kwargs[key] = value
        return cls(**kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise PolicyError(f"Policy is not valid JSON: {err}.") from None
        except RecursionError:
            raise PolicyError("Policy JSON is nested too deeply to be a policy.") from None
        return cls.from_dict(data)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise PolicyError(f"Cannot read policy file {str(path)!r}: {err.strerror}.") from None
        except UnicodeDecodeError:
            raise PolicyError(f"Cannot read policy file {str(path)!r}: it is not UTF-8 text.") from None
        try:
            return cls.from_json(text)
        except PolicyError as err:
            raise PolicyError(f"{path}: {err}") from None


# ------------------------------------------------------------------- helpers




def _setting(rule: LayerRule, technique: str) -> Any:
    """What ``rule`` says of ``technique``: None (nothing), False (off, also for ``exclude``), True or settings."""
    return False if rule.exclude else getattr(rule, technique)


def _nested_entries(graph: Any) -> dict[str, list[tuple[str, str, str, Any]]]:
    """Per block ``graph`` keeps whole: ``(key, path, class name, sublayer)`` for its sublayers a technique
    can wrap in place; the key is ``"<block>/<sublayer path>"`` (``"block/attn/qkv"``)."""
    from kopt.technique.inplace import closed_blocks, nested_layers

    in_place = [technique for technique in techniques() if technique.wraps_in_place]
    found: dict[str, list[tuple[str, str, str, Any]]] = {}
    for name, block in closed_blocks(graph).items():
        node = graph.nodes_of(block)[0]
        found[name] = [
            (sublayer_key(name, path), f"{node}/{path}", type(sub).__name__, sub)
            for path, sub in nested_layers(block)
            if any(technique.applies_in_place(sub) for technique in in_place)
        ]
    return found


def _settings_dict(settings: Any) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _settings_from(settings_type: type, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise PolicyError(f"Policy '{where}' must be an object of settings or null, got {preview(value)}.")
    return _replace(settings_type(), value, where=where)


def _replace(base: Any, changes: Mapping[str, Any], where: str) -> Any:
    valid = {f.name for f in fields(base)}
    unknown = set(changes) - valid
    if unknown:
        raise PolicyError(f"{where}: unknown setting(s) {sorted(unknown)}; valid: {sorted(valid)}.")
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    try:
        return replace(base, **changes)
    except TypeError as err:
        raise PolicyError(f"{where}: {err}") from None


def _check_fields(data: Mapping[str, Any], dataclass_type: type, what: str, context: str = "") -> None:
    known = {f.name for f in fields(dataclass_type)}
    unknown = set(data) - known
    if unknown:
        raise PolicyError(f"Unknown {what} {sorted(unknown)}{context}; valid fields: {sorted(known)}.")


def _rule_from(item: Any) -> LayerRule:
    if not isinstance(item, Mapping):
        raise PolicyError(f"Each policy rule must be an object, got {preview(item)}.")
    _check_fields(item, LayerRule, "rule field(s)", context=f" in {preview(dict(item))}")
    if "match" not in item:
        raise PolicyError(f"Policy rule {preview(dict(item))} has no 'match'.")
    return LayerRule(**item)










__all__ = [
    "ClusterSettings",
    "LayerPlan",
    "LayerRule",
    "Plan",
    "Policy",
    "PolicyError",
    "PruneSettings",
    "QuantizeSettings",
]
