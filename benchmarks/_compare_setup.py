"""What ``compare.py`` (kopt, Keras 3) and ``tfmot_side.py`` (TFMOT, tf-keras) share: the
architectures, the variants, the fine-tuning protocol and where the data and results live.

The builders take the Keras module as an argument (``keras`` or ``tf_keras``) so both sides
build the same graph from the same code. Both sides start every variant from the same float
weights (trained once by ``compare.py`` and stored as ``.npz``) and fine-tune each stage with
the same optimizer, learning rate, epochs, batch size, pruning schedule and seed.

Only the standard library and NumPy are imported here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
# Data, float weights and .tflite files of a run; the quick run keeps its own directory. Set by
# the scripts' main() (``WORK = work_dir(quick)``) and read at call time by the path helpers.
WORK = BENCHMARKS / "results" / "compare_work"
SEED = 0

# Variant name -> (kopt preset, training stages in order). "baseline" is the float model itself.
VARIANTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "baseline": (None, ()),
    "ptq": ("ptq", ()),
    "prune": ("prune", ("prune",)),
    "prune_2x4": ("prune_2x4", ("prune",)),
    "cluster": ("cluster", ("cluster",)),
    "qat": ("qat", ("quantize",)),
    "pqat": ("pqat", ("prune", "quantize")),
    "cqat": ("cqat", ("cluster", "quantize")),
    "pcqat": ("pcqat", ("prune", "cluster", "quantize")),
}
LABELS = {
    "baseline": "float baseline",
    "ptq": "PTQ int8",
    "prune": "pruned 50%",
    "prune_2x4": "pruned 2:4",
    "cluster": "clustered 16",
    "qat": "QAT",
    "pqat": "PQAT",
    "cqat": "CQAT",
    "pcqat": "PCQAT",
}
# kopt quantization scheme each QAT variant needs (registered by kopt.quantization.register_scheme).
SCHEMES = {"qat": "default_8bit", "pqat": "prune_preserve", "cqat": "cluster_preserve", "pcqat": "prune_cluster_preserve"}

# Training-step timings: every wrapped model a variant trains, keyed "<variant>:<stage>".
# Stages that are the same model in two variants are timed once (pqat's prune stage is "prune:prune").
TIMED_STAGES = {
    "prune": "prune:prune",
    "prune_2x4": "prune_2x4:prune",
    "cluster": "cluster:cluster",
    "qat": "qat:quantize",
    "pqat": "pqat:quantize",
    "cqat": "cqat:quantize",
    "pcqat_cluster": "pcqat:cluster",
    "pcqat": "pcqat:quantize",
}


@dataclass(frozen=True)
class Protocol:
    """Data size and training budget of one data set (the same on both sides)."""

    model: str
    samples: int  # train + test
    float_epochs: int
    stage_epochs: int
    batch: int
    float_lr: float
    finetune_lr: float
    timing_batch: int
    timing_rounds: int
    timing_steps: int
    calibration_samples: int = 100

    def steps(self, train_size: int) -> int:
        return self.stage_epochs * (train_size // self.batch + (train_size % self.batch > 0))

    def pruning_schedule(self, train_size: int) -> dict[str, Any]:
        """PolynomialDecay 0 -> 50% ending at ~2/3 of the stage, masks recomputed 10 times (so
        that short stages still reach the target sparsity on an update step)."""
        end = max(10, round(self.steps(train_size) * 2 / 3))
        frequency = max(1, end // 10)
        return {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": frequency * 10, "frequency": frequency}


def protocols(quick: bool) -> dict[str, Protocol]:
    if quick:  # a smoke test of every variant and figure: the least data, epochs and repeats that run them
        return {
            "mnist1d_conv1d": Protocol("mnist1d_conv1d", 2000, 2, 1, 128, 3e-3, 5e-4, 128, 2, 3, 32),
            "digits_conv2d": Protocol("digits_conv2d", 1797, 3, 1, 64, 1e-2, 5e-4, 64, 2, 3, 32),
            "mobilenetv2": Protocol("mobilenetv2", 0, 0, 0, 8, 0.0, 1e-3, 8, 2, 2, 16),
        }
    return {
        # 15 timing rounds: with 7 the step ratios moved by 0.1-0.15 between runs. MobileNetV2 times
        # 5 batches a round: with 9 rounds of 3 its QAT ratio (whose step cost depends on the data:
        # clipping masks are skipped when nothing was clipped) read 1.17 and 1.30 in two runs.
        "mnist1d_conv1d": Protocol("mnist1d_conv1d", 20000, 20, 3, 128, 3e-3, 5e-4, 128, 15, 10),
        "digits_conv2d": Protocol("digits_conv2d", 1797, 40, 10, 64, 1e-2, 5e-4, 64, 15, 10),
        "mobilenetv2": Protocol("mobilenetv2", 0, 0, 0, 32, 0.0, 1e-3, 32, 15, 5),
    }


# ------------------------------------------------------------------ architectures
def conv1d_cnn(keras: Any) -> Any:
    """mnist1d: four Conv1D + BatchNorm + ReLU blocks, global pooling, Dense (about 24 000 weights)."""
    layers = keras.layers
    inputs = keras.Input((40, 1))
    x = inputs
    for filters, kernel, pool in ((32, 5, False), (32, 5, True), (64, 3, True), (64, 3, False)):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
        if pool:
            x = layers.MaxPooling1D(2)(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="mnist1d_conv1d")


def digits_cnn(keras: Any) -> Any:
    """scikit-learn digits (8x8): Conv2D, a DepthwiseConv2D branch and a 1x1 branch joined by
    Concatenate, a strided Conv2D, every conv followed by BatchNorm + ReLU (about 31 000 weights)."""
    layers = keras.layers

    def block(x: Any, layer: Any) -> Any:
        return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layer(x)))

    inputs = keras.Input((8, 8, 1))
    x = block(inputs, layers.Conv2D(32, 3, padding="same", use_bias=False))
    depthwise = block(x, layers.DepthwiseConv2D(3, padding="same", use_bias=False))
    pointwise = block(x, layers.Conv2D(32, 1, use_bias=False))
    x = layers.Concatenate()([depthwise, pointwise])
    x = block(x, layers.Conv2D(48, 3, strides=2, padding="same", use_bias=False))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="digits_conv2d")


def mobilenet_v2(keras: Any) -> Any:
    """keras.applications MobileNetV2, alpha 0.35, 96x96, 10 classes, random weights (speed only)."""
    return keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )


BUILDERS = {"mnist1d_conv1d": conv1d_cnn, "digits_conv2d": digits_cnn, "mobilenetv2": mobilenet_v2}
INPUT_SHAPES = {"mnist1d_conv1d": (40, 1), "digits_conv2d": (8, 8, 1), "mobilenetv2": (96, 96, 3)}


# ------------------------------------------------------------------ files shared by both sides
def work_dir(quick: bool) -> Path:
    return BENCHMARKS / "results" / ("compare_work" if quick else "compare_work_full")


def data_path(model: str) -> Path:
    return WORK / f"{model}_data.npz"


def weights_path(model: str) -> Path:
    return WORK / f"{model}_float_weights.npz"


def tflite_path(side: str, model: str, variant: str, kind: str) -> Path:
    """``kind``: "int8" or "float"."""
    return WORK / side / f"{model}_{variant}_{kind}.tflite"


def save_weights(weights: list[np.ndarray], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, *weights)


def load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def load_data(model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(data_path(model)) as data:
        return data["x"], data["y"], data["x_test"], data["y_test"]


def write_protocol(path: Path, quick: bool, models: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"quick": quick, "models": models, "seed": SEED}, indent=2))


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    return asdict(protocol)
