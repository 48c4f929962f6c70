"""What the automatic search must respect: :class:`Budget`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kopt.core.errors import InvalidArgumentError

TARGETS = ("int8", "edgetpu", "micro")


@dataclass(frozen=True)
class Budget:
    """Limits for ``kopt.optimize(model, "auto", budget=...)``.

    Model limits (what the returned int8 model must meet):
        max_accuracy_drop: largest allowed drop of int8 validation accuracy below the float
            model's, as a fraction (0.01 = 1 point).
        max_size_bytes: largest allowed zipped ``.tflite`` size; once a candidate meets it
            and the accuracy budget, the search stops (smaller is not needed).
        target: ``"int8"`` (fully-int8 TFLite), ``"edgetpu"`` (also fully mapped to the Edge
            TPU per :func:`kopt.export.check_edgetpu`) or ``"micro"`` (TFLite Micro: every
            candidate LUT-compressed for TFLM, :func:`kopt.export.micro.compress`, and it must
            load and run in the TFLM interpreter, :func:`kopt.export.check_micro`).
        max_flash_bytes: ``target="micro"`` only: largest allowed raw (compressed) ``.tflite``,
            what a microcontroller stores in flash. The search stops at the first candidate
            within it and the accuracy budget, and returns the most accurate that fits.
        max_arena_bytes: ``target="micro"`` only: largest allowed TFLM tensor arena (RAM).

    Search limits (how much work it may do):
        max_candidates: int8 candidates to measure at most (None: no limit).
        max_seconds: wall-clock limit; no new candidate starts after it (None: no limit).
            A wall-clock limit can make two runs differ; a candidate limit cannot.
        m_by_n: prune with this structured pattern (``(2, 4)``) instead of searching
            unstructured sparsities (for hardware with M:N sparse kernels).
    """

    max_accuracy_drop: float = 0.01
    max_size_bytes: int | None = None
    target: str = "int8"
    max_candidates: int | None = None
    max_seconds: float | None = None
    m_by_n: tuple[int, int] | None = None
    max_flash_bytes: int | None = None
    max_arena_bytes: int | None = None

    def __post_init__(self) -> None:
        drop = self.max_accuracy_drop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not math.isfinite(drop) or not 0 <= drop < 1:
            raise InvalidArgumentError(
                f"Budget.max_accuracy_drop={drop!r} must be a fraction in [0, 1) (0.01 = one accuracy point)."
            )
        if self.max_size_bytes is not None and (
            isinstance(self.max_size_bytes, bool) or not isinstance(self.max_size_bytes, int) or self.max_size_bytes < 1
        ):
            raise InvalidArgumentError(f"Budget.max_size_bytes={self.max_size_bytes!r} must be a positive integer or None.")
        if self.target not in TARGETS:
            raise InvalidArgumentError(f"Budget.target={self.target!r} is not valid; valid targets: {list(TARGETS)}.")
        for name in ("max_flash_bytes", "max_arena_bytes"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"Budget.{name}={value!r} must be a positive integer or None.")
            if self.target != "micro":
                raise InvalidArgumentError(
                    f"Budget.{name} limits a TFLite Micro deployment: use it with target='micro' "
                    f"(got target={self.target!r})."
                )
        if self.max_candidates is not None and (
            isinstance(self.max_candidates, bool) or not isinstance(self.max_candidates, int) or self.max_candidates < 1
        ):
            raise InvalidArgumentError(f"Budget.max_candidates={self.max_candidates!r} must be a positive integer or None.")
        if self.max_seconds is not None and (
            isinstance(self.max_seconds, bool)
            or not isinstance(self.max_seconds, (int, float))
            or not math.isfinite(self.max_seconds)
            or self.max_seconds <= 0
        ):
            raise InvalidArgumentError(f"Budget.max_seconds={self.max_seconds!r} must be a positive number or None.")
        if self.m_by_n is not None:
            pair = tuple(self.m_by_n)
            if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair) or not 0 < pair[0] < pair[1]:
                raise InvalidArgumentError(
                    f"Budget.m_by_n={self.m_by_n!r} must be a pair (M, N) with 0 < M < N, such as (2, 4)."
                )
            object.__setattr__(self, "m_by_n", pair)

    def accuracy_floor(self, baseline_accuracy: float) -> float:
        """The lowest int8 accuracy within the budget."""
        return baseline_accuracy - self.max_accuracy_drop

    def fits_size(self, zipped_bytes: int) -> bool:
        return self.max_size_bytes is None or zipped_bytes <= self.max_size_bytes

    @property
    def has_size_limit(self) -> bool:
        """A size, flash or arena limit: the search may stop at the first candidate that meets it."""
        return any(v is not None for v in (self.max_size_bytes, self.max_flash_bytes, self.max_arena_bytes))

    def micro_problem(self, report) -> str | None:
        """Why a :class:`kopt.export.MicroReport` misses the micro limits, or None if it fits."""
        if not report.runs:
            return "does not run in TFLite Micro: " + (report.errors[0] if report.errors else "unknown error")
        if self.max_flash_bytes is not None and report.flash_bytes > self.max_flash_bytes:
            return f"flash {report.flash_bytes:,} B > budget {self.max_flash_bytes:,} B"
        if self.max_arena_bytes is not None and report.arena_bytes > self.max_arena_bytes:
            return f"arena {report.arena_bytes:,} B > budget {self.max_arena_bytes:,} B"
        return None
