"""kopt side by side with TFMOT: accuracy, size, training-step overhead, conversion time, latency.

Models (see ``_compare_setup.py``): a Conv1D CNN on mnist1d (20 000 samples generated offline),
a Conv2D CNN with DepthwiseConv2D, BatchNormalization and Concatenate on scikit-learn digits,
and MobileNetV2 (alpha 0.35, 96x96, random weights; speed and size only). Variants: baseline,
PTQ, pruned 50%, pruned 2:4, clustered 16, QAT, PQAT, CQAT, PCQAT, each run with
``kopt.optimize`` from the same trained float model.

Figures: float and int8 TFLite accuracy, ``.tflite`` and zipped size, training-step time of
every stage's wrapped model relative to the float model (alternated, median of paired ratios),
int8 conversion time, single-thread LiteRT latency of int8 against float (interleaved).

``--tfmot`` also creates ``benchmarks/.tfmot-venv`` (tensorflow + tf-keras +
tensorflow-model-optimization from PyPI, never a kopt dependency), runs ``tfmot_side.py`` in it
on the same architectures, float weights, data, seeds, epochs and batch sizes, measures its
``.tflite`` files here with the same code, and prints kopt / TFMOT ratios.

Run: ``python benchmarks/compare.py [--tfmot] [--quick] [--models mnist1d_conv1d digits_conv2d mobilenetv2]``.
Writes benchmarks/results/compare.json and compare.md (``--quick``: compare_quick.json / .md); the data,
float weights, .tflite files and each side's raw JSON go to benchmarks/results/compare_work_full/
(``--quick``: compare_work/).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _compare_setup as setup  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import (  # noqa: E402
    environment,
    float_tflite,
    litert_latency,
    markdown_table,
    mnist1d_arrays,
    noise_note,
    paired_quartiles,
    timed,
    train_step_ratios,
    write_json,
    write_markdown,
    zipped_size,
)

import kopt  # noqa: E402
from kopt.export import evaluate, to_tflite  # noqa: E402

TFMOT_VENV = HERE / ".tfmot-venv"
NOT_AVAILABLE = "not available in this kopt (scheme {!r} not registered)"
# Targets of issue 9. PQAT and CQAT have no target of their own: judged against PCQAT's.
STEP_TARGETS = {"prune": 1.10, "prune_2x4": 1.10, "cluster": 1.2, "qat": 1.25, "pqat": 1.4, "cqat": 1.4, "pcqat": 1.4}
ACCURACY_POINTS = 1.0
ACCURACY_VS_TFMOT_POINTS = 0.5
LATENCY_TARGET = 0.45
# Issue 9 sets the int8/float latency target "on the CNNs"; MobileNetV2 is there for training
# speed (its int8/float ratio, the same for TFMOT's file, is reported, not judged).
LATENCY_TARGET_MODELS = ("mnist1d_conv1d", "digits_conv2d")
# kopt's int8 file vs TFMOT's: the same ops on the same kernels; below this the two are reported
# as equal (on the ~7 us digits invokes 1 % is 70 ns; repeated head-to-head runs of the same two
# files gave 0.996-1.009).
LATENCY_TIE = 0.01
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ------------------------------------------------------------------ data and float models
def make_data(name: str, protocol: setup.Protocol) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test arrays, generated offline; stored for the TFMOT side."""
    if name == "mnist1d_conv1d":
        x, y, x_test, y_test = mnist1d_arrays(protocol.samples, setup.SEED)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(setup.SEED).permutation(len(digits.target))
        images = (digits.images[order] / 16.0).astype("float32")[..., None]
        labels = digits.target[order].astype("int64")
        x, y, x_test, y_test = images[:1400], labels[:1400], images[1400:], labels[1400:]
    setup.data_path(name).parent.mkdir(parents=True, exist_ok=True)
    np.savez(setup.data_path(name), x=x, y=y, x_test=x_test, y_test=y_test)
    return x, y, x_test, y_test


