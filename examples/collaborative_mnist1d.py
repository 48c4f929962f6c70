"""Collaborative optimization on mnist1d: pruning, clustering and int8 QAT that stack.

A Conv1D CNN (~180k parameters: three Conv1D + BatchNorm, a Dense hidden layer, softmax) is
trained on mnist1d (generated offline), then deployed as int8 TFLite along every path of the
TFLite collaborative-optimization tables:

  baseline                float -> post-training int8
  pruned 50%              prune -> strip -> post-training int8
  clustered 16            cluster -> strip -> post-training int8
  QAT                     quantization-aware training (default_8bit)
  PQAT 50%                prune -> strip -> QAT with "prune_preserve"
  CQAT 16                 cluster -> strip -> QAT with "cluster_preserve"
  PCQAT 50% / 16          prune -> strip -> cluster(preserve_sparsity) -> strip -> QAT "prune_cluster_preserve"
  PCQAT 75% / 16          the same at 75% sparsity

Each path is kopt.pipeline.run_stages on a resolved preset policy; a stage's stripped model is
reused by the paths that start from it (the pruned model feeds PQAT and PCQAT, ...). Sizes are
of the .tflite file and of a zip archive holding it (DEFLATE), as in the TFLite docs; the ratio is
against the zipped float32 .tflite of the baseline.

Run: python examples/collaborative_mnist1d.py  (writes examples/output/collaborative.json and
examples/results/collaborative_mnist1d.md, the table README.md shows)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402
from keras import layers  # noqa: E402

from kopt import Policy  # noqa: E402
from kopt.export import evaluate, tflite_size, weight_tensors, zipped_size  # noqa: E402
from kopt.pipeline import run_stages  # noqa: E402
from kopt.pipeline.training import CompileSettings, Training  # noqa: E402


# --------------------------------------------------------------------- data
def load_data(samples: int, seed: int):
    """mnist1d generated locally (no download): 80% train, 20% test, shape (N, 40, 1)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples
    args.seed = seed
    data = make_dataset(args)
    x_train = data["x"].astype("float32")[..., None]
    x_test = data["x_test"].astype("float32")[..., None]
    return x_train, data["y"].astype("int32"), x_test, data["y_test"].astype("int32")


