"""The TFMOT half of ``compare.py --tfmot``: runs inside the throw-away environment
``benchmarks/.tfmot-venv`` (tensorflow + tf-keras + tensorflow-model-optimization, with
``TF_USE_LEGACY_KERAS=1``), never in kopt's own.

It reads the data and the float weights ``compare.py`` stored, runs every variant the way the
TFMOT guides do (prune_low_magnitude / cluster_weights / quantize_model, strip between stages,
the PQAT / CQAT / PCQAT schemes of ``tfmot.experimental.combine``), writes the ``.tflite`` files
and a JSON of what it measured here (training-step ratios, conversion times, refusals).
Accuracy, sizes and latency of the ``.tflite`` files are measured by ``compare.py`` for both
sides alike.

Run by compare.py: ``python benchmarks/tfmot_side.py --out <json> [--quick] [--models ...]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _compare_setup as setup  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from _harness import environment, paired_quartiles, paired_ratio, timed, train_step_ratios, write_json  # noqa: E402

sparsity = tfmot.sparsity.keras
clustering = tfmot.clustering.keras
quantization = tfmot.quantization.keras
combine = tfmot.experimental.combine

NOT_SUPPORTED = "not supported by TFMOT"


def seed() -> None:
    keras.utils.set_random_seed(setup.SEED)


def compiled(model: Any, lr: float) -> Any:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def float_model(name: str) -> Any:
    seed()
    model = setup.BUILDERS[name](keras)
    if name != "mobilenetv2":  # speed only: random weights; the CNNs start from kopt's trained float model
        model.set_weights(setup.load_weights(setup.weights_path(name)))
    return model


# ------------------------------------------------------------------ stage wrappers (TFMOT API)
def prune_wrapped(model: Any, schedule: dict[str, Any], m_by_n: bool = False) -> Any:
    kwargs: dict[str, Any] = {"pruning_schedule": sparsity.PolynomialDecay(**schedule)}
    if m_by_n:
        kwargs["sparsity_m_by_n"] = (2, 4)
    return sparsity.prune_low_magnitude(model, **kwargs)


def cluster_wrapped(model: Any, preserve_sparsity: bool = False) -> Any:
    return clustering.cluster_weights(
        model,
        number_of_clusters=16,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=preserve_sparsity,
    )


def quantize_wrapped(model: Any, scheme: str) -> Any:
    if scheme == "default_8bit":
        return quantization.quantize_model(model)
    schemes = {
        "prune_preserve": combine.Default8BitPrunePreserveQuantizeScheme,
        "cluster_preserve": combine.Default8BitClusterPreserveQuantizeScheme,
        "prune_cluster_preserve": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }
    return quantization.quantize_apply(quantization.quantize_annotate_model(model), schemes[scheme]())


def stage_wrapper(variant: str, stage: str, schedule: dict[str, Any]) -> Callable[[Any], Any]:
    if stage == "prune":
        return lambda m: prune_wrapped(m, schedule, m_by_n=variant == "prune_2x4")
    if stage == "cluster":
        return lambda m: cluster_wrapped(m, preserve_sparsity=variant == "pcqat")
    return lambda m: quantize_wrapped(m, setup.SCHEMES[variant])


def strip(model: Any, stage: str) -> Any:
    if stage == "prune":
        return sparsity.strip_pruning(model)
    if stage == "cluster":
        return clustering.strip_clustering(model)
    return model


def stage_callbacks(stage: str) -> list[Any]:
    return [sparsity.UpdatePruningStep()] if stage == "prune" else []


# ------------------------------------------------------------------ conversion
def int8_tflite(model: Any, calibration: np.ndarray | None) -> bytes:
    """Full-integer TFLite (int8 in and out), as TFMOT's guides convert."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration is not None:  # post-training: calibrate; a QAT model has its fake-quant ranges
        converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def float_tflite(model: Any) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def save(name: str, variant: str, kind: str, data: bytes) -> str:
    path = setup.tflite_path("tfmot", name, variant, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def refusal(error: BaseException) -> str:
    return f"{NOT_SUPPORTED}: {type(error).__name__}: {str(error).splitlines()[0][:160]}"


# ------------------------------------------------------------------ CNNs (trained variants)
def fresh_copy(model: Any) -> Any:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def run_variant(name: str, variant: str, protocol: setup.Protocol, data: tuple, schedule: dict[str, Any]) -> dict[str, Any]:
    x, y, x_test, y_test = data
    preset, stages = setup.VARIANTS[variant]
    row: dict[str, Any] = {"stages": list(stages)}
    model = float_model(name)
    stage_inputs: dict[str, Any] = {}
    for stage in stages:
        seed()
        stage_inputs[stage] = fresh_copy(model)
        try:
            wrapped = compiled(stage_wrapper(variant, stage, schedule)(model), protocol.finetune_lr)
        except Exception as error:  # TFMOT refuses the layer type or the combination
            row["error"] = refusal(error)
            return row
        try:
            wrapped.fit(
                x, y, batch_size=protocol.batch, epochs=protocol.stage_epochs, shuffle=True, verbose=0,
                callbacks=stage_callbacks(stage),
            )
        except Exception as error:  # e.g. 2:4 pruning of a Conv1D fails in the first step
            row["error"] = refusal(error)
            return row
        model = strip(wrapped, stage)
    row["keras_accuracy"] = float(compiled(model, protocol.finetune_lr).evaluate(x_test, y_test, verbose=0)[1])
    quantized = "quantize" in stages
    calibration = None if quantized else x[: protocol.calibration_samples]
    row["convert_s"], tflite = timed(lambda: int8_tflite(model, calibration))
    row["int8_tflite"] = save(name, variant, "int8", tflite)
    if not quantized:
        row["float_tflite"] = save(name, variant, "float", float_tflite(model))
    row["_stage_inputs"] = stage_inputs
    return row


def batch_norms(model: Any) -> list[Any]:
    """Every BatchNormalization inside ``model``, wrapped ones included."""
    return [layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)]