def train_float(name: str, protocol: setup.Protocol, x: np.ndarray, y: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(setup.SEED)
    model = setup.BUILDERS[name](keras)
    steps = protocol.float_epochs * -(-len(x) // protocol.batch)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(protocol.float_lr, steps)), LOSS)
    model.fit(x, y, batch_size=protocol.batch, epochs=protocol.float_epochs, verbose=0)
    setup.save_weights(model.get_weights(), setup.weights_path(name))
    return model


def finetune_compiled(model: keras.Model, protocol: setup.Protocol) -> keras.Model:
    model.compile(keras.optimizers.Adam(protocol.finetune_lr), LOSS, metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(model.predict(x, batch_size=512, verbose=0)).argmax(-1) == y))


# ------------------------------------------------------------------ kopt variants
def scheme_available(variant: str) -> bool:
    scheme = setup.SCHEMES.get(variant)
    return scheme is None or scheme in kopt.quantization.available_schemes()


def kopt_policy(variant: str, schedule: dict[str, Any]) -> kopt.Policy:
    """The variant's preset with the pruning schedule both sides use."""
    policy = kopt.Policy.preset(setup.VARIANTS[variant][0])
    if policy.prune is not None:
        prune = dataclasses.replace(
            policy.prune,
            initial_sparsity=schedule["initial_sparsity"],
            sparsity=schedule["final_sparsity"],
            begin_step=schedule["begin_step"],
            end_step=schedule["end_step"],
            frequency=schedule["frequency"],
        )
        policy = dataclasses.replace(policy, prune=prune)
    return policy


def save_tflite(name: str, variant: str, kind: str, data: bytes) -> str:
    path = setup.tflite_path("kopt", name, variant, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def run_kopt_variant(name: str, variant: str, protocol: setup.Protocol, base: keras.Model, data: tuple) -> dict[str, Any]:
    x, y, x_test, y_test = data
    _, stages = setup.VARIANTS[variant]
    if not scheme_available(variant):
        return {"error": NOT_AVAILABLE.format(setup.SCHEMES[variant]), "stages": list(stages)}
    policy = kopt_policy(variant, protocol.pruning_schedule(len(x)))
    calibration = x[: protocol.calibration_samples]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = kopt.optimize(
            base, policy, train_data=(x, y), validation_data=(x_test, y_test), epochs=protocol.stage_epochs,
            batch_size=protocol.batch, optimizer=keras.optimizers.Adam(protocol.finetune_lr), loss=LOSS,
            metrics=["accuracy"], seed=setup.SEED, verbose=0, lower=False,  # lowered below, timed
        )
    final = result.model
    quantized = "quantize" in stages
    row: dict[str, Any] = {"stages": list(stages), "keras_accuracy": accuracy(final, x_test, y_test)}
    row["convert_s"], tflite = timed(lambda: to_tflite(final, representative_data=None if quantized else calibration))
    row["int8_tflite"] = save_tflite(name, variant, "int8", tflite)
    if not quantized:
        row["float_tflite"] = save_tflite(name, variant, "float", float_tflite(final, setup.INPUT_SHAPES[name]))
    trained = [s for s in result.stages if s.model is not None]  # baseline, then one per training stage
    row["_stage_inputs"] = {stage.name: previous.model for previous, stage in zip(trained, trained[1:])}
    row["_policy"] = policy
    return row


def kopt_stage_timing(name: str, protocol: setup.Protocol, base: keras.Model, rows: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """Training-step time of every stage's wrapped model (``kopt.prepare``) against the float model."""
    models: dict[str, keras.Model] = {"float": finetune_compiled(kopt.graph.map_layers(base, lambda layer: None), protocol)}
    callbacks: dict[str, list] = {}
    steps = protocol.steps(len(x))
    for key, timed_stage in setup.TIMED_STAGES.items():
        variant, stage = timed_stage.split(":")
        row = rows.get(variant, {})
        if stage not in row.get("_stage_inputs", {}):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = kopt.prepare(row["_stage_inputs"][stage], row["_policy"], stage=stage, steps=steps, seed=setup.SEED, compile=False)
        models[key] = finetune_compiled(wrapped, protocol)
        callbacks[key] = kopt.callbacks.for_model(wrapped)
    return train_step_ratios(
        keras, models, x, y, batch=protocol.timing_batch, rounds=protocol.timing_rounds, steps=protocol.timing_steps,
        baseline="float", callbacks=callbacks,
    )


def run_kopt_cnn(name: str, protocol: setup.Protocol) -> dict[str, Any]:
    data = make_data(name, protocol)
    x, y, x_test, y_test = data
    print(f"[kopt] {name}: training the float model ({protocol.float_epochs} epochs)", flush=True)
    base = finetune_compiled(train_float(name, protocol, x, y), protocol)
    result: dict[str, Any] = {
        "protocol": setup.protocol_dict(protocol),
        "pruning_schedule": protocol.pruning_schedule(len(x)),
        "train_samples": len(x),
        "test_samples": len(x_test),
        "parameters": int(base.count_params()),
        "float_keras_accuracy": accuracy(base, x_test, y_test),
        "variants": {"baseline": {"float_tflite": save_tflite(name, "baseline", "float", float_tflite(base, setup.INPUT_SHAPES[name]))}},
    }
    for variant in setup.VARIANTS:
        if variant == "baseline":
            continue
        print(f"[kopt] {name} {variant}", flush=True)
        result["variants"][variant] = run_kopt_variant(name, variant, protocol, base, data)
    print(f"[kopt] {name} training-step timing", flush=True)
    result["train_step"] = kopt_stage_timing(name, protocol, base, result["variants"], x, y)
    for row in result["variants"].values():
        row.pop("_stage_inputs", None)
        row.pop("_policy", None)
    return result


def run_kopt_mobilenet(protocol: setup.Protocol) -> dict[str, Any]:
    """MobileNetV2: training-step ratios of each technique's wrapped model, PTQ and QAT int8 files."""
    name = "mobilenetv2"
    rng = np.random.default_rng(setup.SEED)
    count = protocol.timing_batch * (protocol.timing_steps + 4)
    x = rng.uniform(-1, 1, (count, 96, 96, 3)).astype("float32")
    y = rng.integers(0, 10, count)
    keras.utils.set_random_seed(setup.SEED)
    base = setup.mobilenet_v2(keras)
    schedule = {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": 1000, "frequency": 100}
    result: dict[str, Any] = {"parameters": int(base.count_params()), "variants": {}}
    result["variants"]["baseline"] = {"float_tflite": save_tflite(name, "baseline", "float", float_tflite(base, setup.INPUT_SHAPES[name]))}
    seconds, tflite = timed(lambda: to_tflite(base, representative_data=x[: protocol.calibration_samples]))
    result["variants"]["ptq"] = {"convert_s": seconds, "int8_tflite": save_tflite(name, "ptq", "int8", tflite)}
    models: dict[str, keras.Model] = {"float": finetune_compiled(kopt.graph.map_layers(base, lambda layer: None), protocol)}
    callbacks: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variant, stage in (("prune", "prune"), ("prune_2x4", "prune"), ("cluster", "cluster"), ("qat", "quantize")):
            wrapped = kopt.prepare(base, kopt_policy(variant, schedule), stage=stage, seed=setup.SEED, compile=False)
            models[variant] = finetune_compiled(wrapped, protocol)
            callbacks[variant] = kopt.callbacks.for_model(wrapped)
    qat = models["qat"]
    qat.fit(x, y, batch_size=protocol.timing_batch, epochs=1, verbose=0)  # ranges from data, not their init
    seconds, tflite = timed(lambda: to_tflite(qat))
    result["variants"]["qat"] = {"convert_s": seconds, "int8_tflite": save_tflite(name, "qat", "int8", tflite)}
    print("[kopt] mobilenetv2 training-step timing", flush=True)
    result["train_step"] = train_step_ratios(
        keras, models, x, y, batch=protocol.timing_batch, rounds=protocol.timing_rounds, steps=protocol.timing_steps,
        baseline="float", callbacks=callbacks,
    )
    return result


# ------------------------------------------------------------------ TFMOT side
def tf_version() -> str:
    return importlib.metadata.version("tensorflow")


def ensure_tfmot_venv() -> Path:
    """Create ``benchmarks/.tfmot-venv`` with TFMOT (same TensorFlow as here when PyPI has a
    matching tf-keras, else the newest pair pip resolves)."""
    python = TFMOT_VENV / "bin" / "python"
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import tensorflow_model_optimization, tf_keras"], capture_output=True,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if probe.returncode == 0:
            return python
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    print(f"[tfmot] creating {TFMOT_VENV}", flush=True)
    subprocess.run([base_python, "-m", "venv", str(TFMOT_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    version = tf_version()
    minor = ".".join(version.split(".")[:2])
    pinned = subprocess.run([*pip, f"tensorflow=={version}", f"tf-keras~={minor}.0", "tensorflow-model-optimization"])
    if pinned.returncode != 0:
        print(f"[tfmot] no tf-keras for TensorFlow {version}; installing the newest compatible pair", flush=True)
        subprocess.run([*pip, "tensorflow", "tf-keras", "tensorflow-model-optimization"], check=True)
    return python


def output_name(quick: bool) -> str:
    return "compare_quick" if quick else "compare"


def run_tfmot(models: list[str], quick: bool) -> dict[str, Any]:
    python = ensure_tfmot_venv()
    out = setup.WORK / "tfmot_side.json"
    command = [str(python), str(HERE / "tfmot_side.py"), "--out", str(out), "--work", str(setup.WORK), "--models", *models]
    if quick:
        command.append("--quick")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(command, env=env)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"tfmot_side.py failed with exit code {proc.returncode}", "models": {}}
    return json.loads(out.read_text())


# ------------------------------------------------------------------ measuring the .tflite files
def measure_files(name: str, sides: dict[str, dict], protocol: setup.Protocol) -> None:
    """Accuracy, sizes and interleaved single-thread latency of every side's files, in place."""
    data = setup.load_data(name) if setup.data_path(name).exists() and name != "mobilenetv2" else None
    latency_models: dict[str, bytes] = {}
    for side, result in sides.items():
        for variant, row in result.get("variants", {}).items():
            for kind in ("float", "int8"):
                path = row.get(f"{kind}_tflite")
                if not path:
                    continue
                blob = Path(path).read_bytes()
                row[f"{kind}_bytes"] = len(blob)
                row[f"{kind}_zipped"] = zipped_size(blob)
                if data is not None:
                    row[f"{kind}_accuracy"] = evaluate(blob, data[2], data[3], num_threads=1)
                if kind == "int8" or variant == "baseline":
                    latency_models[f"{side}:{variant}:{kind}"] = blob
    reference = "kopt:baseline:float"
    if reference not in latency_models:
        return
    latency_models["null"] = null_tflite()
    rounds = 5 if protocol.timing_rounds <= 3 else 15
    invokes = 5 if name == "mobilenetv2" else 20
    latency = litert_latency(latency_models, rounds=rounds, invokes=invokes, baseline=reference)
    overhead = latency.pop("null")["median_ms"]
    float_net = latency[reference]["median_ms"] - overhead
    for key, figures in latency.items():
        side, variant, kind = key.split(":")
        row = sides[side]["variants"][variant]
        row[f"{kind}_latency_ms"] = figures["median_ms"]
        row[f"{kind}_latency_vs_float"] = figures["ratio"]
        row[f"{kind}_net_latency_vs_float"] = (figures["median_ms"] - overhead) / float_net
    sides["kopt"]["invoke_overhead_ms"] = overhead
    for variant, row in sides["kopt"]["variants"].items():
        mine, theirs = latency_models.get(f"kopt:{variant}:int8"), latency_models.get(f"tfmot:{variant}:int8")
        if mine is None or theirs is None:
            continue
        # Head to head: only the two files, alternated, so that neither gains from its place among
        # the thirty files above (sub-percent differences of a 7 us invoke flipped with the order).
        pair = litert_latency({"kopt": mine, "tfmot": theirs}, rounds=2 * rounds, invokes=2 * invokes, baseline="tfmot")
        row["int8_latency_vs_tfmot"] = pair["kopt"]["ratio"]
        row["int8_latency_vs_tfmot_q1"], row["int8_latency_vs_tfmot_q3"] = paired_quartiles(
            pair["kopt"]["rounds_s"], pair["tfmot"]["rounds_s"]
        )


def null_tflite() -> bytes:
    """A one-op model (x + 1 on one float): its invoke time is the interpreter's fixed cost
    per call, which dominates the tiny CNNs' latency; subtracted for the "net" ratios."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 1), tf.float32)])
    def add_one(x: Any) -> Any:
        return x + 1.0

    return tf.lite.TFLiteConverter.from_concrete_functions([add_one.get_concrete_function()], add_one).convert()


# ------------------------------------------------------------------ comparison table
def timed_row(result: dict, variant: str) -> dict:
    """The variant's training-step figures (empty when it was not timed)."""
    return result.get("train_step", {}).get(variant, {}) if variant in setup.TIMED_STAGES else {}


def step_ratio(result: dict, variant: str, figure: str = "ratio") -> float | None:
    """The variant's training-step ratio to the float model (``figure="ratio_q1"`` / ``"ratio_q3"``:
    its quartiles over the timing rounds)."""
    return timed_row(result, variant).get(figure)


def compare_rows(name: str, kopt_result: dict, tfmot_result: dict | None) -> tuple[list[dict], list[str]]:
    """One dict per variant with kopt's figures, TFMOT's, their ratios and the target verdicts."""
    rows, misses = [], []
    kv, tv = kopt_result["variants"], (tfmot_result or {}).get("variants", {})
    float_acc = kv["baseline"].get("float_accuracy")
    for variant in setup.VARIANTS:
        k, t = kv.get(variant, {}), tv.get(variant, {})
        row: dict[str, Any] = {"variant": variant, "label": setup.LABELS[variant]}
        row["kopt_error"] = k.get("error")
        if tfmot_result is not None:
            timed_only = not t and step_ratio(tfmot_result, variant) is not None  # MobileNetV2: speed only
            row["tfmot_error"] = t.get("error") if t else (None if timed_only else "not run")
        for side, src in (("kopt", k), ("tfmot", t)):
            for field in ("float_accuracy", "int8_accuracy", "int8_bytes", "int8_zipped", "float_zipped", "convert_s",
                          "int8_latency_vs_float", "int8_net_latency_vs_float", "int8_latency_ms", "float_latency_ms"):
                row[f"{side}_{field}"] = src.get(field)
        for side, result in (("kopt", kopt_result), ("tfmot", tfmot_result or {})):
            for figure in ("ratio", "ratio_q1", "ratio_q3"):
                row[f"{side}_step_{figure}"] = step_ratio(result, variant, figure)

        def ratio(a: Any, b: Any) -> float | None:
            return None if a is None or b in (None, 0) else a / b

        timed_tfmot = timed_row(tfmot_result or {}, variant)
        row["tfmot_frozen_batch_norm"] = list(timed_tfmot.get("frozen_batch_norm", []))
        for figure in ("", "_q1", "_q3"):  # TFMOT's step against a float model whose BatchNorms are frozen too
            row[f"tfmot_step_like_for_like{figure}"] = timed_tfmot.get(f"ratio_vs_frozen_float{figure}")
        row["zipped_kopt_over_tfmot"] = ratio(row["kopt_int8_zipped"], row["tfmot_int8_zipped"])
        row["step_kopt_over_tfmot"] = ratio(row["kopt_step_ratio"], row["tfmot_step_like_for_like"] or row["tfmot_step_ratio"])
        row["latency_kopt_over_tfmot"] = k.get("int8_latency_vs_tfmot")  # paired per round, not a ratio of ratios
        row["convert_kopt_over_tfmot"] = ratio(row["kopt_convert_s"], row["tfmot_convert_s"])
        label = f"{name} {variant}"
        if row["kopt_error"]:
            misses.append(f"{label}: {row['kopt_error']}")
        step, q1, q3 = row["kopt_step_ratio"], row["kopt_step_ratio_q1"], row["kopt_step_ratio_q3"]
        if step is not None and variant in STEP_TARGETS:
            if step > STEP_TARGETS[variant]:
                note = noise_note(q1, q3, STEP_TARGETS[variant])
                misses.append(f"{label}: training-step ratio {step:.3f} > {STEP_TARGETS[variant]}{note}")
            like_for_like = row["tfmot_step_like_for_like"] is not None
            figure = "tfmot_step_like_for_like" if like_for_like else "tfmot_step_ratio"
            theirs, their_q1, their_q3 = row[figure], row[f"{figure}_q1"], row[f"{figure}_q3"]
            if theirs is not None and step > theirs:
                overlap = q1 is not None and their_q3 is not None and q1 <= their_q3
                note = (f" (within run-to-run noise: kopt's middle half of rounds {q1:.3f}-{q3:.3f} overlaps TFMOT's "
                        f"{their_q1:.3f}-{their_q3:.3f})") if overlap else ""
                if like_for_like:
                    note += " — TFMOT's ratio against a float model with frozen BatchNorms, as its clustered model has"
                elif row["tfmot_frozen_batch_norm"]:
                    note += (f" — not like for like: TFMOT trained this stage with its {len(row['tfmot_frozen_batch_norm'])} "
                             "BatchNormalization layers in inference mode (moving statistics unchanged by the fine-tuning)")
                misses.append(f"{label}: training-step ratio {step:.3f} > TFMOT's {theirs:.3f}{note}")
        acc = row["kopt_int8_accuracy"]
        if acc is not None and float_acc is not None and 100 * (float_acc - acc) > ACCURACY_POINTS:
            misses.append(f"{label}: int8 accuracy {100 * acc:.2f}% is {100 * (float_acc - acc):.2f} pt below float {100 * float_acc:.2f}%")
        if acc is not None and row["tfmot_int8_accuracy"] is not None and 100 * (row["tfmot_int8_accuracy"] - acc) > ACCURACY_VS_TFMOT_POINTS:
            misses.append(f"{label}: int8 accuracy {100 * acc:.2f}% < TFMOT's {100 * row['tfmot_int8_accuracy']:.2f}% - 0.5 pt")
        if row["zipped_kopt_over_tfmot"] is not None and row["zipped_kopt_over_tfmot"] > 1.0:
            note = ""
            if name == "mobilenetv2" and row["zipped_kopt_over_tfmot"] < 1.001:
                note = (" (+{:.3%}; random weights after one epoch on random data: a difference this small changes sign "
                        "from run to run, see the README's Reproducibility)").format(row["zipped_kopt_over_tfmot"] - 1)
            misses.append(f"{label}: zipped {row['kopt_int8_zipped']} B > TFMOT's {row['tfmot_int8_zipped']} B{note}")
        lat = row["kopt_int8_latency_vs_float"]
        if lat is not None and lat > LATENCY_TARGET and name in LATENCY_TARGET_MODELS:
            misses.append(f"{label}: int8 latency {lat:.2f}x float > {LATENCY_TARGET}")
        if row["latency_kopt_over_tfmot"] is not None and row["latency_kopt_over_tfmot"] > 1.0 + LATENCY_TIE:
            note = noise_note(k.get("int8_latency_vs_tfmot_q1"), k.get("int8_latency_vs_tfmot_q3"), 1.0)
            misses.append(f"{label}: int8 latency {row['latency_kopt_over_tfmot']:.3f}x TFMOT's int8{note}")
        rows.append(row)
    return rows, misses


def pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def num(value: float | None, digits: int = 2) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def with_spread(row: dict, side: str) -> str | None:
    """``"1.136 (1.10-1.18)"``: the step ratio and the middle half of its per-round values."""
    ratio, q1, q3 = (row[f"{side}_step_{figure}"] for figure in ("ratio", "ratio_q1", "ratio_q3"))
    if ratio is None:
        return None
    return f"{ratio:.3f}" if q1 is None or q3 is None else f"{ratio:.3f} ({q1:.2f}-{q3:.2f})"


def cell_or_error(value: Any, error: str | None) -> Any:
    if error:
        return "not supported by TFMOT" if "not supported by TFMOT" in error else ("n/a: " + error.split(" (")[0])
    return value


def markdown(results: dict[str, Any]) -> str:
    with_tfmot = results.get("tfmot") is not None
    lines = ["# kopt vs TFMOT", ""]
    env = results["environment"]
    lines.append(
        f"Measured {env['date_utc']} UTC on {env['machine']} (shared with other jobs, 1-min load {env.get('load_average_1min')}); "
        f"kopt {results['versions']['kopt']}, Keras {results['versions']['keras']}, TensorFlow {results['versions']['tensorflow']}"
        + (f"; TFMOT {results['tfmot'].get('versions', {}).get('tfmot')} with tf-keras {results['tfmot'].get('versions', {}).get('tf_keras')}" if with_tfmot else "")
        + (". Quick run (small data, 1-2 epochs): a smoke test, not the figures." if results["quick"] else ".")
    )
    lines.append("")
    lines.append(
        "Accuracy: full test set, TFLite files run by LiteRT. Sizes in bytes. Step: training-step time of the "
        "variant's last stage / float model (alternated, median of paired per-round ratios; in brackets the middle half "
        "of the rounds, i.e. how far the figure moves on this machine). Latency: int8 .tflite / float .tflite, single "
        "thread, batch 1 (interleaved); latency k/T: kopt's int8 file against TFMOT's, the two alone, alternated "
        f"(within {LATENCY_TIE:.1%}: equal). Ratios kopt/TFMOT "
        "< 1 favour kopt (accuracy: difference in points)."
    )
    for name, model in results["models"].items():
        rows = model["rows"]
        lines += ["", f"## {name}", ""]
        if "invoke_overhead_ms" in model["kopt"]:
            lines.append(f"Float .tflite latency {num(model['kopt']['variants']['baseline'].get('float_latency_ms'), 3)} ms; "
                         f"fixed cost of one invoke (one-op model) {model['kopt']['invoke_overhead_ms']:.4f} ms, subtracted in "
                         "\"net latency\".")
            lines.append("")
        if "parameters" in model["kopt"]:
            acc = model["kopt"].get("float_keras_accuracy")
            lines.append(f"{model['kopt']['parameters']} parameters"
                         + (f"; float Keras accuracy {pct(acc)}%." if acc is not None else "; random weights (speed and size only)."))
            lines.append("")
        headers = ["variant", "float acc %", "int8 acc %", ".tflite B", "zipped B", "step ×", "convert s", "int8/float latency",
                   "net latency"]
        if with_tfmot:
            headers += ["TFMOT int8 acc %", "Δacc pt", "TFMOT zipped B", "zipped k/T", "TFMOT step ×", "step k/T",
                        "TFMOT convert s", "TFMOT latency", "latency k/T"]
        table = []
        for r in rows:
            err = r["kopt_error"]
            line = [r["label"], cell_or_error(pct(r["kopt_float_accuracy"]), err), cell_or_error(pct(r["kopt_int8_accuracy"]), err),
                    r["kopt_int8_bytes"], r["kopt_int8_zipped"] if r["variant"] != "baseline" else r["kopt_float_zipped"],
                    with_spread(r, "kopt"), num(r["kopt_convert_s"]), num(r["kopt_int8_latency_vs_float"], 3),
                    num(r["kopt_int8_net_latency_vs_float"], 3)]
            if with_tfmot:
                terr = r["tfmot_error"]
                tfmot_step = with_spread(r, "tfmot")
                if tfmot_step and r["tfmot_frozen_batch_norm"]:
                    tfmot_step += " †"
                    if r["tfmot_step_like_for_like"] is not None:
                        tfmot_step += (f"; {r['tfmot_step_like_for_like']:.3f} ({r['tfmot_step_like_for_like_q1']:.2f}-"
                                       f"{r['tfmot_step_like_for_like_q3']:.2f}) like for like")
                delta = None
                if r["kopt_int8_accuracy"] is not None and r["tfmot_int8_accuracy"] is not None:
                    delta = f"{100 * (r['kopt_int8_accuracy'] - r['tfmot_int8_accuracy']):+.2f}"
                line += [cell_or_error(pct(r["tfmot_int8_accuracy"]), terr), delta,
                         r["tfmot_int8_zipped"] if r["variant"] != "baseline" else r["tfmot_float_zipped"],
                         num(r["zipped_kopt_over_tfmot"], 3), cell_or_error(tfmot_step, terr),
                         num(r["step_kopt_over_tfmot"], 3), num(r["tfmot_convert_s"]), num(r["tfmot_int8_latency_vs_float"], 3),
                         num(r["latency_kopt_over_tfmot"], 3)]
            table.append(line)
        lines.append(markdown_table(headers, table))
        if any(r.get("tfmot_frozen_batch_norm") for r in rows):
            lines += ["", "† TFMOT's `ClusterWeights.call` does not pass `training` on, so the BatchNormalization layers it "
                      "wraps ran in inference mode while that stage fine-tuned (their moving statistics did not change): its "
                      "step skips the batch-statistics work the float step does, and the BatchNorms do not adapt. \"Like for "
                      "like\": the same steps against a float model whose BatchNorms are frozen too (timed alongside); "
                      "the verdict and step k/T use it."]
        extra = {k: v for k, v in model["kopt"].get("train_step", {}).items() if k not in setup.VARIANTS and k != "float"}
        if extra:
            lines += ["", "Other stages (step ×): " + ", ".join(f"{k} {v['ratio']:.3f}" for k, v in extra.items())]
    lines += ["", "## Targets missed", ""]
    lines += [f"- {m}" for m in results["misses"]] or ["- none"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tfmot", action="store_true", help="also run TFMOT in a throw-away venv and compare")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run (small data, 1-2 epochs)")
    parser.add_argument("--models", nargs="*", default=list(setup.BUILDERS), choices=list(setup.BUILDERS))
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the kopt (and TFMOT) figures of the last run of the same kind; measure and report only")
    args = parser.parse_args()
    setup.WORK = setup.work_dir(args.quick)
    protocols = setup.protocols(args.quick)
    results: dict[str, Any] = {
        "quick": args.quick,
        "versions": {"kopt": kopt.__version__, "keras": keras.__version__, "tensorflow": tf_version()},
        "environment": environment(),
        "schemes_available": list(kopt.quantization.available_schemes()),
        "targets": {"step": STEP_TARGETS, "accuracy_points": ACCURACY_POINTS,
                    "accuracy_vs_tfmot_points": ACCURACY_VS_TFMOT_POINTS, "latency_int8_over_float": LATENCY_TARGET,
                    "latency_tie_with_tfmot": LATENCY_TIE},
        "models": {},
    }
    kopt_json, tfmot_json = setup.WORK / "kopt_side.json", setup.WORK / "tfmot_side.json"
    if args.reuse and kopt_json.exists():
        kopt_results = {k: v for k, v in json.loads(kopt_json.read_text())["models"].items() if k in args.models}
    else:
        kopt_results = {}
        for name in args.models:
            protocol = protocols[name]
            kopt_results[name] = run_kopt_mobilenet(protocol) if name == "mobilenetv2" else run_kopt_cnn(name, protocol)
            write_json(kopt_json.name, {"models": kopt_results}, directory=setup.WORK)
    tfmot = None
    if args.tfmot:
        tfmot = json.loads(tfmot_json.read_text()) if args.reuse and tfmot_json.exists() else run_tfmot(args.models, args.quick)
    results["tfmot"] = None if tfmot is None else {k: v for k, v in tfmot.items() if k != "models"}
    misses: list[str] = []
    for name in args.models:
        sides = {"kopt": kopt_results[name]}
        if tfmot is not None and name in tfmot.get("models", {}):
            sides["tfmot"] = tfmot["models"][name]
        print(f"[compare] {name}: accuracy, sizes, latency of the .tflite files", flush=True)
        measure_files(name, sides, protocols[name])
        rows, model_misses = compare_rows(name, sides["kopt"], sides.get("tfmot") if tfmot is not None else None)
        misses += model_misses
        results["models"][name] = {"kopt": sides["kopt"], "tfmot": sides.get("tfmot"), "rows": rows}
    results["misses"] = misses
    results["environment"]["load_average_1min_end"] = environment().get("load_average_1min")
    json_path = write_json(output_name(args.quick), results)
    text = markdown(results)
    md_path = write_markdown(output_name(args.quick), text)
    print(text)
    print(f"\nwrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
