"""Wrapped models trained on two devices match the same training on one device.

Each engine runs in a child process (``distributed_cases.py``) because its devices must
be configured before TensorFlow or JAX initialises: ``MirroredStrategy`` over two logical
CPUs (TensorFlow backend) and ``keras.distribution.DataParallel`` over two host devices
(JAX, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``). Both children start at
once; each trains the PCQAT stack (prune -> cluster keeping zeros -> QAT keeping both) on
one device and distributed, with the plain model built outside the distribution scope and
every wrapping done inside it, on the same global batches.

Unmarked (except the pass-through check): the children pick their own backend, so these run
in the TensorFlow pass only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("distributed_cases.py")
ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("mirrored", "data_parallel")
STEPS = 4  # distributed_cases.STEPS
CLUSTERS = 4
# Two replicas sum two half-batch gradients where one device sums one batch: float32
# round-off, a few ulps after 4 steps. Anything from replica 0's half alone is off by ~1e-1.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    env = {key: value for key, value in os.environ.items() if key not in ("KERAS_BACKEND", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    children = {
        engine: subprocess.Popen(
            [sys.executable, str(SCRIPT), engine], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for engine in ENGINES
    }
    results = {}
    for engine, child in children.items():
        stdout, stderr = child.communicate(timeout=600)
        lines = [line for line in stdout.splitlines() if line.startswith("KOPT_RESULT ")]
        assert child.returncode == 0 and lines, f"{engine} child failed:\n{stderr[-4000:]}"
        results[engine] = json.loads(lines[-1][len("KOPT_RESULT "):])
    return results


def _pair(runs: dict, engine: str, stage: str) -> tuple[dict, dict]:
    result = runs[engine]
    for name, run in (("single-device", result["single"]), ("distributed", result["distributed"]["wrap_in_scope"])):
        assert "error" not in run, f"{engine} {name} run failed: {run.get('trace', run.get('error'))}"
    return result["single"][stage], result["distributed"]["wrap_in_scope"][stage]


def _variables(run: dict, suffix: str) -> list[np.ndarray]:
    return [np.asarray(v["value"]) for v in run["variables"] if v["name"].endswith(suffix)]


@pytest.mark.backends
def test_extremes_pass_through_outside_a_multi_replica_step():
    import keras

    from kopt.core.distribute import cross_replica_extremes

    low, high = cross_replica_extremes(keras.ops.convert_to_tensor(-1.5), keras.ops.convert_to_tensor(2.5))
    assert float(keras.ops.convert_to_numpy(low)) == -1.5 and float(keras.ops.convert_to_numpy(high)) == 2.5


@pytest.mark.parametrize("engine", ENGINES)
def test_children_use_the_expected_backend(runs, engine):
    assert runs[engine]["backend"] == {"mirrored": "tensorflow", "data_parallel": "jax"}[engine]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("stage", ["prune", "cluster", "qat"])
def test_every_variable_is_replicated_and_identical_on_both_devices(runs, engine, stage):
    _, distributed = _pair(runs, engine, stage)
    assert distributed["replication"] == {"devices": 2, "agree": True}


@pytest.mark.parametrize("engine", ENGINES)
def test_pruning_masks_and_step_match_single_device(runs, engine):
    single, distributed = _pair(runs, engine, "prune")
    assert single["figures"]["steps"] == distributed["figures"]["steps"]
    assert set(distributed["figures"]["steps"].values()) == {STEPS}
    single_masks, distributed_masks = _variables(single, "_mask"), _variables(distributed, "_mask")
    assert len(single_masks) == 4
    for expected, got in zip(single_masks, distributed_masks):
        np.testing.assert_array_equal(got, expected)
    assert distributed["figures"]["sparsity"] == single["figures"]["sparsity"]
    # The schedule's final sparsity (0.7) was reached, so the masks really changed.
    assert all(abs(value - 0.7) < 0.01 for value in distributed["figures"]["sparsity"].values())


@pytest.mark.parametrize("engine", ENGINES)
def test_cluster_centroids_and_assignments_match_single_device(runs, engine):
    single, distributed = _pair(runs, engine, "cluster")
    for expected, got in zip(_variables(single, "_centroids"), _variables(distributed, "_centroids")):
        np.testing.assert_allclose(got, expected, **TOLERANCE)
    for expected, got in zip(_variables(single, "_assignments"), _variables(distributed, "_assignments")):
        np.testing.assert_array_equal(got, expected)
    assert distributed["figures"]["unique"] == single["figures"]["unique"]
    assert all(count <= CLUSTERS for count in distributed["figures"]["unique"].values())
    # The zeros of pruning survived clustering in both runs.
    assert distributed["figures"]["sparsity"] == single["figures"]["sparsity"]
    assert all(value > 0.65 for value in distributed["figures"]["sparsity"].values())


@pytest.mark.parametrize("engine", ENGINES)
def test_activation_ranges_match_single_device(runs, engine):
    single, distributed = _pair(runs, engine, "qat")
    expected, got = single["figures"]["ranges"], distributed["figures"]["ranges"]
    assert expected.keys() == got.keys() and len(got) >= 4  # input, hidden, shared concat range, logits
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], **TOLERANCE, err_msg=name)


@pytest.mark.parametrize("engine", ENGINES)
def test_pcqat_keeps_sparsity_and_unique_values_like_single_device(runs, engine):
    single, distributed = _pair(runs, engine, "qat")
    assert distributed["figures"]["sparsity"] == single["figures"]["sparsity"]
    assert distributed["figures"]["unique"] == single["figures"]["unique"]
    if runs[engine]["single"]["scheme"] == "prune_cluster_preserve":
        assert all(value > 0.65 for value in distributed["figures"]["sparsity"].values())
        assert all(count <= CLUSTERS for count in distributed["figures"]["unique"].values())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("stage", ["prune", "cluster", "qat"])
def test_all_variables_match_single_device(runs, engine, stage):
    single, distributed = _pair(runs, engine, stage)
    assert [v["name"] for v in single["variables"]] == [v["name"] for v in distributed["variables"]]
    for expected, got in zip(single["variables"], distributed["variables"]):
        np.testing.assert_allclose(got["value"], expected["value"], **TOLERANCE, err_msg=expected["name"])