def batch_norm_statistics(model: Any) -> dict[str, np.ndarray]:
    """Moving mean of every BatchNormalization inside ``model``, by layer name: unchanged after
    training steps means the wrapper ran the layer in inference mode (TFMOT's
    ``ClusterWeights.call`` does not pass ``training`` on)."""
    return {layer.name: np.array(layer.moving_mean.numpy()) for layer in batch_norms(model)}


FROZEN_FLOAT = "float_frozen_batch_norm"


def with_frozen_batch_norms(model: Any) -> Any:
    """The float model with its BatchNormalizations in inference mode (tf-keras runs a
    non-trainable BatchNormalization with its moving statistics)."""
    for layer in batch_norms(model):
        layer.trainable = False
    return model


def timed_steps(name: str, models: dict[str, Any], protocol: setup.Protocol, x, y, callbacks: dict[str, list[Any]]) -> dict:
    """:func:`train_step_ratios`, plus for each model the BatchNormalizations whose moving
    statistics the timed steps left unchanged (``frozen_batch_norm``). Such a model skips work
    the float model does, so its ratio is not like for like: it is also given against a float
    model with frozen BatchNorms, timed alongside (``ratio_vs_frozen_float`` and quartiles)."""
    models = {**models, FROZEN_FLOAT: compiled(with_frozen_batch_norms(float_model(name)), protocol.finetune_lr)}
    before = {key: batch_norm_statistics(model) for key, model in models.items()}
    ratios = train_step_ratios(
        keras, models, x, y, batch=protocol.timing_batch, rounds=protocol.timing_rounds, steps=protocol.timing_steps,
        baseline="float", callbacks=callbacks,
    )
    frozen_float = ratios.pop(FROZEN_FLOAT)
    for key in ratios:
        after = batch_norm_statistics(models[key])
        frozen = [layer for layer, values in after.items() if np.array_equal(values, before[key][layer])]
        ratios[key]["frozen_batch_norm"] = frozen
        if frozen:
            samples, baseline = ratios[key]["rounds_s"], frozen_float["rounds_s"]
            ratios[key]["ratio_vs_frozen_float"] = paired_ratio(samples, baseline)
            ratios[key]["ratio_vs_frozen_float_q1"], ratios[key]["ratio_vs_frozen_float_q3"] = paired_quartiles(samples, baseline)
    return ratios


def time_stages(name: str, protocol: setup.Protocol, rows: dict[str, dict[str, Any]], schedule: dict[str, Any], x, y) -> dict:
    """Training-step time of every stage's wrapped model against the float model, alternated."""
    models: dict[str, Any] = {"float": compiled(float_model(name), protocol.finetune_lr)}
    callbacks: dict[str, list[Any]] = {}
    for key, timed_stage in setup.TIMED_STAGES.items():
        variant, stage = timed_stage.split(":")
        row = rows.get(variant, {})
        if "error" in row or stage not in row.get("_stage_inputs", {}):
            continue
        seed()
        try:  # a fresh copy: TFMOT cannot wrap the same model object twice (cluster_weights fails)
            models[key] = compiled(stage_wrapper(variant, stage, schedule)(fresh_copy(row["_stage_inputs"][stage])), protocol.finetune_lr)
        except Exception as error:
            traceback.print_exc()
            rows[variant]["timing_error"] = refusal(error)
            continue
        callbacks[key] = stage_callbacks(stage)
    return timed_steps(name, models, protocol, x, y, callbacks)


