"""kopt.Budget validation and the Pareto front of a candidate table."""

import pytest

import kopt
from kopt.core.errors import InvalidArgumentError
from kopt.report.plots import png_size
from kopt.search import Candidate, SearchReport, pareto_front


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"max_accuracy_drop": 1.5}, "max_accuracy_drop=1.5"),
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop=-0.1"),
        ({"max_accuracy_drop": float("nan")}, "max_accuracy_drop=nan"),
        ({"max_accuracy_drop": True}, "max_accuracy_drop=True"),
        ({"max_size_bytes": 0}, "max_size_bytes=0"),
        ({"max_size_bytes": 1.5}, "max_size_bytes=1.5"),
        ({"target": "gpu"}, "'edgetpu'"),
        ({"max_candidates": 0}, "max_candidates=0"),
        ({"max_seconds": -1}, "max_seconds=-1"),
        ({"m_by_n": (4, 2)}, "m_by_n=(4, 2)"),
    ],
)
def test_bad_budget_values_are_named(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        kopt.Budget(**kwargs)


def test_budget_limits():
    budget = kopt.Budget(max_accuracy_drop=0.02, max_size_bytes=1000)
    assert budget.accuracy_floor(0.9) == pytest.approx(0.88)
    assert budget.fits_size(1000) and not budget.fits_size(1001)
    assert kopt.Budget().fits_size(10**12)
    assert kopt.Budget(m_by_n=[2, 4]).m_by_n == (2, 4)


def _candidate(index, size, accuracy, status="within budget"):
    return Candidate(
        index=index, label=f"c{index}", path=[], parent=None, quantization="ptq", settings={}, keras_accuracy=None,
        int8_accuracy=accuracy, drop=0.9 - accuracy, tflite_bytes=size, zipped_bytes=size, ratio=None, sparsity=0.0,
        steps=0, seconds=0.0, status=status,
    )


def test_pareto_front_keeps_only_undominated_candidates():
    candidates = [
        _candidate(0, 100, 0.90),
        _candidate(1, 50, 0.89),
        _candidate(2, 60, 0.85),  # dominated by #1 (larger and less accurate)
        _candidate(3, 20, 0.80),
        _candidate(4, 20, 0.70),  # same size as #3, less accurate
        _candidate(5, 120, 0.88),  # dominated by #0
    ]
    assert [c.index for c in pareto_front(candidates)] == [3, 1, 0]


def test_report_table_json_and_chart(tmp_path):
    report = SearchReport(
        budget={"max_accuracy_drop": 0.01, "max_size_bytes": 60},
        baseline_accuracy=0.9,
        float_zipped_bytes=400,
        candidates=[_candidate(0, 100, 0.90), _candidate(1, 50, 0.89), _candidate(2, 30, 0.70, "accuracy drop")],
        chosen=1,
        stop_reason="every path was explored",
    )
    table = report.table()
    assert table.count("\n") == 4 and "**1**" in table and "accuracy drop" in table
    assert "| 0.8900 | -1.00 |" in table  # a loss is negative, as in the live log ("-1.00 pt")
    assert "Budget: int8 model with accuracy at most 1.00 pt below" in report.to_markdown()
    data = report.to_dict()
    assert data["pareto"] == [2, 1, 0] and data["chosen"] == 1
    paths = report.save(tmp_path)
    assert (tmp_path / "search.md").read_text().startswith("# kopt automatic search")
    assert png_size(paths["pareto"]) == (800, 500)


def test_micro_limits_need_the_micro_target():
    budget = kopt.Budget(target="micro", max_flash_bytes=10_000, max_arena_bytes=2_000)
    assert budget.has_size_limit and not kopt.Budget(target="micro").has_size_limit
    with pytest.raises(InvalidArgumentError, match="max_flash_bytes limits a TFLite Micro deployment"):
        kopt.Budget(max_flash_bytes=10_000)
    with pytest.raises(InvalidArgumentError, match=r"max_arena_bytes=0 must be a positive integer"):
        kopt.Budget(target="micro", max_arena_bytes=0)


@pytest.mark.backends
def test_budget_reads_as_a_sentence_in_search_reports():
    from kopt.search.candidates import budget_text

    text = budget_text({"max_accuracy_drop": 0.01, "target": "edgetpu", "max_size_bytes": 20_000,
                        "max_candidates": None, "m_by_n": (2, 4)})
    assert text == ("edgetpu model with accuracy at most 1.00 pt below the float model, zipped size <= 20,000 B, "
                    "2:4 sparsity")
    assert "{" not in text and "None" not in text
