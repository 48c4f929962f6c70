"""What the automatic search must respect: :class:`Budget`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kopt.errors import InvalidArgumentError

TARGETS = ("int8", "edgetpu")


class BudgetNotMetWarning(UserWarning):
    """No candidate the search measured meets the budget; the closest one is returned."""


@dataclass(frozen=True)
class Budget:
    """Limits for ``kopt.optimize(model, "auto", budget=...)``.

    Model limits (what the returned int8 model must meet):
        max_accuracy_drop: largest allowed drop of int8 validation accuracy below the float
            model's, as a fraction (0.01 = 1 point).
        max_size_bytes: largest allowed zipped ``.tflite`` size; once a candidate meets it
            and the accuracy budget, the search stops (smaller is not needed).
        target: ``"int8"`` (fully-int8 TFLite) or ``"edgetpu"`` (also fully mapped to the Edge
            TPU per :func:`kopt.export.check_edgetpu`).

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
