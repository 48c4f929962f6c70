"""Schedules: values against a NumPy formula, update steps, validation, serialization."""

import json

import keras
import numpy as np
import pytest

from kopt.core.errors import InvalidArgumentError
from kopt.sparsity import ConstantSparsity, PolynomialDecay

pytestmark = pytest.mark.backends


def reference_polynomial(step, initial, final, begin, end, power):
    progress = np.clip((step - begin) / (end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - progress) ** power


def test_polynomial_decay_matches_formula():
    schedule = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=100, power=3, frequency=5)
    for step in [0, 3, 10, 17, 55, 100, 101, 400]:
        expected = reference_polynomial(step, 0.1, 0.8, 10, 100, 3)
        assert schedule.sparsity_at(step) == pytest.approx(expected, abs=1e-6), step


def test_polynomial_decay_update_steps_include_end_step():
    schedule = PolynomialDecay(0.0, 0.5, begin_step=2, end_step=13, frequency=5)
    updates = [step for step in range(30) if schedule.updates_at(step)]
    assert updates == [2, 7, 12, 13]
    assert schedule.sparsity_at(13) == pytest.approx(0.5)


def test_constant_sparsity_updates():
    schedule = ConstantSparsity(0.6, begin_step=3, end_step=-1, frequency=4)
    assert [s for s in range(20) if schedule.updates_at(s)] == [3, 7, 11, 15, 19]
    assert schedule.sparsity_at(0) == pytest.approx(0.6)
    bounded = ConstantSparsity(0.6, begin_step=3, end_step=9, frequency=4)
    assert [s for s in range(20) if bounded.updates_at(s)] == [3, 7, 9]
    assert bounded.last_update_step() == 9 and schedule.last_update_step() is None


def test_schedule_call_returns_tensors():
    update, sparsity = PolynomialDecay(0.0, 0.5, 0, 10, frequency=1)(keras.ops.convert_to_tensor(5, "int32"))
    assert bool(keras.ops.convert_to_numpy(update))
    assert float(keras.ops.convert_to_numpy(sparsity)) == pytest.approx(0.5 - 0.5 * 0.5**3)


@pytest.mark.parametrize(
    "make, argument, value",
    [
        (lambda: ConstantSparsity(1.0, 0), "target_sparsity", "1.0"),
        (lambda: ConstantSparsity(-0.1, 0), "target_sparsity", "-0.1"),
        (lambda: ConstantSparsity("0.5", 0), "target_sparsity", "'0.5'"),
        (lambda: ConstantSparsity(0.5, -2), "begin_step", "-2"),
        (lambda: ConstantSparsity(0.5, 10, end_step=5), "end_step", "5"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "frequency", "0"),
        (lambda: ConstantSparsity(0.5, 0, frequency=-3), "frequency", "-3"),
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity", "1.0"),
        (lambda: PolynomialDecay(1.2, 0.5, 0, 10), "initial_sparsity", "1.2"),
        (lambda: PolynomialDecay(0.6, 0.5, 0, 10), "final_sparsity", "0.5"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 10), "end_step", "10"),
        (lambda: PolynomialDecay(0.0, 0.5, 10, 4), "end_step", "4"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, -1), "end_step", "-1"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, frequency=0), "frequency", "0"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power", "0"),
        (lambda: PolynomialDecay(0.0, 0.5, 0.5, 10), "begin_step", "0.5"),
    ],
)
def test_bad_schedule_values_name_argument_and_value(make, argument, value):
    with pytest.raises(InvalidArgumentError) as info:
        make()
    message = str(info.value)
    assert f"{argument}={value}" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.3, begin_step=5, end_step=50, frequency=7),
        PolynomialDecay(0.1, 0.9, 3, 40, power=2, frequency=4),
    ],
)
def test_schedules_serialize_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert restored == schedule and restored is not schedule
    assert config["registered_name"].startswith("kopt>")
