"""The size/accuracy chart of a search: every candidate, the Pareto front, the budget, the choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kopt.report.plots import _figure, _save

WIDTH, HEIGHT = 8.0, 5.0  # inches (800 x 500 px at kopt.plots.DPI)


def pareto_chart(report: Any, path: str | Path) -> Path:
    """Zipped size (log x) against int8 accuracy for every candidate of a :class:`SearchReport`."""
    figure = _figure(WIDTH, HEIGHT)
    axes = figure.add_subplot(1, 1, 1)
    candidates = report.candidates
    within = [c for c in candidates if c.within_budget]
    outside = [c for c in candidates if not c.within_budget]
    kb = 1024.0
    if outside:
        axes.scatter([c.zipped_bytes / kb for c in outside], [c.int8_accuracy for c in outside],
                     marker="x", color="tab:gray", label="outside budget")
    if within:
        axes.scatter([c.zipped_bytes / kb for c in within], [c.int8_accuracy for c in within],
                     marker="o", color="tab:blue", label="within budget")
    front = report.pareto()
    axes.step([c.zipped_bytes / kb for c in front], [c.int8_accuracy for c in front], where="post",
              color="tab:blue", alpha=0.5, label="Pareto front")
    for c in candidates:
        axes.annotate(str(c.index), (c.zipped_bytes / kb, c.int8_accuracy), textcoords="offset points",
                      xytext=(4, 4), fontsize=7)
    floor = report.baseline_accuracy - report.budget.get("max_accuracy_drop", 0.0)
    axes.axhline(report.baseline_accuracy, color="tab:green", linestyle=":", label="float model")
    axes.axhline(floor, color="tab:red", linestyle="--", label="accuracy budget")
    size_limit = report.budget.get("max_size_bytes")
    if size_limit:
        axes.axvline(size_limit / kb, color="tab:red", linestyle="-.", label="size budget")
    if report.best is not None:
        best = report.best
        axes.scatter([best.zipped_bytes / kb], [best.int8_accuracy], marker="*", s=250, color="tab:orange",
                     zorder=5, label=f"chosen #{best.index}")
    axes.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # "6", "20", not "6x10^0"
    axes.xaxis.set_major_formatter(plain)
    axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel("zipped .tflite size (KiB, log scale)")
    axes.set_ylabel("int8 validation accuracy")
    axes.set_title("kopt automatic search: size vs accuracy")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


__all__ = ["pareto_chart"]
