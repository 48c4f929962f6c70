"""The ``kopt`` command line, run as a subprocess (exit codes, files, no tracebacks) and in-process for usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kopt.cli import main
from tests.optimize_testing import digits, tiny_cnn, trained_cnn

ROOT = Path(__file__).resolve().parents[1]


def kopt_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kopt.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained tiny CNN saved as .keras, digits data as .npz, an int8 and a float-I/O .tflite."""
    from kopt.export import to_tflite

    root = tmp_path_factory.mktemp("cli")
    model = trained_cnn(epochs=6)
    model.save(root / "tiny.keras")
    tiny_cnn(name="plain").save(root / "plain.keras")  # saved without compile settings
    x, y, xv, yv = digits(train=256, val=128)
    np.savez(root / "digits.npz", x_train=x, y_train=y, x_val=xv, y_val=yv)
    np.savez(root / "no_labels.npz", x_train=x)
    (root / "int8.tflite").write_bytes(to_tflite(model, representative_data=x[:32]))
    (root / "float_io.tflite").write_bytes(to_tflite(model, representative_data=x[:32], int8_io=False))
    (root / "policy.json").write_text(
        json.dumps({"name": "mine", "prune": {"sparsity": 0.6}, "quantize": {}, "rules": [{"match": "conv", "prune": False}]})
    )
    (root / "bad_policy.json").write_text('{"prune": {"sparsity": 1.5}}')
    return root


