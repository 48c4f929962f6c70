"""QAT coverage sweep: quantize_model + to_tflite on real architectures (TensorFlow backend, CPU).

For each ``keras.applications`` model (``weights=None``, small input, 10 classes) and a
Conv1D model: ``kopt.quantization.quantize_model`` (untrained: the ranges keep their
initial value, which is enough to check the graph), ``kopt.export.to_tflite`` without
representative data, then

* fully int8: every tensor an op produces is int8 (int32 for bias), no DEQUANTIZE;
* QUANTIZE ops left (an int8 -> int8 requantization: a range mismatch kopt should avoid);
* the Edge TPU check (``kopt.export.check_edgetpu``): ops mapped / total.

Targets: fully int8 for all; Edge TPU fully mapped for MobileNet, MobileNetV2 and ResNet50.

Run: ``python benchmarks/coverage_qat.py [--size 64] [--models MobileNet ResNet50 ...]``.
Each model runs in its own subprocess (conversion of the big ones needs memory).
Writes benchmarks/results/coverage_qat.json and .md (the table README.md shows) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _harness import environment_line, timed, write_json, write_markdown

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

MODELS = [
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "ResNet50",
    "DenseNet121",
    "NASNetMobile",
    "EfficientNetB0",
    "Conv1D",
]
EDGETPU_TARGETS = {"MobileNet", "MobileNetV2", "ResNet50"}


def build(name: str, size: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    if name == "Conv1D":
        inp = keras.Input((40, 1))
        x = inp
        for filters in (32, 32, 64):
            x = layers.Conv1D(filters, 5, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
            x = layers.MaxPooling1D(2)(x)
        x = layers.GlobalAveragePooling1D()(x)
        return keras.Model(inp, layers.Dense(10)(x), name="conv1d_cnn")
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)


def measure(name: str, size: int) -> dict:
    from collections import Counter

    from kopt.export import check_edgetpu, load_tflite, to_tflite
    from kopt.quantization import quantize_model

    model = build(name, size)
    quantize_s, (qat, report) = timed(lambda: quantize_model(model, return_report=True))
    convert_s, tflite = timed(lambda: to_tflite(qat))
    graph = load_tflite(tflite).main
    ops = Counter(op.name for op in graph.operators)
    float_outputs = [
        f"{op.name}:{t.name[:40]}" for op in graph.operators for t in graph.output_tensors(op) if t.dtype not in ("INT8", "INT32")
    ]
    edgetpu = check_edgetpu(tflite)
    return {
        "model": name,
        "input": "40x1" if name == "Conv1D" else f"{size}x{size}x3",
        "quantize_s": round(quantize_s, 2),
        "convert_s": round(convert_s, 1),
        "folded_batch_norms": len(report.folded_batch_norms),
        "activation_quantizers": report.activation_quantizers,
        "shared_ranges": len(report.shared_ranges),
        "tflite_ops": len(graph.operators),
        "op_counts": dict(ops),
        "fully_int8": not float_outputs and ops.get("DEQUANTIZE", 0) == 0,
        "float_tensors": float_outputs[:5],
        "quantize_ops": ops.get("QUANTIZE", 0),
        "edgetpu_mapped": edgetpu.num_mapped,
        "edgetpu_fully_mapped": edgetpu.fully_mapped,
        "edgetpu_first_unsupported": None
        if edgetpu.first_unsupported is None
        else f"{edgetpu.first_unsupported.op}: {edgetpu.first_unsupported.reasons[0]}",
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | input | quantize_model (s) | BN folded | act. fake-quants (shared) | TFLite ops | fully int8 | QUANTIZE ops | Edge TPU mapped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | | | error: {r['error'][:80]} | | |")
            continue
        mapped = f"{r['edgetpu_mapped']}/{r['tflite_ops']}" + (" (full)" if r["edgetpu_fully_mapped"] else "")
        lines.append(
            f"| {r['model']} | {r['input']} | {r['quantize_s']} | {r['folded_batch_norms']} | "
            f"{r['activation_quantizers']} ({r['shared_ranges']}) | {r['tflite_ops']} | "
            f"{'yes' if r['fully_int8'] else 'NO'} | {r['quantize_ops']} | {mapped} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.size)))
        return
    rows = []
    for name in args.models:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", name, "--size", str(args.size)],
            capture_output=True,
            text=True,
        )
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        row = json.loads(lines[-1][7:]) if lines else {"model": name, "error": proc.stderr.strip().splitlines()[-1:]}
        if isinstance(row.get("error"), list):
            row["error"] = row["error"][0] if row["error"] else "unknown"
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    ok_int8 = all(r.get("fully_int8") for r in rows)
    ok_tpu = all(r.get("edgetpu_fully_mapped") for r in rows if r["model"] in EDGETPU_TARGETS)
    result = {"size": args.size, "rows": rows, "all_fully_int8": ok_int8, "edgetpu_targets_fully_mapped": ok_tpu}
    path = write_json("coverage_qat", result)
    print()
    print(table(rows))
    write_markdown("coverage_qat", f"# QAT coverage (benchmarks/coverage_qat.py, {args.size}x{args.size} inputs)\n\n"
                   f"{environment_line()}\n\n{table(rows)}\n")
    print(f"\nall fully int8: {ok_int8}; Edge TPU targets fully mapped: {ok_tpu}; wrote {path}")


if __name__ == "__main__":
    main()
