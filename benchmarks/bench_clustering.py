"""Clustering speed and size benchmark (TensorFlow backend, CPU).

1. Training-step time of MobileNetV2 (alpha 0.35, 96x96, batch 64) clustered with 16 clusters
   per tensor, 16 per channel and 256 per tensor, against the same model unclustered, in the
   same run (rounds interleaved so machine load hits every variant alike).
   Targets: clustered / plain <= 1.2 (16, per tensor), <= 1.3 (16, per channel), <= 1.5 (256).
2. Zipped float TFLite size of MobileNetV2 (alpha 0.35) with every Conv2D / Dense clustered to
   16 values and stripped, against the unclustered model. Target: <= 0.45x.

Run: ``python benchmarks/bench_clustering.py [--rounds 5] [--steps 3] [--skip-size] [--skip-speed]``.
Writes benchmarks/results/clustering.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import float_tflite, interleaved_train_on_batch, median, timed, write_json  # noqa: E402

import kopt  # noqa: E402
from kopt.clustering import ClusterWrapper, cluster_weights, clusterable_weights  # noqa: E402
from kopt.export import zipped_size  # noqa: E402

INPUT_SHAPE = (96, 96, 3)
BATCH = 64


def mobilenet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(input_shape=INPUT_SHAPE, alpha=0.35, weights=None)


def weight_count_at_least(k: int):
    """layer_filter keeping layers whose every clusterable weight has >= k values."""

    def accept(layer: keras.layers.Layer) -> bool:
        return all(int(np.prod(w.variable.shape)) >= k for w in clusterable_weights(layer))

    return accept


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def time_steps(models: dict[str, keras.Model], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Median and minimum seconds per train step of each model; rounds interleave the models."""
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, 1000, BATCH)
    samples = interleaved_train_on_batch(models, x, y, rounds=rounds, steps=steps, warmup=2)
    return {name: {"median": median(s), "min": float(np.min(s))} for name, s in samples.items()}


def clustering_cost(model: keras.Model, repeats: int = 10) -> float:
    """Median seconds of the clustering work alone in one training step: nearest-centroid
    search, assignment update, gather, and the backward pass to centroids and shadow weights."""
    import tensorflow as tf

    wrappers = [layer for layer in model.layers if isinstance(layer, ClusterWrapper)]
    variables = [v.value for w in wrappers for v in w.trainable_variables]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total = tf.constant(0.0)
            for wrapper in wrappers:
                for _, value in wrapper.transformed_weights(training=True):
                    total += tf.reduce_sum(value * value)
        return tape.gradient(total, variables)

    step()
    return median(timed(step)[0] for _ in range(repeats))


def bench_speed(rounds: int, steps: int) -> dict:
    base = mobilenet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "plain": compiled(kopt.graph.map_layers(base, lambda layer: None)),
            "16_per_tensor": compiled(cluster_weights(base, 16, seed=0)),
            "16_per_channel": compiled(cluster_weights(base, 16, per_channel=True, seed=0)),
            "256_per_tensor": compiled(cluster_weights(base, 256, seed=0, layer_filter=weight_count_at_least(256))),
        }
    seconds = time_steps(models, rounds, steps)
    plain = seconds["plain"]
    result = {}
    targets = {"16_per_tensor": 1.2, "16_per_channel": 1.3, "256_per_tensor": 1.5}
    for name, s in seconds.items():
        row = {
            "step_ms": 1000 * s["median"],
            "ratio": s["median"] / plain["median"],
            "min_step_ms": 1000 * s["min"],
            "min_ratio": s["min"] / plain["min"],
        }
        if name in targets:
            row["clustering_ms"] = 1000 * clustering_cost(models[name])
            row["target"] = targets[name]
            row["ok"] = row["ratio"] <= targets[name]
        result[name] = row
    return result


def tflite_bytes(model: keras.Model) -> bytes:
    """Float32 TFLite flatbuffer with a static batch-1 signature."""
    return float_tflite(model, INPUT_SHAPE)


def bench_size() -> dict:
    base = mobilenet()
    conv_or_dense = lambda layer: type(layer) in (keras.layers.Conv2D, keras.layers.Dense)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clustered = kopt.strip(cluster_weights(base, 16, seed=0, layer_filter=conv_or_dense))
    plain_bytes, clustered_bytes = tflite_bytes(base), tflite_bytes(clustered)
    plain_zip, clustered_zip = zipped_size(plain_bytes), zipped_size(clustered_bytes)
    return {
        "plain_tflite": len(plain_bytes),
        "clustered_tflite": len(clustered_bytes),
        "plain_zipped": plain_zip,
        "clustered_zipped": clustered_zip,
        "ratio": clustered_zip / plain_zip,
        "target": 0.45,
        "ok": clustered_zip / plain_zip <= 0.45,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-size", action="store_true")
    args = parser.parse_args()
    results: dict = {"backend": keras.backend.backend(), "keras": keras.__version__}
    if not args.skip_speed:
        results["train_step"] = bench_speed(args.rounds, args.steps)
        for name, row in results["train_step"].items():
            extra = ""
            if "target" in row:
                extra = (
                    f"  target <= {row['target']} {'OK' if row['ok'] else 'MISSED'}"
                    f"  (clustering ops alone: {row['clustering_ms']:.1f} ms)"
                )
            print(
                f"train step {name:15s} median {row['step_ms']:7.1f} ms ratio {row['ratio']:.3f} | "
                f"min {row['min_step_ms']:7.1f} ms ratio {row['min_ratio']:.3f}{extra}"
            )
    if not args.skip_size:
        results["zipped_tflite"] = size = bench_size()
        print(
            f"zipped float TFLite: plain {size['plain_zipped']} B, clustered {size['clustered_zipped']} B, "
            f"ratio {size['ratio']:.3f} (target <= 0.45) {'OK' if size['ok'] else 'MISSED'}"
        )
    write_json("clustering", results)


if __name__ == "__main__":
    main()
