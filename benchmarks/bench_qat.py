"""Quantization-aware training speed benchmark (TensorFlow backend, CPU).

1. Training-step time of MobileNetV2 (alpha 0.35, 96x96, batch 64) after
   ``kopt.quantization.quantize_model`` against the same float model, in the same run
   (steps alternate between the two models and the ratio is the median of paired ratios,
   so load from other processes hits both alike). Target: QAT / float <= 1.25
   (TFMOT measured 1.26-1.28 on small CNNs).
2. Wall time of ``quantize_model`` on MobileNetV2 (alpha 1.0, 224x224). Target: < 5 s.

Run: ``python benchmarks/bench_qat.py [--rounds 5] [--steps 3] [--skip-speed] [--skip-transform]``.
Writes benchmarks/results/qat.json.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import interleaved_train_on_batch, median, paired_ratio, timed, write_json  # noqa: E402

from kopt.quantization import quantize_model  # noqa: E402

INPUT_SHAPE = (96, 96, 3)
BATCH = 64


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def time_steps(models: dict[str, keras.Model], rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per train step of each model, and of each model's time relative to the first.

    Steps alternate between the models (one step each, ``rounds * steps`` times) and each
    ratio is the median of per-alternation ratios, so that load from other processes on a
    shared machine hits the models alike.
    """
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, 1000, BATCH)
    samples = interleaved_train_on_batch(models, x, y, rounds=rounds, steps=steps, warmup=2, per_step=True)
    first = next(iter(models))
    result = {name: median(s) for name, s in samples.items()}
    for name, s in samples.items():
        result[f"{name}_ratio"] = paired_ratio(s, samples[first])
    return result


def bench_speed(rounds: int, steps: int) -> dict:
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=INPUT_SHAPE, alpha=0.35, weights=None)
    models = {"float": compiled(base), "qat": compiled(quantize_model(base))}
    seconds = time_steps(models, rounds, steps)
    ratio = seconds["qat_ratio"]
    return {
        "model": "MobileNetV2 alpha 0.35, 96x96, batch 64",
        "float_step_ms": 1000 * seconds["float"],
        "qat_step_ms": 1000 * seconds["qat"],
        "ratio": ratio,
        "target": 1.25,
        "ok": ratio <= 1.25,
        "jit_compile": bool(models["qat"].jit_compile),
    }


def bench_transform(repeats: int = 3) -> dict:
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None)
    quantize_model(keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None))  # imports, caches
    times = [timed(lambda: quantize_model(model))[0] for _ in range(repeats)]
    best = min(times)
    return {"model": "MobileNetV2 alpha 1.0, 224x224", "seconds": best, "all_seconds": times, "target": 5.0, "ok": best < 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-transform", action="store_true")
    args = parser.parse_args()
    results: dict = {"backend": keras.backend.backend(), "keras": keras.__version__}
    if not args.skip_transform:
        results["quantize_model"] = bench_transform()
        r = results["quantize_model"]
        print(f"quantize_model({r['model']}): {r['seconds']:.2f} s (target < {r['target']} s) {'OK' if r['ok'] else 'MISSED'}")
    if not args.skip_speed:
        results["train_step"] = bench_speed(args.rounds, args.steps)
        r = results["train_step"]
        print(
            f"train step {r['model']}: float {r['float_step_ms']:.0f} ms, QAT {r['qat_step_ms']:.0f} ms, "
            f"ratio {r['ratio']:.3f} (target <= {r['target']}) {'OK' if r['ok'] else 'MISSED'}"
        )
    print(f"wrote {write_json('qat', results)}")


if __name__ == "__main__":
    main()