def test_optimize_writes_the_result(files):
    out = files / "out"
    done = kopt_cli("optimize", str(files / "tiny.keras"), "--policy", str(files / "policy.json"),
                    "--data", str(files / "digits.npz"), "--out", str(out), "--epochs", "1", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {
        "model.keras", "model.tflite", "report.json", "report.md", "weight_density.png", "size_accuracy.png",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["name"] == "mine"
    assert [s["name"] for s in report["stages"]] == ["baseline", "prune", "quantize", "int8"]
    layers = {layer["name"]: layer for layer in report["stages"][1]["layers"]}
    assert layers["fc"]["sparsity"] == pytest.approx(0.6, abs=0.01) and layers["conv"]["sparsity"] == 0.0
    assert "int8 acc" in done.stdout and "wrote" in done.stdout
    assert "Traceback" not in done.stderr


def test_bad_input_exits_2_without_traceback(files):
    done = kopt_cli("optimize", str(files / "tiny.keras"), "--policy", str(files / "bad_policy.json"),
                    "--data", str(files / "digits.npz"), "--out", str(files / "bad"))
    assert done.returncode == 2
    assert "kopt: error:" in done.stderr and "prune.sparsity must be a number in [0, 1), got 1.5" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (files / "bad").exists()


def test_inspect_fails_when_the_edgetpu_is_required_and_not_fully_mapped(files):
    # float I/O: QUANTIZE / DEQUANTIZE run on the CPU, so the model is not fully mapped -> the job failed
    failed = kopt_cli("inspect", str(files / "float_io.tflite"), "--require-edgetpu", "--json")
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert report["edgetpu"]["fully_mapped"] is False and report["summary"]["op_counts"]["CONV_2D"] == 1
    assert "NOT fully mapped" in failed.stderr and "Traceback" not in failed.stderr


# ------------------------------------------------------------- in-process
def test_inspect_prints_summary_and_edgetpu_report(files, capsys):
    assert main(["inspect", str(files / "int8.tflite"), "--require-edgetpu"]) == 0
    out = capsys.readouterr().out
    assert "CONV_2D" in out and "(fully mapped)" in out and "Number of operations that will run on CPU: 0" in out


def test_inspect_shows_the_tflite_micro_check(files, capsys):
    pytest.importorskip("tflite_micro")
    path = files / "int8.tflite"
    assert main(["inspect", str(path), "--require-micro", "--json"]) == 0
    micro = json.loads(capsys.readouterr().out)["micro"]
    assert micro["runs"] and micro["flash_bytes"] == path.stat().st_size and micro["arena_bytes"] > 0
    assert {op["op"] for op in micro["ops"]} >= {"CONV_2D"}
    assert main(["inspect", str(path)]) == 0
    assert "TFLite Micro check: runs in TFLM" in capsys.readouterr().out


def test_policy_shows_the_resolved_plan(files, capsys):
    assert main(["policy", str(files / "tiny.keras"), "--policy", str(files / "policy.json")]) == 0
    out = capsys.readouterr().out
    assert "| conv | Conv2D | - | - | qat 8-bit | conv |" in out
    assert "| fc | Dense | 60% | - | qat 8-bit |  |" in out
    assert main(["policy", str(files / "tiny.keras"), "--policy", "pcqat", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["policy"]["name"] == "pcqat"
    assert [layer["name"] for layer in plan["layers"]] == ["conv", "pool", "flat", "fc"]
    assert plan["layers"][0]["cluster"]["preserve_sparsity"] is True and plan["layers"][1]["prune"] is None


def test_a_plugin_registers_the_scheme_a_policy_file_names(files, capsys, tmp_path, monkeypatch):
    from kopt.quantization.schemes import _SCHEMES

    (tmp_path / "my_schemes.py").write_text(
        "from kopt.quantization import default_8bit_scheme, register_scheme\n"
        "register_scheme('dense_per_channel', lambda: default_8bit_scheme(dense_per_channel=True))\n"
    )
    (tmp_path / "custom.json").write_text(json.dumps({"name": "custom", "quantize": {"scheme": "dense_per_channel"}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    args = ["policy", str(files / "tiny.keras"), "--policy", "custom.json"]
    assert main(args) == 2
    assert "Unknown quantize.scheme 'dense_per_channel'" in capsys.readouterr().err
    try:
        assert main([*args, "--plugin", "my_schemes", "--json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert {layer["quantize"]["scheme"] for layer in plan["layers"]} == {"dense_per_channel"}
    finally:
        _SCHEMES.pop("dense_per_channel", None)
        sys.modules.pop("my_schemes", None)
    assert main([*args, "--plugin", "no_such_module"]) == 2
    assert "--plugin 'no_such_module' cannot be imported" in capsys.readouterr().err


def test_help_and_usage_errors(capsys, files):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "optimize" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "x_train and y_train (required)" in help_text and "pcqat" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", str(files / "tiny.keras")])  # --policy, --data, --out missing
    assert exit_info.value.code == 2
    assert main([]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["policy", "missing.keras", "--policy", "prune"], "no model file at 'missing.keras'"),
        (["policy", "{tiny}", "--policy", "nonsense"], "neither a preset"),
        (["policy", "{tiny}", "--policy", "{root}/missing.json"], "Cannot read policy file"),
        (["inspect", "{root}/digits.npz"], "not a TFLite flatbuffer"),
        (["optimize", "{tiny}", "--policy", "qat", "--data", "{root}/no_labels.npz", "--out", "{root}/o"], "lacks ['y_train']"),
        (["optimize", "{tiny}", "--policy", "qat", "--data", "{root}/digits.npz", "--out", "{root}/o", "--epochs", "-1"], "--epochs"),
        (["optimize", "{root}/plain.keras", "--policy", "qat", "--data", "{root}/digits.npz", "--out", "{root}/o"], "is not compiled"),
        (["optimize", "{tiny}", "--policy", "qat", "--data", "{root}/digits.npz", "--out", "{root}/o", "--max-size", "9"],
         "--max-size only apply to --policy auto"),
        (["optimize", "{tiny}", "--policy", "auto", "--data", "{root}/digits.npz", "--out", "{root}/o",
          "--max-accuracy-drop", "2"], "Budget.max_accuracy_drop=2.0"),
        (["policy", "{tiny}", "--policy", "auto"], "no fixed plan"),
    ],
)
def test_bad_inputs_exit_2(files, capsys, args, message):
    args = [a.format(tiny=files / "tiny.keras", root=files) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "--verbose" in err


def test_verbose_shows_the_traceback(files, capsys):
    assert main(["policy", str(files / "tiny.keras"), "--policy", "nonsense", "--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_compile_options_build_the_fine_tuning_optimizer():
    import argparse

    import keras

    from kopt.cli import UsageError, compile_overrides
    from tests.optimize_testing import compile_model, tiny_dense

    def options(**kwargs):
        return argparse.Namespace(**{"loss": None, "metrics": None, "optimizer": None, "learning_rate": None, **kwargs})

    plain = tiny_dense()
    made = compile_overrides(options(optimizer="adam", learning_rate=0.01, loss="mse", metrics="accuracy, mae"), plain)
    assert isinstance(made["optimizer"], keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(made["optimizer"].learning_rate)) == pytest.approx(0.01)
    assert made["loss"] == "mse" and made["metrics"] == ["accuracy", "mae"]
    compiled = compile_model(tiny_dense(), lr=0.1)
    slower = compile_overrides(options(learning_rate=0.001), compiled)["optimizer"]
    assert isinstance(slower, keras.optimizers.Adam) and slower is not compiled.optimizer
    assert float(keras.ops.convert_to_numpy(slower.learning_rate)) == pytest.approx(0.001)
    with pytest.raises(UsageError, match="--learning-rate needs --optimizer"):
        compile_overrides(options(learning_rate=0.001), plain)
    with pytest.raises(UsageError, match="unknown --optimizer 'adamm'"):
        compile_overrides(options(optimizer="adamm"), plain)


def test_optimize_auto_searches_and_fails_when_the_budget_is_not_met(files):
    out = files / "auto"
    done = kopt_cli("optimize", str(files / "tiny.keras"), "--policy", "auto", "--data", str(files / "digits.npz"),
                    "--out", str(out), "--epochs", "1", "--quiet", "--max-candidates", "2", "--max-size", "10")
    assert done.returncode == 1, done.stderr[-2000:]  # nothing fits in 10 bytes: the job failed, the files are there
    assert "no candidate meets the whole budget" in done.stderr and "Traceback" not in done.stderr
    assert {"model.tflite", "search.md", "search.json", "pareto.png"} <= {p.name for p in out.iterdir()}
    search = json.loads((out / "search.json").read_text())
    assert len(search["candidates"]) == 2 and search["budget"]["max_size_bytes"] == 10
    assert "| # | candidate |" in done.stdout
