"""The main job on the bundled example: train a small CNN on scikit-learn's digits, optimize it, deploy int8.

Stages (public kopt calls composed by hand, then the one-liner):
  baseline float model -> post-training int8 (PTQ)
  prune 50% during fine-tuning -> strip -> PTQ int8 (zeros survive: PTQ does not train)
  quantization-aware training (QAT) -> int8 from the trained fake-quant ranges
  kopt.optimize(model, "pcqat"): prune -> cluster keeping zeros -> QAT keeping both -> int8
Every int8 model is run with the LiteRT interpreter on the held-out split and checked for the Edge TPU.
Writes <out>/<stage>.tflite, <out>/report.json and <out>/report.md, and prints the summary table.

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
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kopt  # noqa: E402
from kopt import export, quantization, sparsity  # noqa: E402


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


def deploy(name: str, model: keras.Model, tflite: bytes, x_test, y_test, out: Path) -> dict:
    (out / f"{name}.tflite").write_bytes(tflite)
    edgetpu = export.check_edgetpu(tflite)
    summary = export.inspect(tflite)
    return {
        "stage": name,
        "keras_accuracy": keras_accuracy(model, x_test, y_test),
        "int8_accuracy": export.evaluate(tflite, x_test, y_test),
        "tflite_bytes": export.tflite_size(tflite),
        "zipped_bytes": export.zipped_size(tflite),
        "kernel_sparsity": kernel_sparsity(tflite),
        "edgetpu_fully_mapped": edgetpu.fully_mapped,
        "edgetpu_mapped": f"{edgetpu.num_mapped}/{edgetpu.num_ops}",
        "op_counts": summary.op_counts,
    }


def markdown(rows: list[dict]) -> str:
    head = "| stage | Keras acc | int8 TFLite acc | .tflite bytes | zipped bytes | kernel sparsity | Edge TPU |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['keras_accuracy']:.4f} | {r['int8_accuracy']:.4f} | {r['tflite_bytes']} | "
            f"{r['zipped_bytes']} | {r['kernel_sparsity']:.1%} | "
            f"{'fully mapped' if r['edgetpu_fully_mapped'] else 'NOT fully mapped'} ({r['edgetpu_mapped']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples/output", help="output directory")
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=6, help="epochs of each fine-tuning stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    fit = dict(batch_size=32, verbose=2)

    print("== 1. baseline float model")
    model = compile_model(build_model(), 3e-3)
    model.fit(x_train, y_train, epochs=args.epochs, **fit)
    graph = kopt.graph.analyze(model)
    print(f"graph: {graph.dag.number_of_nodes()} nodes, {graph.dag.number_of_edges()} tensors")
    rows = [deploy("baseline_ptq", model, export.to_tflite(model, representative_data=x_train), x_test, y_test, out)]

    print("== 2. prune to 50% while fine-tuning, strip, post-training int8")
    steps = args.finetune_epochs * int(np.ceil(len(x_train) / fit["batch_size"]))
    schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=int(steps * 0.6), frequency=10)
    pruned = compile_model(sparsity.prune_low_magnitude(model, schedule), 1e-3)
    pruned.fit(x_train, y_train, epochs=args.finetune_epochs, callbacks=[kopt.callbacks.UpdatePruningStep()], **fit)
    pruned = kopt.strip(pruned)
    compile_model(pruned, 1e-3)
    rows.append(deploy("pruned50_ptq", pruned, export.to_tflite(pruned, representative_data=x_train), x_test, y_test, out))

    print("== 3. quantization-aware training, int8 from the trained ranges")
    qat = compile_model(quantization.quantize_model(model), 5e-4)
    qat.fit(x_train, y_train, epochs=args.finetune_epochs, **fit)
    rows.append(deploy("qat", qat, export.to_tflite(qat), x_test, y_test, out))

    print("== 4. the one-liner: prune -> cluster (keeping zeros) -> QAT keeping both (PCQAT) -> int8")
    result = kopt.optimize(
        model,
        "pcqat",
        train_data=(x_train, y_train),
        validation_data=(x_test, y_test),
        epochs=args.finetune_epochs,
        optimizer=keras.optimizers.Adam(5e-4),  # fine-tuning: gentler than the float model's 3e-3
        batch_size=fit["batch_size"],
        seed=args.seed,
    )
    result.save(out / "pcqat")  # model.keras, model.tflite, report.json, report.md, plots
    rows.append(deploy("pcqat", result.model, result.tflite, x_test, y_test, out))

    (out / "report.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (out / "report.md").write_text("# digits CNN: kopt deployment report\n\n" + table + "\n")
    print("\n" + table)
    print(f"\nwrote {out}/*.tflite, report.json, report.md")
    return rows


if __name__ == "__main__":
    main()
