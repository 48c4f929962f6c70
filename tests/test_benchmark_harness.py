"""The benchmark harness's pure functions (benchmarks/_harness.py): statistics, ordering, output."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _harness  # noqa: E402


def test_paired_ratio_is_the_median_of_per_pair_ratios():
    # A load spike in pair 2 doubles both samples: a paired ratio ignores it.
    variant = [1.1, 2.2, 1.1, 1.1]
    baseline = [1.0, 2.0, 1.0, 1.0]
    assert _harness.paired_ratio(variant, baseline) == pytest.approx(1.1)
    # The ratio of medians would not be 1.1 here: pairs matter.
    assert _harness.paired_ratio([3.0, 1.0, 2.0], [2.0, 1.0, 1.0]) == pytest.approx(1.5)


def test_paired_ratio_rejects_unpaired_samples():
    with pytest.raises(ValueError):
        _harness.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        _harness.paired_ratio([], [])


def test_round_robin_order_alternates_direction():
    assert _harness.round_robin_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert _harness.round_robin_order(["a", "b", "c"], 1) == ["c", "b", "a"]


def test_alternate_calls_round_robin_and_reduces_each_round_to_its_median():
    calls = []

    def measure(name, values):
        def run():
            calls.append(name)
            return values

        return run

    samples = _harness.alternate({"a": measure("a", [1.0, 5.0, 2.0]), "b": measure("b", 3.0)}, rounds=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert samples == {"a": [2.0, 2.0, 2.0], "b": [3.0, 3.0, 3.0]}


def test_summarize_gives_median_min_and_paired_ratio():
    summary = _harness.summarize({"float": [1.0, 2.0, 1.0], "qat": [1.2, 2.6, 1.2]}, "float")
    assert summary["float"]["ratio"] == pytest.approx(1.0)
    assert summary["qat"]["ratio"] == pytest.approx(1.2)
    assert summary["qat"]["median_s"] == pytest.approx(1.2)
    assert summary["qat"]["min_s"] == pytest.approx(1.2)


def test_summarize_reports_the_quartiles_of_the_per_round_ratios():
    baseline = [1.0, 1.0, 2.0, 1.0, 1.0]
    variant = [1.0, 1.2, 2.2, 1.3, 1.4]  # per-round ratios 1.0, 1.2, 1.1, 1.3, 1.4
    summary = _harness.summarize({"float": baseline, "prune": variant}, "float")["prune"]
    assert summary["ratio"] == pytest.approx(1.2)
    assert (summary["ratio_q1"], summary["ratio_q3"]) == pytest.approx((1.1, 1.3))
    assert _harness.paired_quartiles([2.0], [1.0]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        _harness.paired_quartiles([1.0], [1.0, 2.0])


def test_noise_note_only_when_the_rounds_straddle_the_limit():
    assert "1.150-1.250" in _harness.noise_note(1.15, 1.25, 1.2)
    assert _harness.noise_note(1.21, 1.25, 1.2) == ""  # every middle round above: a real miss
    assert _harness.noise_note(None, 1.25, 1.2) == ""


def test_markdown_table_formats_cells():
    text = _harness.markdown_table(["a", "b", "c"], [[None, 1.23456, "x|y"]])
    lines = text.splitlines()
    assert lines[0] == "| a | b | c |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| — | 1.23 | x\\|y |"
    with pytest.raises(ValueError):
        _harness.markdown_table(["a"], [[1, 2]])


def test_write_json_and_markdown(tmp_path):
    path = _harness.write_json("out", {"x": np.float32(1.5), "y": np.arange(2)}, directory=tmp_path)
    assert path == tmp_path / "out.json"
    assert json.loads(path.read_text()) == {"x": 1.5, "y": [0, 1]}
    md = _harness.write_markdown("out.md", "# t\n\n", directory=tmp_path)
    assert md.read_text() == "# t\n"


def test_zipped_size_matches_a_deflate_zip():
    data = bytes(1000) + bytes(range(256))
    size = _harness.zipped_size(data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.tflite", data)
    assert size == len(buffer.getvalue())
    assert size < len(data)