def build_model(length: int = 40) -> keras.Model:
    """Three Conv1D + BatchNorm + ReLU blocks, a Dense hidden layer, a softmax classifier."""
    inputs = keras.Input((length, 1), name="signal")
    x = inputs
    for index, (filters, size, pool) in enumerate([(32, 5, False), (64, 5, True), (128, 3, True)], start=1):
        x = layers.Conv1D(filters, size, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = layers.BatchNormalization(name=f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        if pool:
            x = layers.MaxPooling1D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(112, activation="relu", name="hidden")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="mnist1d_cnn")


def compile_settings(lr: float) -> CompileSettings:
    return CompileSettings(
        optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )


# ------------------------------------------------------------------ measure
def float_tflite(model: keras.Model) -> bytes:
    """The float32 .tflite of the baseline (the reference of the size ratios)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def keras_accuracy(model: keras.Model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def structure(tflite: bytes) -> dict:
    """Kernel sparsity and most int8 values in one output channel, over the weight tensors."""
    tensors = [t for t in weight_tensors(tflite) if t.values.ndim >= 2]
    total = sum(t.values.size for t in tensors)
    zeros = sum(int(t.sparsity * t.values.size + 0.5) for t in tensors)
    per_channel = []
    for t in tensors:
        axis = 3 if t.op == "DEPTHWISE_CONV_2D" else 0
        rows = np.moveaxis(t.values, axis, 0).reshape(t.values.shape[axis], -1)
        per_channel.append(max(np.unique(row).size for row in rows))
    return {"int8_sparsity": zeros / total, "max_unique_per_channel": max(per_channel), "per_tensor": per_channel}


# --------------------------------------------------------------------- main
def train_baseline(model: keras.Model, x, y, epochs: int) -> None:
    """The float model both mnist1d examples start from: Adam, the learning rate halved on plateaus, so
    the baseline is trained out and compression is not credited with what more float epochs would give."""
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    schedule = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=2, verbose=0)
    model.fit(x, y, epochs=epochs, batch_size=64, callbacks=[schedule], verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=15000, help="mnist1d samples (80%% train, 20%% test)")
    parser.add_argument("--baseline-epochs", type=int, default=25)
    parser.add_argument("--prune-epochs", type=int, default=6)
    parser.add_argument("--cluster-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "output" / "collaborative.json")
    parser.add_argument("--tflite-dir", type=Path, default=None, help="also write every .tflite here")
    args = parser.parse_args()

    started = time.time()
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.samples, args.seed)
    model = build_model(x_train.shape[1])
    print(f"mnist1d: {len(x_train)} train / {len(x_test)} test; model: {model.count_params():,} parameters")

    train_baseline(model, x_train, y_train, args.baseline_epochs)

    training = Training(
        train_data=(x_train, y_train),
        validation_data=(x_test, y_test),
        compile=compile_settings(3e-4),
        epochs={"prune": args.prune_epochs, "cluster": args.cluster_epochs, "quantize": args.qat_epochs},
        batch_size=64,
        verbose=0,
        eval_limit=None,
    )
    k = args.clusters
    rows: list[dict] = []
    reference = float_tflite(model)

    def record(name: str, keras_model: keras.Model, result) -> None:
        tflite = result.tflite
        if args.tflite_dir is not None:
            args.tflite_dir.mkdir(parents=True, exist_ok=True)
            (args.tflite_dir / (name.replace(" ", "_").replace("/", "-").replace("%", "") + ".tflite")).write_bytes(tflite)
        row = {
            "variant": name,
            "keras_accuracy": keras_accuracy(keras_model, x_test, y_test),
            "int8_accuracy": evaluate(tflite, x_test, y_test),
            "tflite_bytes": tflite_size(tflite),
            "zipped_bytes": zipped_size(tflite),
            **structure(tflite),
        }
        row["ratio_vs_float_zipped"] = zipped_size(reference) / row["zipped_bytes"]
        rows.append(row)
        print(
            f"  {name:<16} keras {row['keras_accuracy']:.2%}  int8 {row['int8_accuracy']:.2%}  "
            f"zipped {row['zipped_bytes']:,} B ({row['ratio_vs_float_zipped']:.2f}x)  "
            f"sparsity {row['int8_sparsity']:.1%}  max values/channel {row['max_unique_per_channel']}  "
            f"[{time.time() - started:.0f}s]",
            flush=True,
        )

    def path(preset: str, start: keras.Model, stages: list[str], **knobs):
        plan = Policy.preset(preset, **knobs).resolve(start)
        return run_stages(start, plan, training, stages=stages, baseline=False, seed=args.seed)

    # baseline: float and post-training int8
    baseline = path("ptq", model, [])
    record("baseline", model, baseline)

    # one technique each, post-training int8
    pruned = {s: path("prune", model, ["prune"], sparsity=s) for s in (0.5, 0.75)}
    record("pruned 50%", pruned[0.5].stage("prune").model, pruned[0.5])
    clustered = path("cluster", model, ["cluster"], number_of_clusters=k)
    record(f"clustered {k}", clustered.stage("cluster").model, clustered)

    # QAT and the preserving QATs, each from the stripped model of the previous technique
    qat = path("qat", model, ["quantize"])
    record("QAT", qat.model, qat)
    pqat = path("pqat", pruned[0.5].stage("prune").model, ["quantize"])
    record("PQAT 50%", pqat.model, pqat)
    cqat = path("cqat", clustered.stage("cluster").model, ["quantize"], number_of_clusters=k)
    record(f"CQAT {k}", cqat.model, cqat)
    for s in (0.5, 0.75):
        pcqat = path("pcqat", pruned[s].stage("prune").model, ["cluster", "quantize"], sparsity=s, number_of_clusters=k)
        record(f"PCQAT {int(s * 100)}%/{k}", pcqat.model, pcqat)

    float_row = {
        "variant": "float32 .tflite",
        "tflite_bytes": tflite_size(reference),
        "zipped_bytes": zipped_size(reference),
    }
    table = markdown(rows)
    print(f"\nfloat32 .tflite: {float_row['tflite_bytes']:,} B, zipped {float_row['zipped_bytes']:,} B")
    print(table)
    intro = (f"mnist1d generated offline ({len(x_train):,} train / {len(x_test):,} test), Conv1D CNN with BatchNorm "
             f"({model.count_params():,} parameters), float32 `.tflite` {float_row['tflite_bytes']:,} B, zipped "
             f"{float_row['zipped_bytes']:,} B; fine-tuning {args.prune_epochs} epochs prune, {args.cluster_epochs} "
             f"cluster, {args.qat_epochs} QAT; {time.time() - started:.0f} s.")
    print(f"wrote {write_results('collaborative_mnist1d', 'Collaborative optimization on mnist1d', table, intro)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "dataset": {"name": "mnist1d", "train": len(x_train), "test": len(x_test)},
                "model": {"parameters": model.count_params()},
                "float_tflite": float_row,
                "variants": rows,
                "seconds": round(time.time() - started, 1),
                "settings": {k2: (str(v) if isinstance(v, Path) else v) for k2, v in vars(args).items()},
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out} in {time.time() - started:.0f}s")


def markdown(rows: list[dict]) -> str:
    """The table README.md shows: every row int8 except the first column's float / fake-quant accuracy."""
    base = rows[0]["keras_accuracy"]
    lines = [
        "| variant | float / fake-quant acc. | int8 TFLite acc. | Δ vs float | .tflite | zipped "
        "| float zipped / zipped | int8 sparsity | max values / channel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = (r["int8_accuracy"] - base) * 100
        lines.append(
            f"| {r['variant']} | {r['keras_accuracy']:.2%} | {r['int8_accuracy']:.2%} | "
            f"{'−' if delta < -0.005 else '+'}{abs(delta):.2f} pt | {r['tflite_bytes']:,} B | {r['zipped_bytes']:,} B | "
            f"{r['ratio_vs_float_zipped']:.2f}× | {r['int8_sparsity']:.1%} | {r['max_unique_per_channel']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
