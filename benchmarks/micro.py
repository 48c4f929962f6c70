"""Deployment beyond the Edge TPU (issue 26): TFLite Micro flash, sparse storage, 16x8.

Sections (each can be run alone with ``--only``):

* ``tflm``: the mnist1d collaborative CNN (examples/collaborative_mnist1d.py's model): post-training
  int8 against PCQAT 50 % / 16 and 50 % / 4 clusters lowered for TFLite Micro
  (``to_tflite(target="micro")``). Raw file (flash) sizes, ratios against the int8 PTQ file, the
  TFLM arena each needs, int8 accuracy in LiteRT, and the TFLM interpreter's outputs of the
  compressed file against the uncompressed one on the whole test set (must be bit-identical).
* ``sparse``: a Dense-heavy mnist1d MLP pruned to 90 % with kopt.sparsity and stripped, lowered dense
  and with ``sparse=True``: raw sizes, LiteRT outputs (steps apart) and latency.
* ``search``: ``kopt.optimize(model, "auto", budget=Budget(target="micro", max_flash_bytes=...))``
  on the mnist1d CNN: which candidate it returns for a flash budget below the int8 file.
* ``int16x8``: a gain-varied mnist1d classifier (recordings from quiet to loud, the audio case)
  where int8 activations lose points: float, int8 PTQ and 16x8 PTQ accuracy in LiteRT.

Run: ``python benchmarks/micro.py`` (TensorFlow backend; ~15-30 min on 2 shared cores).
Writes benchmarks/results/micro.json and micro.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras
import numpy as np
from _harness import RESULTS, environment, markdown_table, mnist1d_arrays, write_json, write_markdown
from keras import layers

from kopt import Budget, Policy, optimize
from kopt.export import check_micro, evaluate, load_tflite, run, to_tflite
from kopt.export import micro as micro_export
from kopt.export import sparse as sparse_export
from kopt.pipeline import run_stages
from kopt.pipeline.training import CompileSettings, Training
from kopt.quantization import quantize_model
from kopt.sparsity import ConstantSparsity, prune_low_magnitude
from kopt.technique.strip import strip


def _log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------- TFLM
def _tflm_identical(compressed: bytes, plain: bytes, x: np.ndarray) -> tuple[bool, int]:
    """TFLM outputs of both files on every sample of ``x`` (quantized like the input): identical?"""
    samples = micro_export.sample_inputs(plain, x, count=len(x))
    a = micro_export.run_micro(plain, samples)
    b = micro_export.run_micro(compressed, samples)
    worst = max(int(np.max(np.abs(u[0].astype(int) - v[0].astype(int)))) for u, v in zip(a, b))
    return worst == 0, len(samples)


def _tflm_accuracy(tflite: bytes, x: np.ndarray, y: np.ndarray) -> float:
    samples = micro_export.sample_inputs(tflite, x, count=len(x))
    outputs = micro_export.run_micro(tflite, samples)
    return float(np.mean([int(np.argmax(o[0])) == int(t) for o, t in zip(outputs, y)]))


def tflm_section(args, data, model) -> dict:
    from collaborative_mnist1d import compile_settings

    x_train, y_train, x_test, y_test = data
    training = Training(
        train_data=(x_train, y_train), validation_data=(x_test, y_test), compile=compile_settings(3e-4),
        epochs={"prune": args.prune_epochs, "cluster": args.cluster_epochs, "quantize": args.qat_epochs},
        batch_size=64, verbose=0, eval_limit=None,
    )

    def path(preset, start, stages, **knobs):
        plan = Policy.preset(preset, **knobs).resolve(start)
        return run_stages(start, plan, training, stages=stages, baseline=False, seed=args.seed, lower=False)

    rows = []
    ptq = to_tflite(model, representative_data=x_train[:100])
    variants = [("int8 PTQ", model, ptq)]
    pruned = path("prune", model, ["prune"], sparsity=0.5).stage("prune").model
    for clusters in (16, 4):
        started = time.time()
        pcqat = path("pcqat", pruned, ["cluster", "quantize"], sparsity=0.5, number_of_clusters=clusters).model
        variants.append((f"PCQAT 50%/{clusters}", pcqat, to_tflite(pcqat)))
        _log(f"  PCQAT 50%/{clusters} trained in {time.time() - started:.0f}s")
    for name, keras_model, plain in variants:
        started = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = micro_export.compress(plain, x=x_test[:16])
        identical, checked = _tflm_identical(result.tflite, plain, x_test[: args.tflm_samples])
        plain_report, report = check_micro(plain), check_micro(result.tflite)
        rows.append({
            "variant": name,
            "int8_accuracy_litert": evaluate(plain, x_test, y_test),
            "tflm_accuracy_compressed": _tflm_accuracy(result.tflite, x_test[: args.tflm_samples],
                                                       y_test[: args.tflm_samples]),
            "int8_bytes": len(plain),
            "flash_bytes": result.flash_bytes,
            "ratio_vs_ptq_int8": len(ptq) / result.flash_bytes,
            "arena_bytes_uncompressed": plain_report.arena_bytes,
            "arena_bytes": report.arena_bytes,
            "compressed_tensors": [
                f"{c.name} {list(c.shape)} {c.bits}-bit {'per tensor' if c.per_channel_axis is None else 'per channel'}"
                for c in result.compressed
            ],
            "left_uncompressed": [f"{s.name}: {s.reason}" for s in result.skipped],
            "trims": list(result.trims),
            "untrimmed": list(result.untrimmed),
            "tflm_bit_identical": identical,
            "tflm_samples_compared": checked,
            "warnings": [str(w.message) for w in caught],
            "seconds": round(time.time() - started, 1),
        })
        _log(f"  {name}: {len(plain):,} -> {result.flash_bytes:,} B ({rows[-1]['ratio_vs_ptq_int8']:.2f}x vs PTQ), "
             f"arena {plain_report.arena_bytes:,} -> {report.arena_bytes:,} B, identical={identical} on {checked}")
    return {"rows": rows}


# --------------------------------------------------------------------- sparse
def sparse_section(args, data) -> dict:
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((40, 1))
    h = layers.Flatten()(inputs)
    h = layers.Dense(512, activation="relu", name="fc1")(h)
    h = layers.Dense(512, activation="relu", name="fc2")(h)
    h = layers.Dense(256, activation="relu", name="fc3")(h)
    mlp = keras.Model(inputs, layers.Dense(10, activation="softmax", name="out")(h), name="mnist1d_mlp")
    mlp.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    mlp.fit(x_train, y_train, epochs=args.mlp_epochs, batch_size=64, verbose=0)
    training = Training(train_data=(x_train, y_train), validation_data=(x_test, y_test),
                        compile=CompileSettings(optimizer=keras.optimizers.Adam(3e-4),
                                                loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
                        epochs={"prune": args.prune_epochs}, batch_size=64, verbose=0, eval_limit=None)
    plan = Policy.preset("prune", sparsity=0.9).resolve(mlp)
    pruned = run_stages(mlp, plan, training, stages=["prune"], baseline=False, seed=args.seed, lower=False).stage("prune").model
    # The same sparsity in 1x16 blocks of TFLite's [out, in] weights (16 consecutive inputs of one
    # output; Keras block_size=(16, 1)), the layout of LiteRT's sparse int8 FULLY_CONNECTED kernel.
    blocked = prune_low_magnitude(mlp, ConstantSparsity(0.9, begin_step=0, frequency=50), block_size=(16, 1))
    blocked.compile(keras.optimizers.Adam(3e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    blocked.fit(x_train, y_train, epochs=args.prune_epochs, batch_size=64, verbose=0)
    blocked = strip(blocked)
    rows = _sparse_rows(pruned, "unstructured", data) + _sparse_rows(blocked, "1x16 blocks", data)
    return {"model": "mnist1d MLP 40-512-512-256-10, 90 % pruned with kopt.sparsity, stripped", "rows": rows}


def _sparse_rows(pruned, pattern: str, data) -> list[dict]:
    x_train, _, x_test, y_test = data
    rows = []
    for mode in ("int8", "float32"):
        verdict = ""
        # 1,000 calibration samples for both files: to_tflite(sparse=True) also verifies the sparse
        # file against the dense one on them (rare one-step rounding differences need many inputs).
        kwargs = ({"representative_data": x_train[:1000], "calibration_samples": 1000} if mode == "int8"
                  else {"mode": "dynamic"})
        if mode == "float32":
            dense = _float_tflite(pruned, sparse=False)
            sparse = _float_tflite(pruned, sparse=True)
        else:
            dense = to_tflite(pruned, **kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sparse = to_tflite(pruned, sparse=True, **kwargs)
            messages = [str(w.message) for w in caught if "sparse=True" in str(w.message)]
            verdict = "; ".join(m for m in messages if "is returned dense" in m)
            if verdict:  # kopt returned the dense file: measure the converter's sparse file to show why
                sparse = _converter_sparse(pruned, x_train[:1000])
            kept_dense = [f"{name} stays dense ({why})" for m in messages
                          for name, why in re.findall(r"'([^']+)' stays dense \(([^)]*)\)", m)]
        report = sparse_export.compare(sparse, dense, x_test[:200], samples=200, repeats=5)
        rows.append({
            "pattern": pattern,
            "kopt": ("converter directly (float32 is not a to_tflite mode)" if mode == "float32"
                     else verdict or "; ".join(["sparse file kept", *kept_dense])),
            "format": mode,
            "dense_bytes": report.dense_bytes,
            "sparse_bytes": report.sparse_bytes,
            "size_ratio": report.size_ratio,
            "max_output_steps_apart": report.max_step_difference,
            "dense_latency_us": report.dense_latency_us,
            "sparse_latency_us": report.sparse_latency_us,
            "sparse_tensors": list(report.sparse_tensors),
            "accuracy_dense": evaluate(dense, x_test, y_test),
            "accuracy_sparse": evaluate(sparse, x_test, y_test),
        })
        _log(f"  sparse {pattern} {mode}: {report}")
    return rows


def _converter_sparse(model, x) -> bytes:
    """The converter's sparse int8 file, without kopt's check against the dense file."""
    from kopt.export.lowering import LoweringOptions, input_specs, lower_in_process

    return lower_in_process(model, [x], input_specs(model), LoweringOptions(sparse=True))


def _float_tflite(model, *, sparse: bool) -> bytes:
    """The float32 file (the converter's EXPERIMENTAL_SPARSITY alone), for the float sparse figure."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if sparse:
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        return bytes(converter.convert())


# --------------------------------------------------------------------- search
def search_section(args, data, model) -> dict:
    x_train, y_train, x_test, y_test = data
    ptq = to_tflite(model, representative_data=x_train[:100])
    limit = int(len(ptq) * args.flash_fraction)
    result = optimize(
        model, "auto", budget=Budget(max_accuracy_drop=0.02, target="micro", max_flash_bytes=limit,
                                     max_candidates=args.search_candidates),
        train_data=(x_train, y_train), validation_data=(x_test, y_test),
        epochs={"prune": 2, "cluster": args.cluster_epochs, "quantize": args.qat_epochs}, batch_size=64, seed=args.seed,
        verbose=0,
    )
    search = result.search
    best = search.best
    _log(f"  search: flash budget {limit:,} B -> #{best.index} {best.label}, flash {best.flash_bytes:,} B")
    return {
        "int8_ptq_bytes": len(ptq),
        "max_flash_bytes": limit,
        "chosen": best.index,
        "chosen_label": best.label,
        "chosen_flash_bytes": best.flash_bytes,
        "chosen_arena_bytes": best.arena_bytes,
        "chosen_int8_accuracy": best.int8_accuracy,
        "table": search.table(),
        "stop_reason": search.stop_reason,
        "candidates": [
            {"label": c.label, "int8_accuracy": c.int8_accuracy, "flash_bytes": c.flash_bytes,
             "arena_bytes": c.arena_bytes, "status": c.status}
            for c in search.candidates
        ],
    }


# --------------------------------------------------------------------- 16x8
def int16x8_section(args) -> dict:
    """Recordings from quiet to loud (gain 10^U(-2, 0)) fed to a positively homogeneous CNN (ReLU,
    no biases), whose class does not depend on the gain in float; int8 inputs and activations,
    scaled for the loudest recordings, leave the quiet ones a few levels."""
    x_train, y_train, x_test, y_test = mnist1d_arrays(args.samples, args.seed)
    rng = np.random.default_rng(args.seed)

    def with_gain(x):
        return (x * 10 ** rng.uniform(-2, 0, size=(len(x), 1, 1))).astype("float32")

    x_train_gain, x_test_gain = with_gain(x_train), with_gain(x_test)
    keras.utils.set_random_seed(args.seed)
    inputs = keras.Input((40, 1))
    h = layers.Conv1D(32, 5, padding="same", use_bias=False, activation="relu")(inputs)
    h = layers.Conv1D(64, 5, padding="same", use_bias=False, activation="relu")(h)
    h = layers.MaxPooling1D(2)(h)
    h = layers.Conv1D(64, 3, padding="same", use_bias=False, activation="relu")(h)
    h = layers.Dense(64, use_bias=False, activation="relu")(layers.Flatten()(h))
    model = keras.Model(inputs, layers.Dense(10, use_bias=False)(h), name="gain_invariant_cnn")
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.int16_epochs, batch_size=64, verbose=0)
    float_accuracy = float(np.mean(np.argmax(model.predict(x_test_gain, verbose=0), -1) == y_test))
    int8 = to_tflite(model, representative_data=x_train_gain[:200])
    int16 = to_tflite(model, representative_data=x_train_gain[:200], mode="int16x8")
    # 16x8 quantization-aware training: the 'int16x8' scheme (symmetric int16 activation
    # fake-quants, int8 weights), fine-tuned on the gain-varied data, lowered from its own ranges.
    started = time.time()
    qat = quantize_model(model, "int16x8")
    # A small learning rate: at 2e-4, fine-tuning on the gain-varied data costs ~2 points even in
    # float (measured: 97.5 % -> 95.5 %), whatever the quantization.
    qat.compile(keras.optimizers.Adam(args.int16_qat_lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    qat.fit(x_train_gain, y_train, epochs=args.int16_qat_epochs, batch_size=64, verbose=0)
    qat_seconds = time.time() - started
    int16_qat = to_tflite(qat, mode="int16x8")
    fake_quant = keras.ops.convert_to_numpy(qat.predict(x_test_gain[:500], verbose=0))
    output_step = float(load_tflite(int16_qat).main.tensors[load_tflite(int16_qat).main.outputs[0]].quantization.scales[0])
    out = {
        "float_accuracy": float_accuracy,
        "int8_accuracy": evaluate(int8, x_test_gain, y_test),
        "int16x8_accuracy": evaluate(int16, x_test_gain, y_test),
        "int16x8_qat_keras_accuracy": float(np.mean(np.argmax(qat.predict(x_test_gain, verbose=0), -1) == y_test)),
        "int16x8_qat_accuracy": evaluate(int16_qat, x_test_gain, y_test),
        "int16x8_qat_bytes": len(int16_qat),
        "int16x8_qat_epochs": args.int16_qat_epochs,
        "int16x8_qat_learning_rate": args.int16_qat_lr,
        "int16x8_qat_seconds": round(qat_seconds, 1),
        "int16x8_qat_litert_vs_fake_quant_steps": float(np.abs(run(int16_qat, x_test_gain[:500]) - fake_quant).max()
                                                        / output_step),
        "int8_bytes": len(int8),
        "int16x8_bytes": len(int16),
        "max_abs_logit_error_int8": float(np.abs(run(int8, x_test_gain[:500]) - model.predict(x_test_gain[:500], verbose=0)).max()),
        "max_abs_logit_error_int16x8": float(np.abs(run(int16, x_test_gain[:500]) - model.predict(x_test_gain[:500], verbose=0)).max()),
    }
    _log(f"  16x8: float {out['float_accuracy']:.4f}, int8 {out['int8_accuracy']:.4f}, 16x8 {out['int16x8_accuracy']:.4f}, "
         f"16x8 QAT {out['int16x8_qat_accuracy']:.4f} (LiteRT vs fake-quant: "
         f"{out['int16x8_qat_litert_vs_fake_quant_steps']:.1f} steps)")
    return out


# --------------------------------------------------------------------- main
def _markdown(results: dict) -> str:
    lines = ["# TFLite Micro, sparse storage and 16x8 (benchmarks/micro.py)", "",
             f"Measured {results['environment']['date_utc']} on {results['environment']['machine']}.", ""]
    if "tflm" in results:
        lines += ["## TFLite Micro flash: mnist1d CNN", "", markdown_table(
            ["variant", "int8 acc. (LiteRT, test set)",
             f"TFLM acc. (compressed, first {results['settings']['tflm_samples']})", "int8 .tflite", "TFLM flash", "vs int8 PTQ",
             "arena (plain)", "arena (compressed)", "bit-identical in TFLM"],
            [[r["variant"], f"{r['int8_accuracy_litert']:.2%}", f"{r['tflm_accuracy_compressed']:.2%}",
              f"{r['int8_bytes']:,} B", f"{r['flash_bytes']:,} B", f"{r['ratio_vs_ptq_int8']:.2f}x",
              f"{r['arena_bytes_uncompressed']:,} B", f"{r['arena_bytes']:,} B",
              f"{'yes' if r['tflm_bit_identical'] else 'NO'} ({r['tflm_samples_compared']} inputs)"]
             for r in results["tflm"]["rows"]]), ""]
        for r in results["tflm"]["rows"]:
            lines.append(f"- {r['variant']}: compressed {', '.join(r['compressed_tensors']) or 'nothing'}"
                         + (f"; left: {'; '.join(r['left_uncompressed'])}" if r["left_uncompressed"] else "")
                         + (f"; left out (TFLM does not read it): {', '.join(r['trims'])}" if r.get("trims") else ""))
        lines.append("")
    if "sparse" in results:
        lines += ["## Sparse storage: " + results["sparse"]["model"], "", markdown_table(
            ["pruning", "format", "kopt to_tflite(sparse=True)", "dense", "sparse", "ratio", "outputs apart (steps)", "latency dense", "latency sparse",
             "acc. dense", "acc. sparse"],
            [[r.get("pattern", "unstructured"), r["format"], r.get("kopt", ""), f"{r['dense_bytes']:,} B", f"{r['sparse_bytes']:,} B", f"{r['size_ratio']:.2f}x",
              r["max_output_steps_apart"], f"{r['dense_latency_us']:.0f} µs", f"{r['sparse_latency_us']:.0f} µs",
              f"{r['accuracy_dense']:.2%}", f"{r['accuracy_sparse']:.2%}"] for r in results["sparse"]["rows"]]), ""]
    if "search" in results:
        s = results["search"]
        lines += ["## auto with Budget(target='micro', max_flash_bytes)", "",
                  (f"int8 PTQ file {s['int8_ptq_bytes']:,} B; flash budget {s['max_flash_bytes']:,} B -> chose "
                  f"#{s['chosen']} {s['chosen_label']} ({s['chosen_flash_bytes']:,} B flash, arena "
                  f"{s['chosen_arena_bytes']:,} B, int8 accuracy {s['chosen_int8_accuracy']:.2%}); stopped because "
                  f"{s['stop_reason']}."), "", s["table"], ""]
    if "int16x8" in results:
        r = results["int16x8"]
        lines += ["## 16x8 on a gain-varied mnist1d classifier", "", markdown_table(
            ["float", "int8 PTQ", "16x8 PTQ", "16x8 QAT (LiteRT)", "int8 .tflite", "16x8 .tflite", "16x8 QAT .tflite",
             "16x8 QAT: LiteRT vs fake-quant"],
            [[f"{r['float_accuracy']:.2%}", f"{r['int8_accuracy']:.2%}", f"{r['int16x8_accuracy']:.2%}",
              (f"{r['int16x8_qat_accuracy']:.2%}" if "int16x8_qat_accuracy" in r else "-"),
              f"{r['int8_bytes']:,} B", f"{r['int16x8_bytes']:,} B",
              (f"{r['int16x8_qat_bytes']:,} B" if "int16x8_qat_bytes" in r else "-"),
              (f"{r['int16x8_qat_litert_vs_fake_quant_steps']:.1f} output steps (max, 500 inputs)"
               if "int16x8_qat_litert_vs_fake_quant_steps" in r else "-")]]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=["tflm", "sparse", "search", "int16x8"])
    parser.add_argument("--samples", type=int, default=15000)
    parser.add_argument("--baseline-epochs", type=int, default=25)
    parser.add_argument("--prune-epochs", type=int, default=6)
    parser.add_argument("--cluster-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--mlp-epochs", type=int, default=15)
    parser.add_argument("--int16-epochs", type=int, default=15)
    parser.add_argument("--int16-qat-epochs", type=int, default=2)
    parser.add_argument("--int16-qat-lr", type=float, default=1e-5)
    parser.add_argument("--tflm-samples", type=int, default=1000, help="test inputs run in the TFLM interpreter")
    parser.add_argument("--flash-fraction", type=float, default=0.6, help="search: flash budget / int8 PTQ file")
    parser.add_argument("--search-candidates", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="micro", help="results file name (benchmarks/results/<name>.json|md)")
    parser.add_argument("--keep", action="store_true", help="keep the other sections of an existing results file")
    args = parser.parse_args()

    started = time.time()
    results: dict = {"environment": environment(), "settings": vars(args)}
    previous = RESULTS / f"{args.name}.json"
    if args.keep and previous.is_file():  # re-run some sections, keep the others' figures
        kept = json.loads(previous.read_text())
        results = {**kept, **{k: v for k, v in results.items() if k != "settings"}}
        results.setdefault("reruns", []).append({"sections": args.only, "settings": vars(args)})
    data = mnist1d_arrays(args.samples, args.seed)
    model = None
    if {"tflm", "search"} & set(args.only):
        from collaborative_mnist1d import build_model

        keras.utils.set_random_seed(args.seed)
        model = build_model(data[0].shape[1])
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        schedule = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=2, verbose=0)
        model.fit(data[0], data[1], epochs=args.baseline_epochs, batch_size=64, callbacks=[schedule], verbose=0)
        _log(f"mnist1d CNN trained in {time.time() - started:.0f}s")
    sections = {
        "tflm": lambda: tflm_section(args, data, model),
        "sparse": lambda: sparse_section(args, data),
        "search": lambda: search_section(args, data, model),
        "int16x8": lambda: int16x8_section(args),
    }
    for name in args.only:
        section_started = time.time()
        results[name] = sections[name]()
        results[name]["seconds"] = round(time.time() - section_started, 1)
        write_json(args.name, results)
        write_markdown(args.name, _markdown(results))
        _log(f"{name} done in {results[name]['seconds']:.0f}s")
    results["seconds"] = round(time.time() - started, 1)
    print(f"wrote {write_json(args.name, results)} and {write_markdown(args.name, _markdown(results))}")


if __name__ == "__main__":
    main()
