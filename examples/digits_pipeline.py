"""The main job on the bundled example: train a small CNN on scikit-learn's digits, optimize it, deploy int8.

Every row gets the same training: 12 float epochs, then 6 fine-tuning epochs at one learning rate
(so no compressed row looks better than the float model only because it trained longer):
  float: 6 more float epochs -> post-training int8 (PTQ)
  prune 50% during fine-tuning -> strip -> PTQ int8 (zeros survive: PTQ does not train)
  quantization-aware training (QAT) -> int8 from the trained fake-quant ranges
  kopt.optimize(model, pcqat policy): prune -> cluster keeping zeros -> QAT keeping both, 2 epochs each -> int8
Every int8 model is run with the LiteRT interpreter on the held-out split and checked for the Edge TPU.
The run is deterministic (seeded, deterministic single-threaded TensorFlow ops): a rerun prints the
same table, the one README.md shows (examples/results/digits_pipeline.md).
Writes <out>/<stage>.tflite, <out>/report.json, <out>/report.md and <out>/pcqat/ (the one-liner's model,
report and plots), and prints the summary table.

Run: bash scripts/example.sh   (or: python examples/digits_pipeline.py --out examples/output)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _results import write_results  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kopt  # noqa: E402
from kopt import export, quantization, sparsity  # noqa: E402

FINETUNE_LEARNING_RATE = 5e-4  # every fine-tuning row, float included: gentler than the float model's 3e-3


def deterministic(seed: int) -> None:
    """Seed everything and make TensorFlow's ops deterministic and single-threaded between ops.

    With several ops running at once (oneDNN), QAT fine-tuning can differ in the last bits run
    to run (README, Reproducibility); one inter-op thread makes it repeat exactly.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.experimental.enable_op_determinism()