def run_cnn(name: str, protocol: setup.Protocol) -> dict[str, Any]:
    data = setup.load_data(name)
    x, y, x_test, y_test = data
    schedule = protocol.pruning_schedule(len(x))
    base = compiled(float_model(name), protocol.finetune_lr)
    result: dict[str, Any] = {"float_keras_accuracy": float(base.evaluate(x_test, y_test, verbose=0)[1]), "variants": {}}
    result["variants"]["baseline"] = {"float_tflite": save(name, "baseline", "float", float_tflite(base))}
    for variant in setup.VARIANTS:
        if variant == "baseline":
            continue
        print(f"[tfmot] {name} {variant}", flush=True)
        try:
            result["variants"][variant] = run_variant(name, variant, protocol, data, schedule)
        except Exception as error:  # conversion or evaluation: a failure of this script, not a refusal
            traceback.print_exc()
            result["variants"][variant] = {"error": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"}
    print(f"[tfmot] {name} timing", flush=True)
    result["train_step"] = time_stages(name, protocol, result["variants"], schedule, x, y)
    for row in result["variants"].values():
        row.pop("_stage_inputs", None)
    return result


# ------------------------------------------------------------------ MobileNetV2 (speed only)
MOBILENET_VARIANTS = ("prune", "prune_2x4", "cluster", "qat")


def run_mobilenet(protocol: setup.Protocol, variants: tuple[str, ...] = MOBILENET_VARIANTS) -> dict[str, Any]:
    name = "mobilenetv2"
    rng = np.random.default_rng(setup.SEED)
    count = protocol.timing_batch * (protocol.timing_steps + 4)
    x = rng.uniform(-1, 1, (count, 96, 96, 3)).astype("float32")
    y = rng.integers(0, 10, count)
    schedule = {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": 1000, "frequency": 100}
    result: dict[str, Any] = {"variants": {}}
    base = float_model(name)
    result["variants"]["baseline"] = {"float_tflite": save(name, "baseline", "float", float_tflite(base))}
    seconds, tflite = timed(lambda: int8_tflite(base, x[: protocol.calibration_samples]))
    result["variants"]["ptq"] = {"convert_s": seconds, "int8_tflite": save(name, "ptq", "int8", tflite)}
    models: dict[str, Any] = {"float": compiled(float_model(name), protocol.finetune_lr)}
    callbacks: dict[str, list[Any]] = {}
    for key, wrap in {
        "prune": lambda m: prune_wrapped(m, schedule),
        "prune_2x4": lambda m: prune_wrapped(m, schedule, m_by_n=True),
        "cluster": lambda m: cluster_wrapped(m),
        "qat": lambda m: quantize_wrapped(m, "default_8bit"),
    }.items():
        if key not in variants:
            continue
        try:
            models[key] = compiled(wrap(float_model(name)), protocol.finetune_lr)
            callbacks[key] = stage_callbacks("prune" if key.startswith("prune") else key)
        except Exception as error:
            result["variants"][key] = {"error": refusal(error)}
    qat = models.get("qat")
    if qat is not None:
        qat.fit(x, y, batch_size=protocol.timing_batch, epochs=1, verbose=0)  # ranges from data, not their init
        seconds, tflite = timed(lambda: int8_tflite(qat, None))
        result["variants"]["qat"] = {"convert_s": seconds, "int8_tflite": save(name, "qat", "int8", tflite)}
    print("[tfmot] mobilenetv2 timing", flush=True)
    result["train_step"] = timed_steps(name, models, protocol, x, y, callbacks)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=list(setup.BUILDERS))
    parser.add_argument("--work", default=str(setup.WORK), help="directory of the data, weights and .tflite files")
    parser.add_argument("--mobilenet-variants", nargs="*", default=list(MOBILENET_VARIANTS), choices=MOBILENET_VARIANTS,
                        help="MobileNetV2: the variants to time (benchmarks/backends.py --mobilenet: qat)")
    for field in ("timing_batch", "timing_rounds", "timing_steps"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, help="override the protocol's (every model)")
    args = parser.parse_args()
    setup.WORK = Path(args.work)
    overrides = {f: getattr(args, f) for f in ("timing_batch", "timing_rounds", "timing_steps") if getattr(args, f)}
    protocols = {k: dataclasses.replace(p, **overrides) for k, p in setup.protocols(args.quick).items()}
    results: dict[str, Any] = {
        "side": "tfmot",
        "versions": {"tensorflow": tf.__version__, "tf_keras": keras.__version__, "tfmot": tfmot.__version__},
        "environment": environment(),
        "models": {},
    }
    for name in args.models:
        if name == "mobilenetv2":
            results["models"][name] = run_mobilenet(protocols[name], tuple(args.mobilenet_variants))
        else:
            results["models"][name] = run_cnn(name, protocols[name])
        write_json(os.path.basename(args.out), results, directory=os.path.dirname(os.path.abspath(args.out)))
    print(f"[tfmot] wrote {args.out}")


if __name__ == "__main__":
    main()
