"""Training-step cost of kopt's wrappers on every Keras backend, side by side.

The CNN of issue 25 (Conv2D + BatchNorm + ReLU, DepthwiseConv2D, 1x1 Conv2D, Dense; 32x32x3,
batch 64), stepped as: the float model (Keras' default compile setting for the backend, and
``jit_compile=True``: XLA on TensorFlow and JAX, ``torch.compile`` on PyTorch), pruned 50 %,
clustered 16, QAT and PCQAT-ready QAT (the quantize stage of ``"pcqat"`` on a pruned and
clustered model), and a second copy of the float model as a control (its ratio shows the run's
noise). The protocol of every ``benchmarks/`` script: variants alternated round by round (order
reversed every other round), a round's value the median of its batches, a ratio the median of
the per-round ratios to the float step of the same backend, with its quartiles.

* ``--backend NAME``: one backend, in this process (prints its table).
* ``--all-backends``: each backend in a subprocess, one after the other; writes
  benchmarks/results/backends.json and backends.md (environment, versions, load).
* ``--mobilenet``: MobileNetV2 (alpha 0.35, 96x96, batch 64) QAT step / float step on
  TensorFlow, rounds added until the ratio's half spread is within ``--tolerance``; with
  ``--tfmot`` also TFMOT's QAT ratio from ``tfmot_side.py`` in ``benchmarks/.tfmot-venv``
  (created by ``compare.py --tfmot``). Writes benchmarks/results/mobilenetv2_qat.json and .md.

Run: ``python benchmarks/backends.py --all-backends [--rounds 25]``;
``python benchmarks/backends.py --mobilenet --tfmot``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _backend_table as table  # noqa: E402
from _harness import (  # noqa: E402
    alternate,
    environment,
    fit_step_seconds,
    markdown_table,
    round_robin_order,
    summarize,
    write_json,
    write_markdown,
)

BATCH = 64
SEED = 0
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------ one backend (in this process)
def cnn(keras: Any) -> Any:
    """Conv2D + BN + ReLU, DepthwiseConv2D + BN + ReLU (stride 2), 1x1 Conv2D + BN + ReLU, Dense."""
    layers = keras.layers

    def block(x: Any, layer: Any) -> Any:
        return layers.ReLU()(layers.BatchNormalization()(layer(x)))

    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((32, 32, 3))
    x = block(inputs, layers.Conv2D(32, 3, padding="same", use_bias=False))
    x = block(x, layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False))
    x = block(x, layers.Conv2D(64, 1, use_bias=False))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="backend_cnn")


def compiled(keras: Any, model: Any, jit_compile: Any = "auto") -> Any:
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def pruned_and_clustered(keras: Any, kopt: Any, base: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """``base`` pruned to 50 % (one step of a one-shot schedule) and clustered (initialised), stripped,
    and the ``"pcqat"`` policy whose quantize stage it is ready for."""
    policy = kopt.Policy.preset("pcqat")
    policy = dataclasses.replace(policy, prune=dataclasses.replace(policy.prune, initial_sparsity=policy.prune.sparsity))
    pruned = compiled(keras, kopt.prepare(base, policy, stage="prune", steps=30, seed=SEED, compile=False))
    pruned.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, callbacks=kopt.callbacks.for_model(pruned))
    clustered = kopt.prepare(kopt.strip(pruned), policy, stage="cluster", seed=SEED, compile=False)
    return kopt.strip(clustered), policy


def run_backend(backend: str, rounds: int, steps: int, jit: bool) -> dict[str, Any]:
    """Time every variant on ``backend`` (must be the process's KERAS_BACKEND)."""
    import keras
    import numpy as np

    import kopt

    if keras.backend.backend() != backend:
        raise SystemExit(f"KERAS_BACKEND is {keras.backend.backend()!r}, asked for {backend!r}")
    rng = np.random.default_rng(SEED)
    count = BATCH * (steps + 4)
    x = rng.uniform(-1, 1, (count, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, count)
    base = cnn(keras)

    def float_copy(jit_compile: Any = "auto") -> Any:
        return compiled(keras, kopt.graph.map_layers(base, lambda layer: None), jit_compile=jit_compile)

    models: dict[str, Any] = {"float": float_copy(), "float_again": float_copy()}  # the second: the noise control
    errors: dict[str, str] = {}
    if jit:
        models["float_jit"] = float_copy(jit_compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variant, stage in (("prune", "prune"), ("cluster", "cluster"), ("qat", "quantize")):
            models[variant] = compiled(keras, kopt.prepare(base, variant, stage=stage, steps=1000, seed=SEED, compile=False))
        ready, policy = pruned_and_clustered(keras, kopt, base, x, y)
        models["pcqat"] = compiled(keras, kopt.prepare(ready, policy, stage="quantize", seed=SEED, compile=False))
    callbacks = {name: kopt.callbacks.for_model(model) for name, model in models.items()}
    compile_s: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in list(models):  # trace / compile and warm up; a compile failure drops the variant
            start = time.perf_counter()
            try:
                fit_step_seconds(keras, models[name], x, y, BATCH, 3, callbacks[name])
            except Exception as error:  # e.g. torch.compile on this machine
                errors[name] = f"{type(error).__name__}: {error}"
                del models[name]
                continue
            compile_s[name] = round(time.perf_counter() - start, 2)
        measures = {name: (lambda m=model, n=name: fit_step_seconds(keras, m, x, y, BATCH, steps, callbacks[n]))
                    for name, model in models.items()}
        samples = alternate(measures, rounds)
    return {
        "backend": backend,
        "versions": {"keras": keras.__version__, backend: importlib.metadata.version(BACKEND_PACKAGES[backend]),
                     "kopt": kopt.__version__},
        "threads": _threads(backend),
        "train_step": summarize(samples, "float"),
        "warmup_s": compile_s,
        "errors": errors,
        "rounds": rounds,
        "steps_per_round": steps,
        "load_average_end": load_average(),
    }


def _threads(backend: str) -> int | None:
    if backend == "torch":
        import torch

        return torch.get_num_threads()
    return os.cpu_count()


# ------------------------------------------------------------------ all backends
def run_all(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "model": "Conv2D+BN+ReLU, DepthwiseConv2D+BN+ReLU, 1x1 Conv2D+BN+ReLU, Dense; 32x32x3",
        "batch": BATCH,
        "environment": {**environment(), "cpu": cpu_model(), "load_average_start": load_average()},
        "targets": table.TARGETS,
        "backends": {},
    }
    results["side_by_side"] = args.parallel
    with tempfile.TemporaryDirectory() as directory:
        running = {}
        for backend in args.backends:
            print(f"[backends] {backend}", flush=True)
            out = Path(directory) / f"{backend}.json"
            jit = not args.no_jit and backend in args.jit_backends
            keras_backend, extra_env = table.VARIANT_RUNS.get(backend, (backend, {}))
            command = [sys.executable, __file__, "--backend", keras_backend, "--rounds", str(args.rounds),
                       "--steps", str(args.steps), "--out", str(out)] + ([] if jit else ["--no-jit"])
            env = {**os.environ, "KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
                   **extra_env}
            running[backend] = (subprocess.Popen(command, env=env), out, jit)
            if not args.parallel:
                running[backend][0].wait()
        for backend, (proc, out, jit) in running.items():
            code = proc.wait()
            if code != 0 or not out.exists():
                results["backends"][backend] = {"error": f"exit code {code}"}
                continue
            results["backends"][backend] = json.loads(out.read_text())
            if not jit:
                results["backends"][backend]["errors"]["float_jit"] = "not run (--jit-backends / --no-jit)"
    results["environment"]["load_average_end"] = load_average()
    results["misses"] = table.verdicts(results["backends"])
    return results


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    versions = {}
    for result in results["backends"].values():
        versions.update(result.get("versions", {}))
    rounds = next((r.get("rounds") for r in results["backends"].values() if r.get("rounds")), None)
    steps = next((r.get("steps_per_round") for r in results["backends"].values() if r.get("steps_per_round")), None)
    lines = [
        "# kopt's training-step overhead on every backend (benchmarks/backends.py)",
        "",
        f"Measured {env['date_utc']} UTC on {env['cpu']} ({env['machine']}, load average "
        f"{env.get('load_average_start')} at the start, {env.get('load_average_end')} at the end); "
        + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) + ".",
        "",
        f"Model: {results['model']}, batch {results['batch']}. Float step: median batch time with Keras' default "
        "compile setting (TensorFlow: graph, no XLA on CPU; JAX: jit; PyTorch: eager) and with `jit_compile=True` "
        "(XLA; PyTorch: `torch.compile`). Overheads: variant step / float step of the same backend (default "
        f"setting), median of {rounds} alternated rounds of {steps} batches, in brackets the middle half of the "
        "per-round ratios. \"float again\" is a control: a second copy of the float model timed as a variant, whose "
        "distance from 1 is the noise this run's ratios carry."
        + (" The three backends ran side by side (each process alternates its own variants)."
           if results.get("side_by_side") else ""),
        *[f"{table.BACKEND_LABELS[name]}: the {table.BACKEND_LABELS[backend]} run in a process started with "
          + " ".join(f"`{k}={v}`" for k, v in settings.items()) + " (eager ops allocate a fresh buffer each; these "
          "settings stop glibc from returning freed activation-sized blocks to the system, so they are not "
          "page-faulted in again on every step)."
          for name, (backend, settings) in table.VARIANT_RUNS.items() if name in results["backends"]],
        "",
        table.backend_table(results["backends"]),
        "",
        "## Targets missed (PyTorch: issue 25; TensorFlow, JAX: the issue's table)",
        "",
    ]
    lines += [f"- {m}" for m in results["misses"]] or ["- none"]
    errors = {f"{b} {k}": v for b, r in results["backends"].items() for k, v in r.get("errors", {}).items()}
    if errors:
        lines += ["", "Not measured: " + "; ".join(f"{k}: {v.splitlines()[0][:120]}" for k, v in errors.items())]
    return "\n".join(lines)


# ------------------------------------------------------------------ MobileNetV2 QAT on TensorFlow
def run_mobilenet(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import _compare_setup as setup
    import keras
    import numpy as np

    import kopt

    rng = np.random.default_rng(SEED)
    count = BATCH * (args.steps + 4)
    x = rng.uniform(-1, 1, (count, 96, 96, 3)).astype("float32")
    y = rng.integers(0, 10, count)
    keras.utils.set_random_seed(SEED)
    base = setup.mobilenet_v2(keras)
    models = {"float": compiled(keras, kopt.graph.map_layers(base, lambda layer: None))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models["qat"] = compiled(keras, kopt.prepare(base, "qat", stage="quantize", seed=SEED, compile=False))
        models["qat"].fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # ranges from data, not their init
        for model in models.values():
            fit_step_seconds(keras, model, x, y, BATCH, 3)
    samples: dict[str, list[float]] = {name: [] for name in models}
    index = 0
    while index < args.max_rounds:
        for name in round_robin_order(list(models), index):
            samples[name].append(float(np.median(fit_step_seconds(keras, models[name], x, y, BATCH, args.steps))))
        index += 1
        if table.enough_rounds(samples["qat"], samples["float"], args.tolerance, args.rounds):
            break
    summary = summarize(samples, "float")
    result: dict[str, Any] = {
        "model": "MobileNetV2 alpha 0.35, 96x96, 10 classes, random weights",
        "batch": BATCH,
        "environment": {**environment(), "cpu": cpu_model()},
        "versions": {"keras": keras.__version__, "tensorflow": importlib.metadata.version("tensorflow"),
                     "kopt": kopt.__version__},
        "rounds": index,
        "steps_per_round": args.steps,
        "tolerance": args.tolerance,
        "kopt": summary,
        "kopt_half_spread": table.half_spread(summary["qat"]["ratio_q1"], summary["qat"]["ratio_q3"]),
        "target": 1.20,
    }
    result["tfmot"] = run_tfmot_mobilenet(args) if args.tfmot else None
    result["environment"]["load_average_end"] = load_average()
    return result


def run_tfmot_mobilenet(args: argparse.Namespace) -> dict[str, Any]:
    """TFMOT's MobileNetV2 QAT ratio from ``tfmot_side.py`` (same batch, rounds, steps) in its venv."""
    python = HERE / ".tfmot-venv" / "bin" / "python"
    if not python.exists():
        return {"error": "benchmarks/.tfmot-venv is missing: run `python benchmarks/compare.py --tfmot` once"}
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "tfmot.json"
        command = [str(python), str(HERE / "tfmot_side.py"), "--out", str(out), "--work", directory, "--models",
                   "mobilenetv2", "--mobilenet-variants", "qat", "--timing-batch", str(BATCH), "--timing-rounds",
                   str(args.tfmot_rounds), "--timing-steps", str(args.steps)]
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("KERAS_BACKEND", None)
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(command, env=env)
        if proc.returncode != 0 or not out.exists():
            return {"error": f"tfmot_side.py failed with exit code {proc.returncode}"}
        tfmot = json.loads(out.read_text())
    steps = tfmot["models"]["mobilenetv2"]["train_step"]
    return {"versions": tfmot.get("versions"), "train_step": steps}


def mobilenet_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    qat = result["kopt"]["qat"]
    rows = [["kopt", f"{1e3 * result['kopt']['float']['median_s']:.0f} ms", f"{1e3 * qat['median_s']:.0f} ms",
             f"{qat['ratio']:.3f}", f"{qat['ratio_q1']:.3f}–{qat['ratio_q3']:.3f} (±{result['kopt_half_spread']:.3f})",
             result["rounds"]]]
    tfmot = result.get("tfmot")
    if tfmot and "train_step" in tfmot:
        t_float, t_qat = tfmot["train_step"]["float"], tfmot["train_step"]["qat"]
        rows.append([f"TFMOT {tfmot['versions'].get('tfmot')}", f"{1e3 * t_float['median_s']:.0f} ms",
                     f"{1e3 * t_qat['median_s']:.0f} ms", f"{t_qat['ratio']:.3f}",
                     f"{t_qat['ratio_q1']:.3f}–{t_qat['ratio_q3']:.3f} "
                     f"(±{table.half_spread(t_qat['ratio_q1'], t_qat['ratio_q3']):.3f})",
                     len(t_qat.get("rounds_s", []))])
    lines = [
        "# MobileNetV2 QAT training step on TensorFlow (benchmarks/backends.py --mobilenet)",
        "",
        f"Measured {env['date_utc']} UTC on {env['cpu']} ({env['machine']}; 1-min load "
        f"{env.get('load_average_1min')} at the start, {env.get('load_average_end')} at the end); kopt "
        f"{result['versions']['kopt']}, Keras {result['versions']['keras']}, TensorFlow {result['versions']['tensorflow']}.",
        "",
        f"{result['model']}, batch {result['batch']}; QAT step / float step, median of paired per-round ratios "
        f"({result['steps_per_round']} batches a round; kopt's rounds added until the half spread was within "
        f"±{result['tolerance']}). Target ≤ {result['target']}×.",
        "",
        markdown_table(["side", "float step", "QAT step", "QAT / float", "middle half of rounds", "rounds"], rows),
    ]
    if tfmot and "error" in tfmot:
        lines += ["", f"TFMOT: {tfmot['error']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=table.KERAS_BACKENDS)
    parser.add_argument("--all-backends", action="store_true")
    parser.add_argument("--backends", nargs="*", default=list(table.BACKENDS), choices=table.BACKENDS,
                        help="with --all-backends: which ones")
    parser.add_argument("--mobilenet", action="store_true")
    parser.add_argument("--tfmot", action="store_true", help="with --mobilenet: TFMOT's QAT ratio beside kopt's")
    parser.add_argument("--rounds", type=int, default=25, help="rounds (--mobilenet: at least this many)")
    parser.add_argument("--max-rounds", type=int, default=60, help="--mobilenet: at most this many rounds")
    parser.add_argument("--tfmot-rounds", type=int, default=25)
    parser.add_argument("--tolerance", type=float, default=0.05, help="--mobilenet: wanted half spread of the QAT ratio")
    parser.add_argument("--steps", type=int, default=10, help="batches per round")
    parser.add_argument("--no-jit", action="store_true", help="skip the jit_compile=True float step")
    parser.add_argument("--jit-backends", nargs="*", default=list(table.KERAS_BACKENDS),
                        choices=table.BACKENDS,
                        help="with --all-backends: where to time the jit_compile=True float step")
    parser.add_argument("--parallel", action="store_true",
                        help="with --all-backends: run the backends side by side (each its own paired rounds)")
    parser.add_argument("--out", help="--backend: write the result JSON here")
    args = parser.parse_args()
    if args.mobilenet:
        result = run_mobilenet(args)
        write_json("mobilenetv2_qat", result)
        text = mobilenet_markdown(result)
        print(text)
        print(f"wrote {write_markdown('mobilenetv2_qat', text)}")
    elif args.all_backends:
        results = run_all(args)
        write_json("backends", results)
        text = markdown(results)
        print(text)
        print(f"wrote {write_markdown('backends', text)}")
    elif args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
        result = run_backend(args.backend, args.rounds, args.steps, jit=not args.no_jit)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(table.backend_table({args.backend: result}))
    else:
        parser.error("give --backend NAME, --all-backends or --mobilenet")


if __name__ == "__main__":
    main()
