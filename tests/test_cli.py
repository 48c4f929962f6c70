"""The ``kopt`` command line, run as a subprocess (exit codes, files, no tracebacks) and in-process for usage."""

from __future__ import annotations

import dataclasses
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
                    "--data", str(files / "digits.npz"), "--out", str(out), "--epochs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    # #24: one line per stage and per epoch, the stage summary once, no backend chatter on stderr
    assert done.stdout.count("int8 acc") == 1 and done.stdout.count("prune     |") == 1
    epoch_lines = [line for line in done.stdout.splitlines() if "val_accuracy" in line]
    assert [line[:11] for line in epoch_lines] == ["epoch 1/2: ", "epoch 2/2: "] * 2  # prune, quantize
    assert "Epoch " not in done.stdout
    for noise in ("I0000", "W0000", "absl", "XNNPACK", "oneDNN", "cuda", "Traceback"):
        assert noise not in done.stderr, done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {
        "model.keras", "model.tflite", "report.json", "report.md", "weight_density.png", "size_accuracy.png",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["name"] == "mine"
    assert [s["name"] for s in report["stages"]] == ["baseline", "prune", "quantize", "int8"]
    layers = {layer["name"]: layer for layer in report["stages"][1]["layers"]}
    assert layers["fc"]["sparsity"] == pytest.approx(0.6, abs=0.01) and layers["conv"]["sparsity"] == 0.0
    assert "wrote" in done.stdout


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
    assert "| # | candidate |" in (out / "search.md").read_text()
    assert done.stdout == ""  # --quiet: nothing but the error line


# ------------------------------------------------- #23 / #24: start, --out, exit codes
def test_help_version_schema_and_usage_errors_load_neither_keras_nor_tensorflow():
    """#24: the console script answers these before Keras/TF load (timed in NOTES-rel.md, not here)."""
    probe = (
        "import sys\n"
        "sys.argv = ['kopt']\n"  # as the console script starts
        "from kopt.cli import main\n"
        "codes = []\n"
        "for args in (['--help'], ['--version'], ['optimize', '--help'], ['policy', '--schema'], ['optimize', 'm.keras'],\n"
        "             ['optimize', 'missing.keras', '--policy', 'qat', '--data', 'd.npz', '--out', 'o']):\n"
        "    try:\n"
        "        codes.append(main(args))\n"
        "    except SystemExit as exit:\n"
        "        codes.append(exit.code)\n"
        "loaded = sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules)\n"
        "print('RESULT', codes, loaded)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert "RESULT [0, 0, 0, 0, 2, 2] []" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    # python -m kopt.cli starts lazily too
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "kopt.cli", "--version"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)
    assert done.stdout.strip().startswith("kopt ") and done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert not {"keras", "tensorflow"} & imported


def test_import_kopt_still_registers_the_layer_classes():
    done = subprocess.run(
        [sys.executable, "-c", "import kopt, keras; print(keras.saving.get_registered_object('kopt>PruneWrapper'))"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert "PruneWrapper" in done.stdout and "None" not in done.stdout, done.stdout + done.stderr[-2000:]


def test_the_parser_knows_every_preset():
    from kopt.cli import PRESET_NAMES
    from kopt.policy.presets import PRESET_NAMES as POLICY_PRESETS

    assert PRESET_NAMES == POLICY_PRESETS


@pytest.mark.parametrize("where, message", [
    ("{root}/digits.npz", "is an existing file"),
    ("{root}/digits.npz/sub", "is a file, not a directory"),
    ("/proc/kopt-out/sub", "is not writable"),
])
def test_out_is_checked_before_anything_else(files, capsys, where, message):
    """Defect 4: an existing file or unwritable --out was found after the whole job (exit 1, results lost)."""
    out = where.format(root=files)
    # the model and data do not even exist: --out is the first thing checked
    assert main(["optimize", str(files / "nothing.keras"), "--policy", "qat", "--data", "none.npz", "--out", out]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_out_probe_leaves_nothing_behind(files, capsys):
    out = files / "fresh" / "deeper"
    assert main(["optimize", str(files / "tiny.keras"), "--policy", "qat", "--data", str(files / "missing.npz"),
                 "--out", str(out)]) == 2
    assert "no data file" in capsys.readouterr().err
    assert not (files / "fresh").exists()


@pytest.fixture(scope="module")
def bad_files(files):
    root = files / "bad_inputs"
    root.mkdir()
    raw = (files / "digits.npz").read_bytes()
    (root / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (root / "random.keras").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "not_a_model.keras").write_bytes(raw)  # a zip archive, but no Keras model in it
    x, y, _, _ = digits(train=64, val=8)
    out_of_range = y.copy()
    out_of_range[5] = 42
    np.savez(root / "labels.npz", x_train=x, y_train=out_of_range)
    np.savez(root / "text.npz", x_train=x.astype(str), y_train=y)
    np.savez(root / "shape.npz", x_train=x[:, :, :5], y_train=y)
    np.savez(root / "nan_calibration.npz", x_train=x, y_train=y, x_calibration=x * np.nan)
    rules = [{"match": f"layer_{i}", "exclude": True} for i in range(3000)]
    (root / "big_policy.json").write_text(json.dumps({"name": "big", "quantize": {}, "rules": rules}))
    return root


@pytest.mark.parametrize("model, data, policy, message", [
    ("tiny", "truncated.npz", "qat", "cannot read '{bad}/truncated.npz' as a .npz archive of arrays (BadZipFile"),
    ("random.keras", "labels.npz", "qat", "is not a valid .keras file: it is not a zip archive"),
    ("not_a_model.keras", "labels.npz", "qat", "is not a valid .keras file: Keras cannot load it"),
    ("tiny", "labels.npz", "qat", "x_train/y_train y: label 42 at index 5 is not a class of the model's 10-way output"),
    ("tiny", "text.npz", "qat", "x_train/y_train x has dtype <U"),
    ("tiny", "shape.npz", "qat", "samples of shape (8, 5, 1) do not fit the model's input shape (8, 8, 1)"),
    ("tiny", "nan_calibration.npz", "ptq", "x_calibration holds NaN or Inf (first in sample 0"),
    ("tiny", "labels.npz", "{bad}/big_policy.json", "+2990 more"),
])
def test_bad_input_found_by_validation_exits_2_in_one_line(files, bad_files, capsys, model, data, policy, message):
    """Defect 5: these printed TF stacks / whole configs / 4.7 MB lines, or exited 1."""
    model = str(files / "tiny.keras") if model == "tiny" else str(bad_files / model)
    out = files / "never_written"
    code = main(["optimize", model, "--policy", policy.format(bad=bad_files), "--data", str(bad_files / data),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message.format(bad=bad_files) in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "(run with --verbose for the full traceback)", err
    assert len(lines[0]) <= 420
    assert not out.exists()


# ------------------------------------------------------------------ policy --schema
def _validate(instance, schema, root=None, path="$"):
    """The JSON Schema keywords policy.schema.json uses (jsonschema is not a dependency): errors as strings."""
    root = root or schema
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _validate(instance, target, root, path)
    errors = []
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind == "integer" and (isinstance(instance, bool) or not isinstance(instance, int)):
        return [f"{path}: not an integer"]
    if kind == "number" and (isinstance(instance, bool) or not isinstance(instance, (int, float))):
        return [f"{path}: not a number"]
    if kind in kinds and not isinstance(instance, kinds[kind]):
        return [f"{path}: not {kind}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{path}: below minimum")
    if "maximum" in schema and instance > schema["maximum"]:
        errors.append(f"{path}: above maximum")
    if "exclusiveMaximum" in schema and instance >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: not below exclusiveMaximum")
    if "minLength" in schema and len(instance) < schema["minLength"]:
        errors.append(f"{path}: too short")
    if "oneOf" in schema:
        passing = [option for option in schema["oneOf"] if not _validate(instance, option, root, path)]
        if len(passing) != 1:
            errors.append(f"{path}: matches {len(passing)} of oneOf")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        errors += [f"{path}: missing {key}" for key in schema.get("required", []) if key not in instance]
        if schema.get("additionalProperties") is False:
            errors += [f"{path}: unknown {key}" for key in instance if key not in properties]
        for key, value in instance.items():
            if key in properties:
                errors += _validate(value, properties[key], root, f"{path}.{key}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0) or len(instance) > schema.get("maxItems", len(instance)):
            errors.append(f"{path}: wrong number of items")
        if "items" in schema:
            for index, item in enumerate(instance):
                errors += _validate(item, schema["items"], root, f"{path}[{index}]")
    return errors


def _schema():
    return json.loads((ROOT / "kopt" / "policy" / "policy.schema.json").read_text())


def test_policy_schema_is_printed_and_accepts_every_preset(capsys):
    from kopt.policy import Policy
    from kopt.policy.presets import PRESET_NAMES

    assert main(["policy", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == _schema()
    for name in PRESET_NAMES:
        dumped = json.loads(Policy.preset(name, rules=[{"match": "conv", "exclude": True}]).to_json())
        assert _validate(dumped, _schema()) == [], name


def test_policy_schema_matches_the_validation_constants():
    from kopt.clustering.init import INIT_METHODS
    from kopt.policy import TARGETS, ClusterSettings, LayerRule, Policy, PruneSettings, QuantizeSettings
    from kopt.quantization import available_schemes
    from kopt.quantization.settings import QUANTIZE_MODES
    from kopt.sparsity.settings import SCHEDULES

    schema = _schema()
    defs = schema["$defs"]
    assert schema["properties"]["target"]["enum"] == list(TARGETS)
    assert defs["prune"]["properties"]["schedule"]["enum"] == list(SCHEDULES)
    assert defs["cluster"]["properties"]["init"]["enum"] == list(INIT_METHODS)
    assert defs["quantize"]["properties"]["mode"]["enum"] == list(QUANTIZE_MODES)
    assert set(defs["quantize"]["properties"]["scheme"]["examples"]) == set(available_schemes())
    for settings, name in ((PruneSettings, "prune"), (ClusterSettings, "cluster"), (QuantizeSettings, "quantize"),
                           (LayerRule, "rule")):
        assert set(defs[name]["properties"]) == {f.name for f in dataclasses.fields(settings)}, name
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Policy)}


@pytest.mark.parametrize("policy", [
    {"target": "tpu"},
    {"prune": {"sparsity": 1.0}},
    {"prune": {"sparsity": -0.1}},
    {"prune": {"frequency": 0}},
    {"prune": {"m_by_n": [2, 4, 8]}},
    {"cluster": {"number_of_clusters": 0}},
    {"cluster": {"init": "kmeans"}},
    {"cluster": {"per_channel": "yes"}},
    {"quantize": {"bits": 9}},
    {"quantize": {"mode": "int4"}},
    {"rules": [{"exclude": True}]},
    {"rules": [{"match": ""}]},
    {"rules": [{"match": "conv", "prune": 3}]},
    {"rules": "conv"},
    {"unknown": 1},
    {"validate": "no"},
])
def test_what_the_schema_rejects_the_policy_validation_rejects(policy):
    from kopt.policy import Policy, PolicyError

    assert _validate(policy, _schema()) != []
    with pytest.raises(PolicyError):
        Policy.from_dict(policy)
