"""Pure helpers of ``backends.py``: spreads, the adaptive round count and the per-backend table.

Standard library only (importable without Keras), so the unit tests run in a second.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from _harness import markdown_table, paired_quartiles

BACKENDS = ("tensorflow", "jax", "torch", "torch_tuned_malloc")
BACKEND_LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch",
                  "torch_tuned_malloc": "PyTorch, glibc malloc keeping freed memory"}
#: Runs that are a Keras backend under other process settings: (backend, extra environment).
#: PyTorch's eager CPU ops allocate a fresh buffer per op; glibc returns large freed blocks to the
#: system, so each new activation-sized buffer page-faults again. These settings keep them.
VARIANT_RUNS = {
    "torch_tuned_malloc": ("torch", {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}),
}
# Variants of the training-step table, in column order, with their labels. "float_again" is a control: a
# second copy of the float model, timed like a variant; its ratio to the float step is 1 up to the machine's
# noise, which every other ratio of the row carries too.
VARIANTS = {"float_again": "float again (control)", "prune": "prune 50 %", "cluster": "cluster 16", "qat": "QAT",
            "pcqat": "PCQAT-ready QAT"}
# Targets of issue 25 (ratio to the same backend's float step). TensorFlow and JAX: no worse
# than the issue's own table, measured before the work.
TARGETS = {
    "torch": {"prune": 1.15, "cluster": 1.2, "qat": 1.3, "pcqat": 1.4},
    "tensorflow": {"prune": 1.08, "cluster": 1.04, "qat": 1.15, "pcqat": 1.13},
    "jax": {"prune": 1.02, "cluster": 1.01, "qat": 1.05, "pcqat": 1.06},
}
TARGETS.update({name: TARGETS[backend] for name, (backend, _) in VARIANT_RUNS.items()})
#: The Keras backends themselves (``--backend`` runs one in this process).
KERAS_BACKENDS = tuple(b for b in BACKENDS if b not in VARIANT_RUNS)


def half_spread(q1: float, q3: float) -> float:
    """Half the interquartile range of the per-round ratios: the "±" a figure carries."""
    return (q3 - q1) / 2


def spread_of(samples: Sequence[float], baseline: Sequence[float]) -> float:
    """:func:`half_spread` of the paired per-round ratios ``samples[i] / baseline[i]``."""
    return half_spread(*paired_quartiles(samples, baseline))


def enough_rounds(samples: Sequence[float], baseline: Sequence[float], tolerance: float, minimum: int) -> bool:
    """True once at least ``minimum`` rounds are in and the ratio's half spread is within ``tolerance``."""
    return len(samples) >= minimum and spread_of(samples, baseline) <= tolerance


def ratio_cell(row: Mapping[str, Any] | None) -> str:
    """``"1.08× (1.05–1.12)"``: the median per-round ratio and the middle half of the rounds."""
    if not row or row.get("ratio") is None:
        return "—" if not row or "error" not in row else "n/a: " + str(row["error"]).split("\n")[0][:80]
    return f"{row['ratio']:.2f}× ({row['ratio_q1']:.2f}–{row['ratio_q3']:.2f})"


def verdicts(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per variant whose median ratio is above its backend's target."""
    misses = []
    for backend, result in results.items():
        steps = result.get("train_step", {})
        control = (steps.get("float_again") or {}).get("ratio")
        for variant, target in TARGETS.get(backend, {}).items():
            row = steps.get(variant)
            if row and row.get("ratio") is not None and row["ratio"] > target:
                notes = []
                if row["ratio_q1"] <= target <= row["ratio_q3"]:
                    notes.append(f"within this run's spread {row['ratio_q1']:.2f}–{row['ratio_q3']:.2f}")
                if control is not None and row["ratio"] - target <= abs(control - 1.0):
                    notes.append(f"by no more than the float model timed against itself reads off 1: {control:.2f}×")
                note = f" ({'; '.join(notes)})" if notes else ""
                misses.append(f"{BACKEND_LABELS.get(backend, backend)} {VARIANTS[variant]}: "
                              f"{row['ratio']:.3f} > {target}{note}")
    return misses


def float_cell(result: Mapping[str, Any], key: str) -> str:
    row = result.get("train_step", {}).get(key)
    if not row:
        error = result.get("errors", {}).get(key)
        return "n/a" + (f": {error.splitlines()[0][:60]}" if error else "")
    return f"{1e3 * row['median_s']:.0f} ms"


def backend_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The per-backend table: float step (default and jit setting), then each variant's ratio."""
    headers = ["backend", "float step", "float step, jit_compile=True", "vs TF float",
               *(VARIANTS[v] for v in VARIANTS)]
    tf_float = results.get("tensorflow", {}).get("train_step", {}).get("float", {}).get("median_s")
    rows = []
    for backend in [b for b in BACKENDS if b in results]:
        result = results[backend]
        own = result.get("train_step", {}).get("float", {}).get("median_s")
        relative = None if own is None or not tf_float else f"{own / tf_float:.1f}×"
        rows.append([BACKEND_LABELS[backend], float_cell(result, "float"), float_cell(result, "float_jit"), relative,
                     *(ratio_cell(result.get("train_step", {}).get(v) or result.get("errors", {}).get(v) and
                                  {"error": result["errors"][v]}) for v in VARIANTS)])
    return markdown_table(headers, rows)
