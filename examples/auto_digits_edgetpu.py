"""The automatic search for the Edge TPU: scikit-learn digits CNN (DepthwiseConv2D, Concatenate).

Trains the CNN of ``digits_pipeline.py``, keeps 20% of its training split for validation (the
search's budget is checked on it) and the test split held out, then runs
``kopt.optimize(model, "auto", budget=kopt.Budget(max_accuracy_drop=0.01, target="edgetpu"))``:
every candidate is an int8 ``.tflite`` with int8 I/O, checked op by op for the Edge TPU, and
only fully mapped ones are eligible. Prints the candidate table and the Edge TPU report of the
chosen model; writes everything to ``examples/output/auto_digits_edgetpu/``.

Run: ``python examples/auto_digits_edgetpu.py`` (a few minutes on 2 CPU cores).
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
from digits_pipeline import build_model, compile_model, keras_accuracy, load_data  # noqa: E402

import kopt  # noqa: E402
from kopt.export import check_edgetpu, evaluate, zipped_size  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="float training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=4, help="epochs of each fine-tuning stage")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "auto_digits_edgetpu")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_all, x_test, y_all, y_test = load_data(args.seed)
    cut = int(len(x_all) * 0.8)
    (x_train, y_train), (x_val, y_val) = (x_all[:cut], y_all[:cut]), (x_all[cut:], y_all[cut:])
    model = compile_model(build_model(), 3e-3)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    float_test = keras_accuracy(model, x_test, y_test)
    print(f"float: {model.count_params():,} parameters, held-out accuracy {float_test:.2%}", flush=True)

    started = time.monotonic()
    result = kopt.optimize(
        model,
        "auto",
        budget=kopt.Budget(max_accuracy_drop=args.max_drop, target="edgetpu"),
        train_data=(x_train, y_train),
        validation_data=(x_val, y_val),
        epochs=args.finetune_epochs,
        batch_size=32,
        seed=args.seed,
        verbose=2,
    )
    edgetpu = check_edgetpu(result.tflite)
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "float_test_accuracy": float_test,
        "test_accuracy": evaluate(result.tflite, x_test, y_test),
        "zipped_bytes": zipped_size(result.tflite),
        "edgetpu_mapped": f"{edgetpu.num_mapped}/{edgetpu.num_ops}",
        "fully_mapped": edgetpu.fully_mapped,
        "chosen": result.search.chosen,
        "candidates": len(result.search.candidates),
    }
    print(result.search.table())
    print(edgetpu)
    print(json.dumps(summary, indent=2))
    result.save(args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
