"""Fine-tune with pruning, then quantization-aware training, on two devices (CPU stand-ins for GPUs).

TensorFlow backend (default): ``tf.distribute.MirroredStrategy`` over two logical CPUs.
JAX backend: ``keras.distribution.DataParallel`` over two host devices. The rule is the same
on both: build or load the plain model anywhere, then *wrap, compile and fit inside the
distribution scope* (wrapping creates the new variables, which must be distributed).

Run: python examples/distributed_finetune.py
     KERAS_BACKEND=jax python examples/distributed_finetune.py
"""

from __future__ import annotations

import os

BACKEND = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if BACKEND == "jax":  # before JAX initialises: split the host CPU into two devices
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
elif BACKEND == "tensorflow":  # before TensorFlow initialises: two logical CPUs
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
else:
    raise SystemExit(f"KERAS_BACKEND={BACKEND!r}: this example distributes with TensorFlow or JAX.")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kopt  # noqa: E402
from kopt import quantization, sparsity  # noqa: E402

GLOBAL_BATCH = 64  # split evenly over the replicas


def distribution():
    """The engine Keras already supports on this backend, over two devices."""
    if BACKEND == "tensorflow":
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    import jax

    return keras.distribution.DataParallel(devices=jax.devices())


def compiled(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    # A "pretrained" float model, trained on one device (in practice: loaded from disk).
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(10, name="classifier")(hidden)
    model = compiled(keras.Model(inputs, outputs), 3e-3)
    model.fit(x_train, y_train, batch_size=GLOBAL_BATCH, epochs=8, verbose=0)

    strategy = distribution()
    steps = 2 * int(np.ceil(len(x_train) / GLOBAL_BATCH))

    # 1. Prune to 50% during two epochs, on both devices.
    with strategy.scope():
        schedule = sparsity.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=steps // 2, frequency=5)
        pruned = compiled(sparsity.prune_low_magnitude(model, schedule=schedule), 1e-3)
        pruned.fit(x_train, y_train, batch_size=GLOBAL_BATCH, epochs=2, verbose=0)

    # 2. Strip, then quantization-aware training that keeps the zeros.
    scheme = "prune_preserve" if "prune_preserve" in quantization.available_schemes() else "default_8bit"
    with strategy.scope():
        qat = compiled(quantization.quantize_model(kopt.strip(pruned), scheme=scheme), 5e-4)
        qat.fit(x_train, y_train, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)

    _, float_accuracy = model.evaluate(x_test, y_test, verbose=0)
    _, qat_accuracy = qat.evaluate(x_test, y_test, verbose=0)
    replicas = strategy.num_replicas_in_sync if BACKEND == "tensorflow" else len(strategy.device_mesh.devices.flat)
    print(f"backend: {BACKEND}, replicas: {replicas}, scheme: {scheme}")
    print(f"accuracy: float {float_accuracy:.3f}, pruned + QAT {qat_accuracy:.3f}")
    for layer in qat.layers:
        if isinstance(layer, quantization.QuantizeWrapper):
            kernel = dict((v.name, t) for v, t in layer.transformed_weights(training=False))["kernel"]
            zeros = float(np.mean(keras.ops.convert_to_numpy(kernel) == 0))
            print(f"{layer.layer.name}: {zeros:.0%} of the fake-quantized kernel is zero")
    for variable in qat.weights:
        if variable.path.endswith("range"):
            low, high = keras.ops.convert_to_numpy(variable.value)[:2]
            print(f"activation range {variable.path}: [{low:.3f}, {high:.3f}] (from both replicas' batches)")


if __name__ == "__main__":
    main()
