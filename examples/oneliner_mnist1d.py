"""The one-liner as a new user runs it: ``kopt.optimize(model, "pcqat", ...)`` on the mnist1d Conv1D CNN.

Trains the float model of ``collaborative_mnist1d.py`` (about 180 000 parameters), then calls
``kopt.optimize`` twice exactly as the README shows — the ``"pcqat"`` preset (50% sparsity,
16 clusters) and ``kopt.Policy.preset("pcqat", sparsity=0.75)`` — and compares each int8
``.tflite`` with the float model on held-out data: accuracy and zipped size.

Run: ``python examples/oneliner_mnist1d.py`` (about 10 minutes on 2 CPU cores). Writes
``examples/output/oneliner_mnist1d.json`` and ``examples/results/oneliner_mnist1d.md`` (the table
README.md shows).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from _results import write_results  # noqa: E402
from collaborative_mnist1d import build_model, float_tflite, keras_accuracy, load_data, structure  # noqa: E402

import kopt  # noqa: E402
from kopt.export import evaluate, zipped_size  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15000, help="mnist1d samples (80%% train, 20%% test)")
    parser.add_argument("--baseline-epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "oneliner_mnist1d.json")
    args = parser.parse_args()

    started = time.time()
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.samples, args.seed)
    model = build_model(x_train.shape[1])
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.baseline_epochs, batch_size=64, verbose=0)
    float_accuracy = keras_accuracy(model, x_test, y_test)
    float_zipped = zipped_size(float_tflite(model))
    print(f"float: {model.count_params():,} parameters, accuracy {float_accuracy:.2%}, zipped {float_zipped:,} B")

    rows = []
    for label, policy in [
        ('"pcqat"', "pcqat"),
        ('Policy.preset("pcqat", sparsity=0.75)', kopt.Policy.preset("pcqat", sparsity=0.75)),
    ]:
        # What the README shows: one call, per-stage epochs, the model's own compile settings.
        result = kopt.optimize(
            model,
            policy,
            train_data=(x_train, y_train),
            validation_data=(x_test, y_test),
            epochs={"prune": 6, "cluster": 3, "quantize": 2},
            batch_size=64,
        )
        row = {
            "policy": label,
            "int8_accuracy": evaluate(result.tflite, x_test, y_test),
            "zipped_bytes": zipped_size(result.tflite),
            **structure(result.tflite),
        }
        row["drop_points"] = (float_accuracy - row["int8_accuracy"]) * 100
        row["ratio_vs_float_zipped"] = float_zipped / row["zipped_bytes"]
        rows.append(row)
        print(
            f"{label}: int8 accuracy {row['int8_accuracy']:.2%} ({-row['drop_points']:+.2f} pt), zipped "
            f"{row['zipped_bytes']:,} B = {row['ratio_vs_float_zipped']:.2f}x smaller, sparsity "
            f"{row['int8_sparsity']:.1%}, max values/channel {row['max_unique_per_channel']} "
            f"[{time.time() - started:.0f}s]",
            flush=True,
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "float": {"accuracy": float_accuracy, "zipped_bytes": float_zipped, "parameters": model.count_params()},
                "results": rows,
                "seconds": round(time.time() - started, 1),
            },
            indent=2,
        )
    )
    table = markdown(rows)
    print(table)
    intro = (f"Float model trained {args.baseline_epochs} epochs: {float_accuracy:.2%}, float32 `.tflite` zipped "
             f"{float_zipped:,} B; then `kopt.optimize(model, policy, epochs={{\"prune\": 6, \"cluster\": 3, "
             f"\"quantize\": 2}})`; {time.time() - started:.0f} s.")
    print(f"wrote {args.out} and {write_results('oneliner_mnist1d', 'The one-liner on mnist1d', table, intro)}")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| policy | int8 TFLite acc. | Δ vs float | zipped | float zipped / zipped | int8 sparsity | max values / channel |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = -r["drop_points"]
        lines.append(
            f"| `{r['policy']}` | {r['int8_accuracy']:.2%} | {'−' if delta < -0.005 else '+'}{abs(delta):.2f} pt | "
            f"{r['zipped_bytes']:,} B | {r['ratio_vs_float_zipped']:.2f}× | {r['int8_sparsity']:.1%} | "
            f"{r['max_unique_per_channel']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
