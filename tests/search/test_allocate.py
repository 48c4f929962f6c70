"""Per-layer allocation from sensitivity: the greedy spends accuracy where it buys the most saving."""

import pytest

from kopt.search.allocate import OFF, allocate

# Two layers, three levels each (mildest first). "big" saves 10x more per level and is robust.
DROPS = {"big": [0.0, 0.001, 0.02], "small": [0.01, 0.05, 0.30]}
SAVINGS = {"big": [50.0, 75.0, 90.0], "small": [5.0, 7.5, 9.0]}


def test_robust_large_layer_goes_first_and_sensitive_small_layer_stays_off():
    # 80 of a possible 99: the big layer alone can reach it (75, then 90).
    assert allocate(DROPS, SAVINGS, 80.0) == {"big": 2, "small": OFF}


def test_order_follows_saving_per_unit_of_drop():
    # Hand-computed scores (gain / max(drop step, 0.001)):
    #   big OFF->0: 50/0.001 = 50000; small OFF->0: 5/0.01 = 500          -> big to 0 (total 50)
    #   big 0->1: 25/0.001 = 25000                                          -> big to 1 (total 75)
    #   big 1->2: 15/0.019 = 789; small OFF->0: 500                          -> big to 2 (total 90)
    #   small OFF->0: 500 (only move left)                                   -> small to 0 (total 95)
    assert allocate(DROPS, SAVINGS, 91.0) == {"big": 2, "small": 0}
    assert allocate(DROPS, SAVINGS, 50.0) == {"big": 0, "small": OFF}


def test_target_above_the_ceiling_gives_every_layer_its_last_level():
    assert allocate(DROPS, SAVINGS, 1e9) == {"big": 2, "small": 2}


def test_start_levels_are_a_floor():
    # Incremental pruning: a layer that already has zeros never goes back.
    result = allocate(DROPS, SAVINGS, 0.0, start={"small": 1})
    assert result == {"big": OFF, "small": 1}
    result = allocate(DROPS, SAVINGS, 95.0, start={"small": 1})
    assert result["small"] >= 1 and result["big"] == 2


def test_non_monotone_drops_are_treated_as_monotone():
    # Noise made level 1 look better than level 0; the cost of level 1 is still >= level 0's.
    drops = {"a": [0.05, 0.0], "b": [0.02, 0.02]}
    savings = {"a": [10.0, 20.0], "b": [10.0, 20.0]}
    # a: OFF->0 costs 0.05 (score 200), b: 0.02 (score 500) -> b first.
    assert allocate(drops, savings, 10.0) == {"a": OFF, "b": 0}


@pytest.mark.parametrize("target", [0.0, 30.0, 60.0, 99.0])
def test_deterministic_on_ties(target):
    drops = {name: [0.0, 0.0] for name in ("c", "a", "b")}
    savings = {name: [10.0, 33.0] for name in ("c", "a", "b")}
    first = allocate(drops, savings, target)
    assert all(allocate(dict(reversed(list(drops.items()))), savings, target) == first for _ in range(3))
    reached = sum(0.0 if i == OFF else savings[n][i] for n, i in first.items())
    assert reached >= min(target, 99.0)


def test_levels_a_layer_cannot_take_are_jumped_over():
    # NaN: e.g. 32 clusters for a layer with fewer than 32 weights (sensitivity cannot measure it).
    nan = float("nan")
    drops = {"tiny": [nan, 0.0, 0.0], "big": [0.0, 0.0, 0.0]}
    savings = {"tiny": [3.0, 4.0, 5.0], "big": [30.0, 40.0, 50.0]}
    assert allocate(drops, savings, 54.0) == {"tiny": 1, "big": 2}
    assert allocate(drops, savings, 1e9) == {"tiny": 2, "big": 2}
    assert allocate({"x": [nan, nan]}, {"x": [1.0, 2.0]}, 5.0) == {"x": OFF}
