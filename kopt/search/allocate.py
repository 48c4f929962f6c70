"""Per-layer settings from a sensitivity table: spend accuracy where it buys the most size.

Each layer has a ladder of levels (sparsities, or cluster counts), mildest first. Raising a
layer one level *saves* something (weights removed, bits per weight) and *costs* the
one-shot accuracy drop the sensitivity table measured for that layer at that level. The
greedy :func:`allocate` raises, one level at a time, the layer with the best saving per
unit of cost until the total saving reaches the target — the large, robust layers go
first, the small, sensitive ones last (often never): the "selective" configurations of the
TFLite collaborative-optimization guides, found from measurements instead of by hand.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

OFF = -1  # level index of a layer the technique leaves alone

# The cost of a step is never taken below this drop (0.1 accuracy point): between two
# free steps the larger saving wins, and noise in tiny drops does not decide the order.
COST_FLOOR = 1e-3


def _cumulative_max(values: Sequence[float]) -> list[float]:
    """Drops made monotone (a more aggressive level never costs less than a milder one).

    A NaN drop (a level the layer cannot take, e.g. more clusters than it has values) stays
    NaN: :func:`allocate` jumps over it.
    """
    out, best = [], 0.0
    for value in values:
        if math.isnan(float(value)):
            out.append(math.nan)
            continue
        best = max(best, float(value))
        out.append(best)
    return out


def allocate(
    drops: Mapping[str, Sequence[float]],
    savings: Mapping[str, Sequence[float]],
    target: float,
    *,
    start: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Level index per layer (``OFF`` = untouched) whose total saving first reaches ``target``.

    Args:
        drops: per layer, the accuracy drop at each level (mildest first).
        savings: per layer, the saving at each level (same order; increasing).
        target: the total saving to reach; capped at what every layer at its last level saves.
        start: level index each layer starts from (a layer never goes below it; incremental
            pruning keeps the zeros it already has). Default: every layer ``OFF``.
    """
    levels = {name: OFF for name in drops}
    if start:
        levels.update({name: index for name, index in start.items() if name in levels})
    cost = {name: _cumulative_max(values) for name, values in drops.items()}

    def saving(name: str, index: int) -> float:
        return 0.0 if index == OFF else float(savings[name][index])

    def drop(name: str, index: int) -> float:
        return 0.0 if index == OFF else cost[name][index]

    def next_level(name: str, index: int) -> int | None:
        for candidate in range(index + 1, len(savings[name])):
            if not math.isnan(cost[name][candidate]):
                return candidate
        return None

    def last_level(name: str) -> int:
        usable = [i for i in range(len(savings[name])) if not math.isnan(cost[name][i])]
        return usable[-1] if usable else OFF

    ceiling = sum(saving(name, last_level(name)) for name in drops)
    goal = min(target, ceiling)
    total = sum(saving(name, index) for name, index in levels.items())
    while total < goal - 1e-12:
        best, best_next, best_score = None, OFF, -1.0
        for name in sorted(levels):  # sorted: ties resolve the same way on every run
            index = levels[name]
            following = next_level(name, index)
            if following is None:
                continue
            gain = saving(name, following) - saving(name, index)
            penalty = max(drop(name, following) - drop(name, index), COST_FLOOR)
            score = gain / penalty
            if score > best_score:
                best, best_next, best_score = name, following, score
        if best is None:
            break
        total += saving(best, best_next) - saving(best, levels[best])
        levels[best] = best_next
    return levels


__all__ = ["OFF", "allocate"]
