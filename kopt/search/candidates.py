"""The record of a search: one :class:`Candidate` per int8 model measured, and the table of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

WITHIN = "within budget"


@dataclass
class Candidate:
    """One deployment the search built, lowered to int8 TFLite and measured.

    Accuracies are top-1 on the validation data: ``int8_accuracy`` from the LiteRT interpreter
    running the ``.tflite`` (the figure the budget is checked against), ``keras_accuracy``
    from the Keras model before lowering. ``zipped_bytes`` is the DEFLATE size of the
    ``.tflite``; ``ratio`` the float model's zipped size over it. ``steps`` is the number of
    training steps on the path from the float model to this candidate; ``seconds`` the wall
    time spent on this candidate alone (its own fine-tuning and lowering). ``status`` is
    ``"within budget"`` or why not.
    """

    index: int
    label: str
    path: list[str]
    parent: int | None
    quantization: str
    settings: dict[str, str]
    keras_accuracy: float | None
    int8_accuracy: float
    drop: float
    tflite_bytes: int
    zipped_bytes: int
    ratio: float | None
    sparsity: float
    steps: int
    seconds: float
    status: str = WITHIN
    edgetpu: str | None = None
    notes: list[str] = field(default_factory=list)
    flash_bytes: int | None = None  # target="micro": the TFLM-compressed file
    arena_bytes: int | None = None  # target="micro": the TFLM tensor arena it needs

    @property
    def within_budget(self) -> bool:
        return self.status == WITHIN

    def summary(self) -> str:
        ratio = f" = {self.ratio:.2f}x smaller" if self.ratio else ""
        mapped = f", Edge TPU {self.edgetpu}" if self.edgetpu else ""
        if self.flash_bytes is not None:
            mapped += f", TFLM flash {self.flash_bytes:,} B, arena {self.arena_bytes or 0:,} B"
        return (
            f"#{self.index} {self.label}: int8 accuracy {self.int8_accuracy:.4f} ({-self.drop * 100:+.2f} pt), "
            f"zipped {self.zipped_bytes:,} B{ratio}{mapped} -> {self.status} [{self.seconds:.0f}s]"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other candidate beats on both size and accuracy, smallest first."""
    ordered = sorted(candidates, key=lambda c: (c.zipped_bytes, -c.int8_accuracy, c.index))
    front: list[Candidate] = []
    for candidate in ordered:
        if not front or candidate.int8_accuracy > front[-1].int8_accuracy:
            front.append(candidate)
    return front


@dataclass
class SearchReport:
    """Everything the automatic search measured, and what it chose.

    ``baseline_accuracy``: the float model's validation accuracy (same samples as the int8
    figures); ``float_zipped_bytes``: the reference of every ``ratio`` (the float32 weights,
    DEFLATE-compressed); ``chosen``: index of the returned candidate; ``stop_reason``: why the
    search ended; ``warnings``: e.g. that nothing met the budget.
    """

    budget: dict[str, Any]
    baseline_accuracy: float
    float_zipped_bytes: int
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    stop_reason: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    sensitivity: dict[str, str] = field(default_factory=dict)

    @property
    def best(self) -> Candidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]

    def pareto(self) -> list[Candidate]:
        return pareto_front(self.candidates)

    def table(self) -> str:
        """A Markdown table of every candidate (accuracy change against the float model signed as in the live log), in the order measured (chosen one in bold)."""
        rows = [
            "| # | candidate | from | quant | Keras acc | int8 acc | Δ vs float (pt) | zipped | ratio | sparsity | steps | s "
            "| status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.candidates:
            mark = "**" if c.index == self.chosen else ""
            keras_acc = "-" if c.keras_accuracy is None else f"{c.keras_accuracy:.4f}"
            ratio = "-" if c.ratio is None else f"{c.ratio:.2f}x"
            status = c.status + (f"; Edge TPU {c.edgetpu}" if c.edgetpu else "")
            if c.flash_bytes is not None:
                status += f"; TFLM flash {c.flash_bytes:,} B, arena {c.arena_bytes or 0:,} B"
            rows.append(
                f"| {mark}{c.index}{mark} | {mark}{c.label}{mark} | {'' if c.parent is None else c.parent} | "
                f"{c.quantization} | {keras_acc} | {c.int8_accuracy:.4f} | {-c.drop * 100:+.2f} | {c.zipped_bytes:,} | "
                f"{ratio} | {c.sparsity:.1%} | {c.steps} | {c.seconds:.0f} | {status} |"
            )
        return "\n".join(rows)

    def settings_table(self, index: int | None = None) -> str:
        """Per-layer settings of one candidate (default: the chosen one), as Markdown."""
        candidate = self.candidates[self.chosen if index is None else index]
        rows = ["| layer | settings |", "|---|---|"]
        rows += [f"| {layer} | {text} |" for layer, text in candidate.settings.items()]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "baseline_accuracy": self.baseline_accuracy,
            "float_zipped_bytes": self.float_zipped_bytes,
            "chosen": self.chosen,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "sensitivity": dict(self.sensitivity),
            "pareto": [c.index for c in self.pareto()],
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        lines = [
            "# kopt automatic search",
            "",
            f"Budget: {budget_text(self.budget)}. Float model: validation accuracy {self.baseline_accuracy:.4f}, "
            f"weights zipped {self.float_zipped_bytes:,} B.",
            f"Search: {len(self.candidates)} candidate(s) in {self.seconds:.0f} s; stopped because {self.stop_reason}.",
            "",
        ]
        lines += [f"> **Warning:** {w}" for w in self.warnings] + ([""] if self.warnings else [])
        lines += ["## Candidates", "", self.table(), ""]
        if self.chosen is not None:
            lines += [f"## Chosen: #{self.chosen} {self.candidates[self.chosen].label}", "", self.settings_table(), ""]
        for technique, table in self.sensitivity.items():
            lines += [f"## Sensitivity ({technique}, one-shot, no fine-tuning)", "", table, ""]
        return "\n".join(lines)

    def save(self, directory: str | Path, *, chart: bool = True) -> dict[str, Path]:
        """Write ``search.json``, ``search.md`` and (with matplotlib) ``pareto.png``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"search_json": out / "search.json", "search_markdown": out / "search.md"}
        paths["search_json"].write_text(self.to_json())
        paths["search_markdown"].write_text(self.to_markdown())
        if chart and self.candidates:
            try:
                from kopt.report.pareto import pareto_chart

                paths["pareto"] = pareto_chart(self, out / "pareto.png")
            except ImportError:  # matplotlib is optional
                pass
        return paths

    def __str__(self) -> str:
        return self.table()


def budget_text(budget: dict[str, Any]) -> str:
    """The budget as a reader says it ("int8 accuracy at most 1.00 pt below the float model, ...")."""
    parts = [f"{budget.get('target', 'int8')} model with accuracy at most "
             f"{budget.get('max_accuracy_drop', 0) * 100:.2f} pt below the float model"]
    labels = {"max_size_bytes": "zipped size <= {:,} B", "max_flash_bytes": "flash <= {:,} B",
              "max_arena_bytes": "arena <= {:,} B", "max_candidates": "at most {} candidates",
              "max_seconds": "at most {:g} s", "m_by_n": "{} sparsity"}
    for key, text in labels.items():
        value = budget.get(key)
        if value is not None:
            parts.append(text.format(":".join(map(str, value)) if key == "m_by_n" else value))
    return ", ".join(parts)


__all__ = ["Candidate", "SearchReport", "WITHIN", "budget_text", "pareto_front"]
