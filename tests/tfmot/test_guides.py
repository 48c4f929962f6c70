"""TFMOT's own guide notebooks, run on Keras 3 with ``import kopt.tfmot as tfmot`` (the client of issue 22).

The notebooks and their runner live in ``../shared/tfmot-guides`` beside the checkout (TFMOT's
guides are Apache-2.0 but not vendored here); without that folder the tests skip. Each
notebook runs in a fresh process with the runner's own edits (``guide_driver.py``), must
finish every cell, and the models it leaves behind must have the structure the guide
claims: the sparsity TFMOT's schedule gives, at most ``number_of_clusters`` values per
kernel, int8 TFLite ops. The project's own tests (test_sparsity/clustering/quantization)
cover the same names without the notebooks.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ROOT.parent / "shared" / "tfmot-guides"
RUNNER = GUIDES / "run_notebook.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RUNNER.exists(), reason=f"TFMOT guide notebooks not found at {GUIDES} (bare clone)"),
]


def run_guide(name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("guide_driver.py")), str(RUNNER), str(GUIDES / f"{name}.ipynb")],
        capture_output=True, text=True, env=env, timeout=1200, cwd=str(ROOT), check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("MEASURED "))
    return json.loads(line[len("MEASURED "):])


def polynomial_decay_sparsity(initial: float, final: float, begin: int, end: int, steps: int,
                              frequency: int = 100, power: float = 3) -> float:
    """TFMOT's PolynomialDecay after ``steps`` training steps: the value at the last step that pruned
    (``begin + k * frequency``, not after ``end``)."""
    last = begin + ((min(end, steps - 1) - begin) // frequency) * frequency
    progress = min(1.0, max(0.0, (last - begin) / (end - begin)))
    return final + (initial - final) * (1 - progress) ** power


def int8_ops(tflite: dict) -> bool:
    return bool(tflite["ops"]) and all(op["input"] == "int8" and op["weight"] == "int8" for op in tflite["ops"])


def test_pruning_with_keras():
    m = run_guide("pruning_with_keras")
    end = int(m["end_step"]["value"])
    expected = polynomial_decay_sparsity(0.5, 0.8, 0, end, steps=end)
    assert m["model_for_export"]["type"] == "Sequential"
    for name, kernel in m["model_for_export"]["kernels"].items():
        assert kernel["sparsity"] == pytest.approx(expected, abs=0.01), name
    for weights in m["pruned_tflite_model"]["weights"] + m["quantized_and_pruned_tflite_model"]["weights"]:
        assert weights["sparsity"] >= expected - 0.01
    assert "int8" in {op["weight"] for op in m["quantized_and_pruned_tflite_model"]["ops"]}


def test_clustering_example():
    m = run_guide("clustering_example")
    assert m["final_model"]["type"] == "Sequential"
    assert set(m["final_model"]["kernels"]) == {"conv2d", "dense"}
    for name, kernel in m["final_model"]["kernels"].items():
        assert kernel["unique"] <= 16, name
    assert all(w["unique"] <= 16 for w in m["tflite_clustered_model"]["weights"])
    # dynamic-range int8 weights get one scale per output channel: at most 16 values in each
    assert all(w["unique_per_channel"] <= 16 for w in m["tflite_quant_model"]["weights"])


def test_training_example():
    m = run_guide("training_example")
    assert m["q_aware_model"]["type"] == "Sequential"
    assert int8_ops(m["quantized_tflite_model"])
    assert len(m["quantized_tflite_model"]["ops"]) == 2  # CONV_2D and FULLY_CONNECTED


def test_pqat_example():
    m = run_guide("pqat_example")
    for name, kernel in m["stripped_pruned_model"]["kernels"].items():
        assert kernel["sparsity"] == pytest.approx(0.5, abs=0.005), name
    assert m["pqat_model"]["type"] == "Sequential"
    assert all(math.isclose(k["sparsity"], 0.5, abs_tol=0.005) or k["sparsity"] > 0.5
               for k in m["pqat_model"]["kernels"].values())
    assert int8_ops(m["pqat_tflite_model"]) and int8_ops(m["qat_tflite_model"])
    assert all(w["sparsity"] >= 0.495 for w in m["pqat_tflite_model"]["weights"])
