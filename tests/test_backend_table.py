"""benchmarks/_backend_table.py: the spread, the adaptive round count and the per-backend table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _backend_table as table  # noqa: E402


def step(ratio: float, q1: float, q3: float, median_s: float = 0.1) -> dict:
    return {"ratio": ratio, "ratio_q1": q1, "ratio_q3": q3, "median_s": median_s}


def test_half_spread_of_paired_rounds_is_half_the_interquartile_range_of_the_ratios():
    baseline = [1.0, 2.0, 1.0, 1.0, 1.0]
    samples = [1.1, 2.4, 1.3, 1.0, 1.2]  # ratios 1.1, 1.2, 1.3, 1.0, 1.2: quartiles 1.1 and 1.2
    assert table.spread_of(samples, baseline) == pytest.approx(0.05)
    assert table.half_spread(1.1, 1.3) == pytest.approx(0.1)


def test_enough_rounds_needs_the_minimum_and_a_narrow_spread():
    steady = ([1.2] * 6, [1.0] * 6)
    assert not table.enough_rounds(*steady, tolerance=0.05, minimum=7)
    assert table.enough_rounds(*steady, tolerance=0.05, minimum=6)
    noisy = ([1.0, 1.5, 1.0, 1.5, 1.0, 1.5], [1.0] * 6)
    assert not table.enough_rounds(*noisy, tolerance=0.05, minimum=6)


def test_ratio_cell_shows_the_median_and_the_middle_half():
    assert table.ratio_cell(step(1.084, 1.051, 1.123)) == "1.08× (1.05–1.12)"
    assert table.ratio_cell(None) == "—"
    assert table.ratio_cell({"error": "RuntimeError: no\nmore"}) == "n/a: RuntimeError: no"


def test_verdicts_name_the_backend_variant_and_whether_the_spread_straddles_the_target():
    results = {
        "torch": {"train_step": {"prune": step(1.20, 1.10, 1.25), "cluster": step(1.25, 1.22, 1.30),
                                 "qat": step(1.10, 1.0, 1.2)}},
        "jax": {"train_step": {"qat": step(1.04, 1.0, 1.1)}},
    }
    misses = table.verdicts(results)
    assert misses == [
        "PyTorch prune 50 %: 1.200 > 1.15 (within this run's spread 1.10–1.25)",
        "PyTorch cluster 16: 1.250 > 1.2",
    ]


def test_verdicts_say_when_a_miss_is_no_larger_than_the_controls_distance_from_one():
    results = {"tensorflow": {"train_step": {"float_again": step(1.04, 0.95, 1.06), "cluster": step(1.07, 1.06, 1.08),
                                             "qat": step(1.20, 1.19, 1.21)}}}
    assert table.verdicts(results) == [
        "TensorFlow cluster 16: 1.070 > 1.04 (by no more than the float model timed against itself reads off 1: 1.04×)",
        "TensorFlow QAT: 1.200 > 1.15",
    ]


def test_backend_table_rows_in_backend_order_with_float_times_relative_to_tensorflow():
    results = {
        "torch": {"train_step": {"float": step(1.0, 1.0, 1.0, 0.9), "qat": step(1.25, 1.2, 1.3)},
                  "errors": {"float_jit": "BackendCompilerFailed: inductor\ntrace"}},
        "tensorflow": {"train_step": {"float": step(1.0, 1.0, 1.0, 0.09), "float_jit": step(0.9, 0.9, 0.9, 0.08)}},
    }
    lines = table.backend_table(results).splitlines()
    assert lines[0].startswith(
        "| backend | float step | float step, jit_compile=True | vs TF float | float again (control) | prune 50 %")
    assert lines[2] == "| TensorFlow | 90 ms | 80 ms | 1.0× | — | — | — | — | — |"
    assert lines[3] == "| PyTorch | 900 ms | n/a: BackendCompilerFailed: inductor | 10.0× | — | — | — | 1.25× (1.20–1.30) | — |"
