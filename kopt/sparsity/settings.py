"""``PruneSettings``: what pruning does to one layer, validated once when made."""

from __future__ import annotations

from dataclasses import dataclass

from kopt.core.checks import check_choice, check_fraction, check_int
from kopt.core.errors import PolicyError

SCHEDULES = ("polynomial", "constant")


@dataclass(frozen=True)
class PruneSettings:
    """Gradual magnitude pruning. ``end_step=None`` lets kopt end the schedule at 2/3 of the fine-tuning steps."""

    sparsity: float = 0.5
    schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 100
    m_by_n: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_fraction("prune.sparsity", self.sparsity)
        check_fraction("prune.initial_sparsity", self.initial_sparsity)
        check_choice("prune.schedule", self.schedule, SCHEDULES)
        check_int("prune.begin_step", self.begin_step, minimum=0)
        check_int("prune.frequency", self.frequency, minimum=1)
        if self.end_step is not None:
            check_int("prune.end_step", self.end_step, minimum=0)
            if self.end_step < self.begin_step:
                raise PolicyError(f"prune.end_step={self.end_step} is before prune.begin_step={self.begin_step}.")
        if self.m_by_n is not None:
            pair = tuple(self.m_by_n)
            if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
                raise PolicyError(f"prune.m_by_n must be a pair of integers (M, N) such as (2, 4), got {self.m_by_n!r}.")
            m, n = pair
            if not 0 < m < n:
                raise PolicyError(f"prune.m_by_n=({m}, {n}) needs 0 < M < N (M zeros in every block of N).")
            object.__setattr__(self, "m_by_n", pair)
