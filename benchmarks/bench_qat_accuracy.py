"""QAT accuracy and Keras-vs-TFLite parity (TensorFlow backend, CPU).

1. mnist1d (20 000 samples generated offline with the ``mnist1d`` package, 80/20 split):
   a Conv1D CNN trained in float, then fine-tuned with QAT and lowered to int8 TFLite.
   Target: int8 TFLite test accuracy within 0.5 point of the float model's.
2. scikit-learn digits: a CNN (Conv+BN+ReLU6, depthwise, Concatenate, SeparableConv, Add)
   after a few QAT epochs; the int8 TFLite outputs (LiteRT interpreter) against the Keras
   fake-quant model's, in output quantization steps. Targets: <= 2 steps on >= 99% of the
   outputs, top-1 agreement >= 99%.

Run: ``python benchmarks/bench_qat_accuracy.py [--float-epochs 30] [--qat-epochs 5] [--skip-mnist1d] [--skip-digits]``.
Writes benchmarks/results/qat_accuracy.json.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "quantization"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _compare_setup import conv1d_cnn  # noqa: E402
from _harness import mnist1d_arrays, write_json  # noqa: E402

from kopt.export import evaluate, load_tflite, run, to_tflite  # noqa: E402
from kopt.quantization import quantize_model  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(model.predict(x, batch_size=512, verbose=0)).argmax(-1) == y))


def bench_mnist1d(float_epochs: int, qat_epochs: int) -> dict:
    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = mnist1d_arrays(20000)
    model = conv1d_cnn(keras)
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, float_epochs * (len(x) // 128))
    model.compile(keras.optimizers.Adam(schedule), LOSS)
    model.fit(x, y, batch_size=128, epochs=float_epochs, verbose=0)
    float_acc = accuracy(model, x_test, y_test)
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-4, qat_epochs * (len(x) // 128))), LOSS)
    qat.fit(x, y, batch_size=128, epochs=qat_epochs, verbose=0)
    qat_acc = accuracy(qat, x_test, y_test)
    int8_acc = evaluate(to_tflite(qat), x_test, y_test)
    gap = 100 * (float_acc - int8_acc)
    return {
        "data": f"mnist1d, {len(x)} train / {len(x_test)} test",
        "float_accuracy": float_acc,
        "qat_keras_accuracy": qat_acc,
        "int8_tflite_accuracy": int8_acc,
        "float_minus_int8_points": gap,
        "target_points": 0.5,
        "ok": gap <= 0.5,
        "float_epochs": float_epochs,
        "qat_epochs": qat_epochs,
    }


def bench_digits_parity() -> dict:
    from test_tflite_parity import digits, parity_cnn

    keras.utils.set_random_seed(0)
    x, y = digits()
    model = parity_cnn()
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    model.fit(x[:1400], y[:1400], batch_size=64, epochs=5, verbose=0)
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-3), LOSS)
    qat.fit(x[:1400], y[:1400], batch_size=64, epochs=3, verbose=0)
    tflite = to_tflite(qat)
    x_test, y_test = x[1400:], y[1400:]
    keras_out = np.asarray(qat.predict(x_test, verbose=0))
    lite_out = run(tflite, x_test)
    graph = load_tflite(tflite).main
    step = float(graph.tensors[graph.outputs[0]].quantization.scales[0])
    steps = np.abs(keras_out - lite_out) / step
    return {
        "data": f"digits, {len(x_test)} test samples x 10 logits",
        "output_step": step,
        "max_steps": float(steps.max()),
        "within_0_5_steps": float(np.mean(steps <= 0.5 + 1e-3)),
        "within_1_step": float(np.mean(steps <= 1 + 1e-3)),
        "within_2_steps": float(np.mean(steps <= 2 + 1e-3)),
        "top1_agreement": float(np.mean(keras_out.argmax(-1) == lite_out.argmax(-1))),
        "int8_accuracy": float(np.mean(lite_out.argmax(-1) == y_test)),
        "ok": bool(np.mean(steps <= 2 + 1e-3) >= 0.99 and np.mean(keras_out.argmax(-1) == lite_out.argmax(-1)) >= 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--skip-mnist1d", action="store_true")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    results: dict = {"backend": keras.backend.backend(), "keras": keras.__version__}
    if not args.skip_digits:
        r = results["digits_parity"] = bench_digits_parity()
        print(
            f"digits parity: max {r['max_steps']:.2f} output steps, {100 * r['within_2_steps']:.2f}% within 2 steps, "
            f"{100 * r['within_1_step']:.2f}% within 1, top-1 agreement {100 * r['top1_agreement']:.2f}% "
            f"{'OK' if r['ok'] else 'MISSED'}"
        )
    if not args.skip_mnist1d:
        r = results["mnist1d"] = bench_mnist1d(args.float_epochs, args.qat_epochs)
        print(
            f"mnist1d Conv1D: float {100 * r['float_accuracy']:.2f}%, QAT (Keras) {100 * r['qat_keras_accuracy']:.2f}%, "
            f"int8 TFLite {100 * r['int8_tflite_accuracy']:.2f}% (float - int8 = {r['float_minus_int8_points']:.2f} points, "
            f"target <= 0.5) {'OK' if r['ok'] else 'MISSED'}"
        )
    print(f"wrote {write_json('qat_accuracy', results)}")


if __name__ == "__main__":
    main()
