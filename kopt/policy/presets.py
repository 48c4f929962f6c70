"""Named deployment paths (``Policy.preset("pcqat")``) and the keyword knobs they accept."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from kopt.policy import ClusterSettings, LayerRule, Policy, PolicyError, PruneSettings, QuantizeSettings

KNOBS = ("sparsity", "m_by_n", "number_of_clusters", "per_channel", "init", "bits", "target", "rules")

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "prune": lambda: {"prune": PruneSettings()},
    "prune_2x4": lambda: {"prune": PruneSettings(m_by_n=(2, 4), sparsity=0.5)},
    "cluster": lambda: {"cluster": ClusterSettings()},
    "qat": lambda: {"quantize": QuantizeSettings()},
    "ptq": lambda: {"quantize": QuantizeSettings(mode="ptq")},
    "pqat": lambda: {"prune": PruneSettings(), "quantize": QuantizeSettings(scheme="prune_preserve")},
    "cqat": lambda: {"cluster": ClusterSettings(), "quantize": QuantizeSettings(scheme="cluster_preserve")},
    "pcqat": lambda: {
        "prune": PruneSettings(),
        "cluster": ClusterSettings(preserve_sparsity=True),
        "quantize": QuantizeSettings(scheme="prune_cluster_preserve"),
    },
    "edgetpu": lambda: {"quantize": QuantizeSettings(), "target": "edgetpu"},
    # PCQAT 50 % / 16 clusters, lowered for TFLite Micro: 4-bit LUT indices in flash (TFLM DECODE).
    "micro": lambda: {
        "prune": PruneSettings(sparsity=0.5),
        "cluster": ClusterSettings(number_of_clusters=16, preserve_sparsity=True),
        "quantize": QuantizeSettings(scheme="prune_cluster_preserve"),
        "target": "micro",
    },
}
PRESET_NAMES = tuple(_PRESETS)


def build_preset(policy_cls: type[Policy], name: str, overrides: dict[str, Any]) -> Policy:
    if name not in _PRESETS:
        raise PolicyError(f"Unknown preset {name!r}; valid presets: {list(PRESET_NAMES)}.")
    unknown = set(overrides) - set(KNOBS)
    if unknown:
        raise PolicyError(f"Policy.preset({name!r}) got unknown keyword(s) {sorted(unknown)}; valid: {list(KNOBS)}.")
    settings = _PRESETS[name]()
    prune, cluster, quantize = settings.get("prune"), settings.get("cluster"), settings.get("quantize")

    def needs(technique: str, value: Any, knob: str) -> None:
        if value is None:
            raise PolicyError(f"Preset {name!r} does not {technique}, so {knob}= does not apply to it.")

    if "sparsity" in overrides:
        needs("prune", prune, "sparsity")
        prune = replace(prune, sparsity=overrides["sparsity"])
    if "m_by_n" in overrides:
        needs("prune", prune, "m_by_n")
        prune = replace(prune, m_by_n=overrides["m_by_n"])
    for knob in ("number_of_clusters", "per_channel", "init"):
        if knob in overrides:
            needs("cluster", cluster, knob)
            cluster = replace(cluster, **{knob: overrides[knob]})
    if "bits" in overrides:
        needs("quantize", quantize, "bits")
        quantize = replace(quantize, bits=overrides["bits"])
    rules = tuple(r if isinstance(r, LayerRule) else LayerRule(**r) for r in overrides.get("rules", ()))
    return policy_cls(
        name=name,
        prune=prune,
        cluster=cluster,
        quantize=quantize,
        rules=rules,
        target=overrides.get("target", settings.get("target", "int8")),
    )
