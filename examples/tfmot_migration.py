"""TFMOT code on Keras 3 with one changed import: prune -> strip -> QAT keeping the zeros (PQAT).

Written the way TFMOT's guides write it (``tfmot.sparsity.keras``, ``strip_pruning``,
``quantize_annotate_model`` + ``quantize_apply`` with ``Default8BitPrunePreserveQuantizeScheme``),
with ``import kopt.tfmot as tfmot`` in place of ``import tensorflow_model_optimization as tfmot``.
Data: scikit-learn's 8x8 digits. Prints the kernel sparsity after each stage and of the int8
TFLite model, and its accuracy. See docs/migrating-from-tfmot.md.

Run: ``python examples/tfmot_migration.py`` (about 30 s on 2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import kopt.tfmot as tfmot  # noqa: PLR0402  (the one changed line of a TFMOT script)


def kernel_sparsity(model: keras.Model) -> str:
    parts = []
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name == "kernel":
                values = keras.ops.convert_to_numpy(weight)
                parts.append(f"{layer.name}: {np.mean(values == 0):.0%}")
    return ", ".join(parts)


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    print(f"baseline accuracy: {model.evaluate(x_test, y_test, verbose=0)[1]:.3f}")

    # TFMOT's pruning guide: 50% -> 80% sparsity over two epochs.
    end_step = int(np.ceil(len(x_train) / 32)) * 2 - 10  # its last update (every 10 steps) falls inside training
    pruning_params = {
        "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step, frequency=10
        )
    }
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, **pruning_params)
    pruned.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    pruned.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    print(f"pruned ({type(stripped).__name__}): {kernel_sparsity(stripped)}")

    # TFMOT's PQAT guide: annotate, apply the prune-preserving scheme, fine-tune.
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    pqat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    pqat.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    pqat.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0)
    print(f"PQAT accuracy: {pqat.evaluate(x_test, y_test, verbose=0)[1]:.3f}")

    converter = tf.lite.TFLiteConverter.from_keras_model(pqat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            weight = details[op["inputs"][1]]
            values = interpreter.get_tensor(weight["index"])
            print(f"TFLite {op['op_name']}: {np.dtype(weight['dtype'])} weights, {np.mean(values == 0):.0%} zeros")
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for image, label in zip(x_test, y_test):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    print(f"int8 TFLite accuracy: {correct / len(x_test):.3f}")


if __name__ == "__main__":
    main()
