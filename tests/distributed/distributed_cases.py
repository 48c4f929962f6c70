"""Child process of tests/distributed: train the PCQAT stack on one device and on two, print JSON.

Run as ``python distributed_cases.py mirrored|data_parallel [placement ...]``. The backend and
the two CPU devices must be configured before TensorFlow / JAX initialise, which is why the
tests run this script in a fresh process instead of importing it.

* ``mirrored``: TensorFlow backend, ``tf.distribute.MirroredStrategy`` over two logical CPUs;
* ``data_parallel``: JAX backend, ``keras.distribution.DataParallel`` over two host devices.

The stack is every technique in turn, each fine-tuned for a few steps on the same global
batches: prune (masks change at every step) -> strip -> cluster keeping the zeros -> strip
-> QAT with the ``prune_cluster_preserve`` scheme (plain QAT if it is not registered). It
runs once on one device (the reference) and once distributed per placement:

* ``wrap_in_scope`` (default): the plain model is built outside the scope, every wrapping,
  compile and fit happen inside it;
* ``scope``: the plain model is built inside the scope too;
* ``wrap_outside``: wrapped outside the scope, only compile and fit inside (Keras refuses
  this: variables must be created under the strategy / distribution).

Output (last line): ``KOPT_RESULT {json}`` with, per run and stage, every variable by
position (names get suffixes in the second run) and the figures the tests compare.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

ENGINE = sys.argv[1] if len(sys.argv) > 1 else "mirrored"
PLACEMENTS = sys.argv[2:] or ["wrap_in_scope"]
if ENGINE == "data_parallel":
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
elif ENGINE == "mirrored":
    os.environ["KERAS_BACKEND"] = "tensorflow"
else:
    raise SystemExit(f"unknown engine {ENGINE!r}: use mirrored or data_parallel")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib  # noqa: E402

import numpy as np  # noqa: E402

if ENGINE == "mirrored":
    import tensorflow as tf  # noqa: E402

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kopt  # noqa: E402
from kopt import clustering, quantization, sparsity  # noqa: E402

GLOBAL_BATCH = 16
STEPS = 4
SEED = 7
CLUSTERS = 4
PCQAT_SCHEME = "prune_cluster_preserve"


def data() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    x = digits.data[: GLOBAL_BATCH * STEPS].astype("float32") / 16.0
    y = digits.target[: GLOBAL_BATCH * STEPS].astype("int32")
    return x, y


def base_model() -> keras.Model:
    """Dense layers with a Concatenate, so QAT also trains a range shared by two tensors."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((64,), name="pixels")
    hidden = keras.layers.Dense(24, activation="relu", name="hidden")(inputs)
    left = keras.layers.Dense(8, name="left")(hidden)
    right = keras.layers.Dense(8, activation="relu", name="right")(hidden)
    merged = keras.layers.Concatenate(name="merged")([left, right])
    outputs = keras.layers.Dense(10, name="logits")(merged)
    return keras.Model(inputs, outputs, name="tiny")


def fit(model: keras.Model) -> None:
    x, y = data()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)


class Engine:
    """Where models are built and trained: one device, or distributed over two."""

    def __init__(self, distributed: bool):
        if not distributed:
            self.strategy = None
        elif ENGINE == "mirrored":
            self.strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        else:
            import jax

            self.strategy = keras.distribution.DataParallel(devices=jax.devices())

    def scope(self):
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()


def train_stack(engine: Engine, placement: str) -> dict:
    """Prune -> cluster (keep zeros) -> QAT (keep both); a summary after each stage."""
    outside = contextlib.nullcontext
    build_scope = engine.scope if placement == "scope" else outside
    wrap_scope = engine.scope if placement in ("scope", "wrap_in_scope") else outside
    scheme = PCQAT_SCHEME if PCQAT_SCHEME in quantization.available_schemes() else "default_8bit"
    stages = {"scheme": scheme}

    with build_scope():
        model = base_model()
    with wrap_scope():
        # Masks change at every step: the sharpest test of replica agreement.
        schedule = sparsity.PolynomialDecay(0.2, 0.7, begin_step=0, end_step=STEPS - 1, power=1, frequency=1)
        model = sparsity.prune_low_magnitude(model, schedule=schedule)
    with engine.scope():
        fit(model)
    stages["prune"] = summary(model)

    with wrap_scope():
        model = clustering.cluster_weights(
            kopt.strip(model), CLUSTERS, init="linear", preserve_sparsity=True, seed=SEED
        )
    with engine.scope():
        fit(model)
    stages["cluster"] = summary(model)

    with wrap_scope():
        model = quantization.quantize_model(kopt.strip(model), scheme=scheme)
    with engine.scope():
        fit(model)
    stages["qat"] = summary(model)
    return stages


def summary(model: keras.Model) -> dict:
    """Every variable (by position), how it is replicated, and the figures the issue names."""
    variables = [
        {"name": v.path.split("/", 1)[-1], "value": np.asarray(keras.ops.convert_to_numpy(v.value), "float64").tolist()}
        for v in model.weights
    ]
    figures: dict = {"steps": {}, "sparsity": {}, "unique": {}, "ranges": {}}
    for layer in model._flatten_layers():
        if isinstance(layer, sparsity.PruneWrapper):
            figures["steps"][layer.layer.name] = layer.step
        if isinstance(layer, (sparsity.PruneWrapper, clustering.ClusterWrapper, quantization.QuantizeWrapper)):
            for variable, value in layer.transformed_weights(training=False):
                if variable.name == "kernel":
                    deployed = np.asarray(keras.ops.convert_to_numpy(value))
                    figures["unique"][layer.layer.name] = len(np.unique(deployed))
                    figures["sparsity"][layer.layer.name] = float(np.mean(deployed == 0))
    for v in model.weights:
        if v.path.endswith("range"):
            figures["ranges"][v.path.split("/")[0]] = np.asarray(keras.ops.convert_to_numpy(v.value))[:2].tolist()
    return {"variables": variables, "figures": figures, "replication": replication(model)}


def replication(model: keras.Model) -> dict:
    """On how many devices each variable lives (the fewest), and (TensorFlow) do all copies agree?"""
    if ENGINE == "mirrored":
        copies = [getattr(v.value, "values", (v.value,)) for v in model.weights]
        arrays = [[np.asarray(c.numpy()) for c in values] for values in copies]
        return {
            "devices": min(len(values) for values in copies),
            "agree": all(np.array_equal(a[0], b) for a in arrays for b in a[1:]),
        }
    return {"devices": min(len(v.value.sharding.device_set) for v in model.weights), "agree": True}


def run(engine: Engine, placement: str) -> dict:
    try:
        return train_stack(engine, placement)
    except Exception as error:  # reported, not raised: the caller says which placement fails
        return {"error": f"{type(error).__name__}: {error}"[:2000], "trace": traceback.format_exc()[-3000:]}


def main() -> None:
    output = {"backend": keras.backend.backend(), "single": run(Engine(distributed=False), "scope")}
    distributed = Engine(distributed=True)
    output["distributed"] = {placement: run(distributed, placement) for placement in PLACEMENTS}
    print("KOPT_RESULT " + json.dumps(output))


if __name__ == "__main__":
    main()