def load_data(seed: int):
    digits = load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_model() -> keras.Model:
    """A small Edge-TPU-friendly CNN: Conv+BN+ReLU, depthwise block, two branches concatenated."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    d = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    d = layers.BatchNormalization(name="dw_bn")(d)
    d = layers.ReLU(6.0, name="dw_relu")(d)
    p = layers.Conv2D(32, 1, activation="relu", name="pointwise")(d)
    b = layers.Conv2D(16, 3, padding="same", activation="relu", name="branch")(x)
    x = layers.Concatenate(name="concat")([p, b])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="fc")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def compile_model(model: keras.Model, lr: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def keras_accuracy(model: keras.Model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def kernel_sparsity(tflite: bytes) -> float:
    """Fraction of zeros in the deployed conv / fully-connected weights, read from the .tflite itself."""
    kernels = [t for t in export.weight_tensors(tflite) if t.values.ndim >= 2]
    return float(sum(int(np.sum(t.values == 0)) for t in kernels) / sum(t.values.size for t in kernels))


def deploy(name: str, finetuning: str, model: keras.Model, tflite: bytes, x_test, y_test, out: Path) -> dict:
    (out / f"{name}.tflite").write_bytes(tflite)
    edgetpu = export.check_edgetpu(tflite)
    summary = export.inspect(tflite)
    return {
        "stage": name,
        "finetuning": finetuning,
        "keras_accuracy": keras_accuracy(model, x_test, y_test),
        "int8_accuracy": export.evaluate(tflite, x_test, y_test),
        "tflite_bytes": export.tflite_size(tflite),
        "zipped_bytes": export.zipped_size(tflite),
        "kernel_sparsity": kernel_sparsity(tflite),
        "edgetpu_fully_mapped": edgetpu.fully_mapped,
        "edgetpu_mapped": f"{edgetpu.num_mapped}/{edgetpu.num_ops}",
        "op_counts": summary.op_counts,
    }


LABELS = {
    "float_ptq": "float → PTQ",
    "pruned50_ptq": "pruned 50 % → PTQ",
    "qat": "QAT",
    "pcqat": "PCQAT (one-liner)",
}


def markdown(rows: list[dict]) -> str:
    """The summary table, as README.md shows it."""
    head = ("| stage | fine-tuning after 12 float epochs | Keras acc. | int8 TFLite acc. | .tflite | zipped .tflite "
            "| conv/FC weight sparsity | Edge TPU |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mapped = "fully mapped" if r["edgetpu_fully_mapped"] else "NOT fully mapped"
        lines.append(
            f"| {LABELS.get(r['stage'], r['stage'])} | {r['finetuning']} | {r['keras_accuracy']:.4f} | "
            f"{r['int8_accuracy']:.4f} | {r['tflite_bytes']:,} B | {r['zipped_bytes']:,} B | "
            f"{r['kernel_sparsity']:.1%} | {r['edgetpu_mapped']} {mapped} |"
        )
    return "\n".join(lines)


def pcqat_policy(number_of_clusters: int = 16) -> kopt.Policy:
    """PCQAT, leaving the two small convolutions that feed a BatchNormalization unclustered.

    Folding a BatchNormalization scales each output channel of its conv differently, so clusters
    shared across the kernel would not survive int8 export, and per channel there is nothing to
    share: each channel of ``stem`` and ``dw`` holds 9 weights (kopt warns in both cases).
    """
    return kopt.Policy.preset(
        "pcqat", number_of_clusters=number_of_clusters,
        rules=[{"match": "stem", "cluster": False}, {"match": "dw", "cluster": False}],
    )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/output", help="output directory")
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=6,
                        help="fine-tuning epochs of every row (PCQAT: split over its 3 stages)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", action="store_true",
                        help="also write examples/results/digits_pipeline.md (the table README.md shows)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deterministic(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    fit = dict(batch_size=32, verbose=2)
    epochs = args.finetune_epochs
    per_stage = {"prune": max(1, epochs // 3), "cluster": max(1, epochs // 3)}
    per_stage["quantize"] = max(1, epochs - per_stage["prune"] - per_stage["cluster"])
    same = f"{epochs} epochs"

    print(f"== 1. float model: {args.epochs} epochs")
    model = compile_model(build_model(), 3e-3)
    model.fit(x_train, y_train, epochs=args.epochs, **fit)
    graph = kopt.graph.analyze(model)
    print(f"graph: {graph.dag.number_of_nodes()} nodes, {graph.dag.number_of_edges()} tensors")

    print(f"== 2. float fine-tuned {epochs} more epochs (the same training as every compressed row), PTQ int8")
    floated = keras.models.clone_model(model)
    floated.set_weights(model.get_weights())
    compile_model(floated, FINETUNE_LEARNING_RATE).fit(x_train, y_train, epochs=epochs, **fit)
    rows = [deploy("float_ptq", same, floated, export.to_tflite(floated, representative_data=x_train),
                   x_test, y_test, out)]

    print("== 3. prune to 50% while fine-tuning, strip, post-training int8")
    steps = epochs * int(np.ceil(len(x_train) / fit["batch_size"]))
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=int(steps * 0.6), frequency=10)
    pruned = compile_model(sparsity.prune_low_magnitude(model, schedule), FINETUNE_LEARNING_RATE)
    pruned.fit(x_train, y_train, epochs=epochs, callbacks=[kopt.callbacks.UpdatePruningStep()], **fit)
    pruned = kopt.strip(pruned)
    rows.append(deploy("pruned50_ptq", same, pruned, export.to_tflite(pruned, representative_data=x_train),
                       x_test, y_test, out))

    print("== 4. quantization-aware training, int8 from the trained ranges")
    qat = compile_model(quantization.quantize_model(model), FINETUNE_LEARNING_RATE)
    qat.fit(x_train, y_train, epochs=epochs, **fit)
    rows.append(deploy("qat", same, qat, export.to_tflite(qat), x_test, y_test, out))

    print("== 5. the one-liner: prune -> cluster (keeping zeros) -> QAT keeping both (PCQAT) -> int8")
    result = kopt.optimize(
        model,
        pcqat_policy(),
        train_data=(x_train, y_train),
        validation_data=(x_test, y_test),
        epochs=per_stage,
        optimizer=keras.optimizers.Adam(FINETUNE_LEARNING_RATE),
        batch_size=fit["batch_size"],
        seed=args.seed,
        verbose=fit["verbose"],  # one line per epoch, as the other rows
    )
    written = result.save(out / "pcqat")  # model.keras, model.tflite, report.json, report.md, plots
    split = " + ".join(str(per_stage[s]) for s in ("prune", "cluster", "quantize"))
    rows.append(deploy("pcqat", f"{split} epochs", result.model, result.tflite, x_test, y_test, out))

    (out / "report.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (out / "report.md").write_text("# digits CNN: kopt deployment report\n\n" + table + "\n")
    if args.results:
        print(f"wrote {write_results('digits_pipeline', 'digits CNN: the main example', table)}")
    print("\n" + table)
    plots = sorted(str(p) for p in written.values() if str(p).endswith(".png"))
    print(f"\nint8 files: {out}/*.tflite; this table: {out}/report.md, report.json")
    print(f"one-liner's detailed report (per stage and layer): {out / 'pcqat' / 'report.md'}")
    print(f"plots: {', '.join(plots) if plots else '(matplotlib not installed)'}")
    return rows


if __name__ == "__main__":
    main()
