"""The automatic search on mnist1d: the smallest int8 model within one accuracy point.

Trains the mnist1d Conv1D CNN of ``collaborative_mnist1d.py`` (about 180 000 parameters) on
10 000 samples, keeps 2 000 for validation (the search's budget is checked on them) and 3 000
held out (never seen by the search: the figures reported at the end), then:

1. times one ``kopt.optimize(model, "pcqat")`` run — the reference for the search's cost;
2. runs ``kopt.optimize(model, "auto", budget=kopt.Budget(max_accuracy_drop=0.01))`` with the
   same per-stage epochs, prints every candidate, and saves the report, the candidate table
   and the Pareto chart to ``examples/output/auto_mnist1d/``.

Run: ``python examples/auto_mnist1d.py`` (about 25 minutes on 2 CPU cores).
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
from collaborative_mnist1d import build_model, float_tflite, keras_accuracy, load_data, train_baseline  # noqa: E402

import kopt  # noqa: E402
from kopt.export import evaluate, zipped_size  # noqa: E402

EPOCHS = {"prune": 6, "cluster": 3, "quantize": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15000, help="mnist1d samples (12 000 train+val, 3 000 test)")
    parser.add_argument("--validation", type=int, default=2000)
    parser.add_argument("--baseline-epochs", type=int, default=25)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="do not time the pcqat reference run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "auto_mnist1d")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_all, y_all, x_test, y_test = load_data(args.samples, args.seed)
    x_train, y_train = x_all[: -args.validation], y_all[: -args.validation]
    x_val, y_val = x_all[-args.validation :], y_all[-args.validation :]
    model = build_model(x_train.shape[1])
    train_baseline(model, x_train, y_train, args.baseline_epochs)
    float_test = keras_accuracy(model, x_test, y_test)
    float_zipped = zipped_size(float_tflite(model))
    print(f"float: {model.count_params():,} parameters, held-out accuracy {float_test:.2%}, zipped .tflite "
          f"{float_zipped:,} B", flush=True)
    common = dict(
        train_data=(x_train, y_train), validation_data=(x_val, y_val), epochs=EPOCHS, batch_size=64, seed=args.seed,
        verbose=0,
    )

    results: dict = {"float": {"test_accuracy": float_test, "zipped_bytes": float_zipped}}
    if not args.skip_reference:
        started = time.monotonic()
        reference = kopt.optimize(model, "pcqat", **common)
        results["pcqat"] = {
            "seconds": round(time.monotonic() - started, 1),
            "test_accuracy": evaluate(reference.tflite, x_test, y_test),
            "zipped_bytes": zipped_size(reference.tflite),
        }
        print(f"pcqat reference: {results['pcqat']}", flush=True)

    started = time.monotonic()
    result = kopt.optimize(model, "auto", budget=kopt.Budget(max_accuracy_drop=args.max_drop), **{**common, "verbose": 2})
    seconds = time.monotonic() - started
    test_accuracy = evaluate(result.tflite, x_test, y_test)
    zipped = zipped_size(result.tflite)
    results["auto"] = {
        "seconds": round(seconds, 1),
        "test_accuracy": test_accuracy,
        "test_drop_points": (float_test - test_accuracy) * 100,
        "zipped_bytes": zipped,
        "ratio_vs_float_tflite_zipped": float_zipped / zipped,
        "chosen": result.search.chosen,
        "candidates": len(result.search.candidates),
    }
    if "pcqat" in results:
        results["auto"]["time_vs_pcqat"] = seconds / results["pcqat"]["seconds"]
    print(result.search.table())
    print(json.dumps(results["auto"], indent=2))
    paths = result.save(args.out)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    intro = (f"{len(x_train):,} training samples, the budget (`max_accuracy_drop={args.max_drop}`) checked on "
             f"{len(x_val):,} validation samples, the figures on the {len(x_test):,} held-out test samples the search "
             f"never sees; fine-tuning {EPOCHS['prune']} / {EPOCHS['cluster']} / {EPOCHS['quantize']} epochs per "
             f"prune / cluster / QAT rung; {len(result.search.candidates)} candidates.")
    print(f"wrote {write_results('auto_mnist1d', 'The automatic search on mnist1d', markdown(results), intro)}")


def _delta(points: float) -> str:
    return f"{'−' if points < -0.005 else '+'}{abs(points):.2f} pt"


def markdown(results: dict) -> str:
    """The README's table: the float model, the pcqat preset and the search, on held-out data."""
    flt = results["float"]
    lines = [
        "| | int8 TFLite acc. (held out) | Δ vs float | zipped | float `.tflite` zipped / zipped | wall time |",
        "|---|---|---|---|---|---|",
        f"| float model | {flt['test_accuracy']:.2%} (float) | | {flt['zipped_bytes']:,} B | 1× | |",
    ]
    for key, label in (("pcqat", '`kopt.optimize(model, "pcqat")`'), ("auto", '`kopt.optimize(model, "auto")`')):
        if key in results:
            r = results[key]
            lines.append(
                f"| {label} | {r['test_accuracy']:.2%} | {_delta((r['test_accuracy'] - flt['test_accuracy']) * 100)} | "
                f"{r['zipped_bytes']:,} B | {flt['zipped_bytes'] / r['zipped_bytes']:.1f}× | {r['seconds']:.0f} s |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
