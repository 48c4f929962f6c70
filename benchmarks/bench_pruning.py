"""Pruning speed and size benchmark (TensorFlow backend, CPU).

1. Training-step time of a model wrapped by ``prune_low_magnitude`` against the same model
   unwrapped, in the same run (rounds interleave the two so machine load hits both alike),
   batch 64: a small CNN (32x32x3) and MobileNetV2 (alpha 0.35, 96x96).
   The schedule is PolynomialDecay(0 -> 0.5 over 1000 steps, frequency 100), so about one
   step in a hundred recomputes masks, as in real use. Target: wrapped / plain <= 1.10.
   Also reported: the ratio when every step recomputes masks (frequency=1), a worst case.
2. Zipped TFLite size of MobileNetV2 (alpha 0.35, 1000 classes) pruned to 50% and stripped,
   against the unpruned model (float32 TFLite, as TFMOT's pruning guide measures; int8 for
   information). Target: <= 0.6x.

Run: ``python benchmarks/bench_pruning.py [--rounds 5] [--steps 5] [--skip-size] [--skip-speed]``.
Writes benchmarks/results/pruning.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import float_tflite, interleaved_train_on_batch, median, write_json  # noqa: E402

import kopt  # noqa: E402
from kopt.sparsity import ConstantSparsity, PolynomialDecay, prune_low_magnitude  # noqa: E402

BATCH = 64


def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="small_cnn")


def mobilenet(classes: int = 1000) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=classes, classifier_activation=None
    )


def compiled(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def time_steps(models: dict[str, keras.Model], rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per training step of each model; rounds interleave the models."""
    import tensorflow as tf

    first = next(iter(models.values()))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((BATCH, *first.input_shape[1:]), dtype=np.float32))
    y = tf.constant(rng.integers(0, first.output_shape[-1], BATCH))
    # 3 warm-up steps trace the step (step 0 computes the first masks)
    samples = interleaved_train_on_batch(models, x, y, rounds=rounds, steps=steps, warmup=3)
    return {name: median(s) for name, s in samples.items()}


def bench_speed(build, rounds: int, steps: int) -> dict:
    plain = compiled(build())
    realistic = compiled(prune_low_magnitude(build(), schedule=PolynomialDecay(0.0, 0.5, 0, 1000, frequency=100)))
    every_step = compiled(prune_low_magnitude(build(), schedule=ConstantSparsity(0.5, 0, frequency=1)))
    times = time_steps({"plain": plain, "pruned": realistic, "pruned_every_step": every_step}, rounds, steps)
    result = {
        "model": plain.name,
        "batch": BATCH,
        "seconds_per_step": times,
        "ratio": times["pruned"] / times["plain"],
        "ratio_mask_update_every_step": times["pruned_every_step"] / times["plain"],
        "target": 1.10,
    }
    result["meets_target"] = result["ratio"] <= result["target"]
    return result


def pruned_and_dense_mobilenet(
    sparsity: float = 0.5, classes: int = 1000
) -> tuple[keras.Model, keras.Model, np.ndarray]:
    """MobileNetV2 pruned to ``sparsity`` and stripped, and the same model unpruned.

    One training-mode forward pass on both (no optimizer step: only the masks and the
    BatchNorm statistics move, alike in both), which is all the masks need and keeps the
    slow test short.
    """
    x = np.random.default_rng(0).random((8, 96, 96, 3), dtype=np.float32)
    dense = mobilenet(classes)
    pruned = prune_low_magnitude(mobilenet(classes), schedule=ConstantSparsity(sparsity, 0))
    for model in (dense, pruned):
        model(x[:2], training=True)
    return kopt.strip(pruned), dense, x


def bench_size() -> dict:
    from kopt.export import to_tflite, zipped_size

    stripped, dense, x = pruned_and_dense_mobilenet()
    result: dict = {"model": "MobileNetV2 alpha 0.35, 96x96, 1000 classes", "sparsity": 0.5, "target": 0.6}
    for name, convert in [
        ("float32", float_tflite),
        ("int8", lambda m: to_tflite(m, representative_data=x, calibration_samples=8)),
    ]:
        dense_zip, pruned_zip = zipped_size(convert(dense)), zipped_size(convert(stripped))
        result[name] = {"dense_zipped": dense_zip, "pruned_zipped": pruned_zip, "ratio": pruned_zip / dense_zip}
    result["meets_target"] = result["float32"]["ratio"] <= result["target"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-size", action="store_true")
    args = parser.parse_args()
    results: dict = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
    }
    if not args.skip_speed:
        results["speed"] = [bench_speed(build, args.rounds, args.steps) for build in (small_cnn, mobilenet)]
        for r in results["speed"]:
            t = r["seconds_per_step"]
            print(
                f"{r['model']}: plain {t['plain'] * 1e3:.1f} ms/step, pruned {t['pruned'] * 1e3:.1f} ms/step, "
                f"ratio {r['ratio']:.3f} (target <= 1.10); masks every step: {r['ratio_mask_update_every_step']:.3f}"
            )
    if not args.skip_size:
        results["size"] = bench_size()
        for name in ("float32", "int8"):
            s = results["size"][name]
            sizes = f"{s['pruned_zipped']} / {s['dense_zipped']}"
            print(f"MobileNetV2 50% pruned, {name} TFLite zipped: {sizes} = {s['ratio']:.3f}")
    print(f"wrote {write_json('pruning', results)}")


if __name__ == "__main__":
    main()
