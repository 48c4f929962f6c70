"""The ``kopt`` command line: optimize a saved model, inspect a ``.tflite``, show a policy's plan.

Exit codes: 0 success; 1 the job ran and failed (training or lowering failed, or the Edge TPU
target is not fully mapped); 2 bad usage or input (unknown option, missing or malformed file,
invalid policy). Errors print one line without a traceback unless ``--verbose`` is given.

Models load with ``keras.saving.load_model`` in safe mode; policy files are JSON data and
data files are loaded with ``allow_pickle=False``: nothing from a file is ever executed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DATA_KEYS_HELP = (
    "DATA.npz (numpy.savez) holds x_train and y_train (required), x_val and y_val (optional, both or "
    "neither: validation data and the accuracy of every stage) and x_calibration (optional: inputs "
    "for post-training int8 calibration; default: the first 100 of x_train). Labels are what the "
    "model's loss expects (e.g. integer classes for sparse_categorical_crossentropy)."
)


class UsageError(Exception):
    """Bad input detected by the command line itself (exit code 2)."""


class JobFailed(Exception):
    """The job ran but did not meet its requirements (exit code 1)."""


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from kopt.policy.presets import PRESET_NAMES

    presets = ", ".join(PRESET_NAMES)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors"
    )
    common.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help="import this Python module first (repeatable), e.g. one that registers custom layers or a "
        "quantization scheme (kopt.quantization.register_scheme) that the policy names",
    )
    parser = argparse.ArgumentParser(
        prog="kopt",
        description="Prune, cluster and quantize Keras 3 models; lower them to int8 TFLite and check them for the Edge TPU.",
        epilog="Exit codes: 0 ok, 1 the job failed (e.g. not fully mapped when the policy targets the Edge TPU), "
        "2 bad usage or input. Run 'kopt COMMAND --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="store_true", help="print kopt's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    opt = commands.add_parser(
        "optimize",
        parents=[common],
        help="run a policy on a .keras model: fine-tune, lower to int8 TFLite, write a report",
        description="Run a policy's deployment path on MODEL.keras and write DIR/model.keras, DIR/model.tflite, "
        "DIR/report.json, DIR/report.md and the plots DIR/weight_density.png, DIR/size_accuracy.png.",
        epilog=DATA_KEYS_HELP,
    )
    opt.add_argument("model", metavar="MODEL.keras", help="trained Keras model (saved with model.save)")
    opt.add_argument(
        "--policy", required=True, metavar="NAME|FILE.json",
        help=f"a preset ({presets}), a policy JSON file, or auto (search for the smallest model within a budget)",
    )
    opt.add_argument("--data", required=True, metavar="DATA.npz", help="training data (keys below)")
    opt.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    opt.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per stage (default: 2)")
    opt.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    opt.add_argument("--loss", help="loss name, if the model was saved without compile settings")
    opt.add_argument("--optimizer", help="optimizer name (e.g. adam), if the model was saved without compile settings")
    opt.add_argument("--learning-rate", type=float, help="learning rate of the fine-tuning optimizer")
    opt.add_argument("--metrics", help="comma-separated metric names (e.g. accuracy)")
    opt.add_argument("--seed", type=int, help="random seed (Keras, NumPy, clustering initialisation)")
    opt.add_argument("--quiet", action="store_true", help="no training progress, only the final summary")
    auto = opt.add_argument_group("automatic search (--policy auto): the smallest int8 model within a budget")
    auto.add_argument("--max-accuracy-drop", type=float, metavar="FRACTION",
                      help="largest drop of int8 validation accuracy below the float model (default: 0.01)")
    auto.add_argument("--max-size", type=int, metavar="BYTES", help="largest zipped .tflite size")
    auto.add_argument("--target", choices=("int8", "edgetpu", "micro"),
                      help="edgetpu: only fully mapped models; micro: TFLM-compressed, runs in TFLite Micro "
                      "(default: int8)")
    auto.add_argument("--max-flash", type=int, metavar="BYTES", help="--target micro: largest raw .tflite (flash)")
    auto.add_argument("--max-arena", type=int, metavar="BYTES", help="--target micro: largest TFLM tensor arena (RAM)")
    auto.add_argument("--max-candidates", type=int, metavar="N", help="measure at most N candidates")
    auto.add_argument("--max-seconds", type=float, metavar="S", help="start no candidate after S seconds")

    ins = commands.add_parser(
        "inspect",
        parents=[common],
        help="summarize a .tflite (ops, dtypes, weights, sizes) and check it for the Edge TPU",
        description="Print the ops, tensor types, weight statistics and sizes of MODEL.tflite and the Edge TPU "
        "check (which ops the Edge TPU compiler would map, and why the others stay on the CPU).",
    )
    ins.add_argument("model", metavar="MODEL.tflite")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    ins.add_argument("--require-edgetpu", action="store_true", help="exit with 1 unless the model is fully mapped")
    ins.add_argument("--require-micro", action="store_true", help="exit with 1 unless TFLite Micro runs the model")

    pol = commands.add_parser(
        "policy",
        parents=[common],
        help="show the per-layer plan a policy resolves to on a .keras model",
        description="Resolve a policy against MODEL.keras and print, per layer, which technique applies with "
        "which settings and which rule decided it.",
    )
    pol.add_argument("model", metavar="MODEL.keras")
    pol.add_argument("--policy", required=True, metavar="NAME|FILE.json", help=f"a preset ({presets}) or a policy JSON file")
    pol.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


# ----------------------------------------------------------------- inputs
BUDGET_OPTIONS = {
    "max_accuracy_drop": "max_accuracy_drop",
    "max_size": "max_size_bytes",
    "target": "target",
    "max_candidates": "max_candidates",
    "max_seconds": "max_seconds",
    "max_flash": "max_flash_bytes",
    "max_arena": "max_arena_bytes",
}


def load_budget(args: argparse.Namespace) -> Any:
    """The ``kopt.Budget`` of ``--policy auto`` from the budget options (None for any other policy)."""
    from kopt.core.errors import InvalidArgumentError
    from kopt.search import Budget

    given = {field: getattr(args, option) for option, field in BUDGET_OPTIONS.items() if getattr(args, option) is not None}
    if args.policy != "auto":
        if given:
            options = ", ".join("--" + o.replace("_", "-") for o in BUDGET_OPTIONS if getattr(args, o) is not None)
            raise UsageError(f"{options} only apply to --policy auto (the automatic search).")
        return None
    try:
        return Budget(**given)
    except InvalidArgumentError as error:
        raise UsageError(str(error)) from error


def load_policy(spec: str) -> Any:
    from kopt.policy import Policy
    from kopt.policy.presets import PRESET_NAMES

    if spec == "auto":
        return "auto"
    if spec in PRESET_NAMES:
        return Policy.preset(spec)
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        return Policy.load(path)  # PolicyError when missing or malformed
    raise UsageError(f"--policy {spec!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a JSON file.")


def load_model(spec: str) -> Any:
    import keras

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"no model file at {spec!r}.")
    if path.suffix != ".keras":
        raise UsageError(f"{spec!r} is not a .keras file (save the model with model.save('model.keras')).")
    try:
        return keras.saving.load_model(path)  # safe mode: no code from the file runs
    except Exception as error:  # noqa: BLE001 - any loading failure is bad input
        raise UsageError(f"cannot load model {spec!r}: {error}") from error


def load_data(spec: str) -> dict[str, Any]:
    import numpy as np

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"no data file at {spec!r}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as error:
        raise UsageError(f"cannot read {spec!r} as a .npz archive of arrays: {error}") from error
    missing = [key for key in ("x_train", "y_train") if key not in data]
    if missing:
        raise UsageError(f"{spec!r} lacks {missing}; it has {sorted(data)}. {DATA_KEYS_HELP}")
    if ("x_val" in data) != ("y_val" in data):
        raise UsageError(f"{spec!r} has only one of x_val / y_val; give both or neither.")
    for x_key, y_key in (("x_train", "y_train"), ("x_val", "y_val")):
        if x_key in data and len(data[x_key]) != len(data[y_key]):
            raise UsageError(f"{spec!r}: {x_key} has {len(data[x_key])} samples but {y_key} has {len(data[y_key])}.")
    return data


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be at least 1, got {value}.")


def compile_overrides(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """loss / optimizer / metrics from the options (names only), for kopt.optimize."""
    import keras

    overrides: dict[str, Any] = {}
    if args.loss:
        overrides["loss"] = args.loss
    if args.metrics:
        overrides["metrics"] = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.learning_rate is not None and args.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be positive, got {args.learning_rate}.")
    if args.optimizer:
        config: dict[str, Any] = {"class_name": args.optimizer, "config": {}}
        if args.learning_rate is not None:
            config["config"]["learning_rate"] = args.learning_rate
        try:
            overrides["optimizer"] = keras.optimizers.get(config if args.learning_rate is not None else args.optimizer)
        except (ValueError, TypeError) as error:
            raise UsageError(f"unknown --optimizer {args.optimizer!r}: {error}") from error
    elif args.learning_rate is not None:
        current = getattr(model, "optimizer", None)
        if current is None:
            raise UsageError("--learning-rate needs --optimizer: the model was saved without compile settings.")
        overrides["optimizer"] = current.__class__.from_config({**current.get_config(), "learning_rate": args.learning_rate})
    return overrides


# --------------------------------------------------------------- commands
def cmd_optimize(args: argparse.Namespace) -> int:
    import kopt  # noqa: F401 - registers every kopt class before the model loads
    from kopt.api import optimize
    from kopt.pipeline.stages import check_plan
    from kopt.pipeline.training import CompileSettings

    if args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {args.epochs}.")
    _positive("--batch-size", args.batch_size)
    policy = load_policy(args.policy)
    budget = load_budget(args)
    model = load_model(args.model)
    data = load_data(args.data)
    overrides = compile_overrides(args, model)
    # Everything that can be checked before training is bad input (exit 2).
    if budget is None:
        check_plan(policy.resolve(model))
    else:
        from kopt.search.walk import check_classifier

        check_classifier(model)
    CompileSettings.from_model(model, **overrides)
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None

    try:
        result = optimize(
            model,
            policy,
            train_data=(data["x_train"], data["y_train"]),
            validation_data=validation,
            representative_data=data.get("x_calibration"),
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            verbose=0 if args.quiet else 2,
            budget=budget,
            **overrides,
        )
        paths = result.save(args.out)
    except Exception as error:  # noqa: BLE001 - the job failed: exit 1
        raise JobFailed(f"{type(error).__name__}: {error}") from error
    print(str(result.report))
    if result.search is not None:
        print(result.search.table())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result.search is not None and result.search.warnings:
        raise JobFailed(result.search.warnings[0])
    edgetpu = result.edgetpu
    if result.policy.target == "edgetpu" and (edgetpu is None or not edgetpu.fully_mapped):
        from kopt.pipeline.stages import edgetpu_problem

        reason = edgetpu_problem(edgetpu) if edgetpu is not None else "no int8 model was produced"
        raise JobFailed(f"policy {result.policy.name!r} targets the Edge TPU: {reason}")
    return EXIT_OK


def load_tflite(spec: str) -> Any:
    """Decode a ``.tflite`` file; a truncated or corrupted one is bad input (exit 2), never a crash."""
    from kopt.export.flatbuffer import load

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"no .tflite file at {spec!r}.")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {spec!r}: {error}") from error
    try:
        return load(raw)
    except ValueError as error:
        if "not a TFLite flatbuffer" in str(error):
            raise UsageError(f"{spec!r}: {error}") from error
        raise UsageError(_corrupted(spec, len(raw), error.__cause__ or error)) from error
    except Exception as error:  # noqa: BLE001 - the flatbuffer decoder fails in many ways on bad bytes
        raise UsageError(_corrupted(spec, len(raw), error)) from error


def _corrupted(spec: str, size: int, error: BaseException) -> str:
    return (
        f"{spec!r} ({size} bytes) is truncated or corrupted: it starts like a TFLite flatbuffer but cannot be "
        f"decoded ({type(error).__name__}: {error}). Copy the file again or re-export it with kopt.export.to_tflite."
    )


def import_plugins(modules: Sequence[str]) -> None:
    """Import the ``--plugin`` modules: the user's own code, named explicitly on the command line."""
    import importlib

    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: ./my_schemes.py is importable
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(
                f"--plugin {module!r} cannot be imported ({error}). Give a module name importable from the current "
                "directory or PYTHONPATH (e.g. my_schemes for ./my_schemes.py)."
            ) from error


def cmd_inspect(args: argparse.Namespace) -> int:
    from kopt.export import check_edgetpu, inspect

    model = load_tflite(args.model)
    try:
        summary = inspect(model)
        edgetpu = check_edgetpu(model)
    except ValueError as error:
        raise UsageError(f"{args.model!r}: {error}") from error
    except Exception as error:  # noqa: BLE001 - decoded but inconsistent (e.g. an index out of range)
        raise UsageError(_corrupted(args.model, len(model.raw), error)) from error
    micro = _micro_report(model, required=args.require_micro)
    if args.json:
        out = {"summary": summary.to_dict(), "edgetpu": edgetpu.to_dict()}
        if micro is not None:
            out["micro"] = micro.to_dict()
        print(json.dumps(out, indent=2))
    else:
        print(summary)
        print()
        print(edgetpu)
        if micro is not None:
            print()
            print(micro)
    if args.require_micro and not micro.runs:
        raise JobFailed(f"TFLite Micro cannot run the model: {micro.errors[0] if micro.errors else 'unknown error'}")
    if args.require_edgetpu and not edgetpu.fully_mapped:
        from kopt.pipeline.stages import edgetpu_problem

        raise JobFailed(edgetpu_problem(edgetpu))
    return EXIT_OK


def _micro_report(model: Any, *, required: bool) -> Any:
    """The TFLite Micro check when ``tflite-micro`` is installed (``kopt[micro]``), else None."""
    try:
        import tflite_micro  # noqa: F401
    except ImportError as error:
        if required:
            raise UsageError("--require-micro needs the tflite-micro package: pip install 'kopt[micro]'") from error
        return None
    from kopt.export import check_micro

    return check_micro(model)


def cmd_policy(args: argparse.Namespace) -> int:
    import kopt  # noqa: F401 - registers every kopt class before the model loads

    policy = load_policy(args.policy)
    if policy == "auto":
        raise UsageError("--policy auto has no fixed plan: the search chooses one. Run 'kopt optimize --policy auto'; "
                         "its report.json holds the chosen policy.")
    model = load_model(args.model)
    plan = policy.resolve(model)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(f"Policy {policy.name!r} (target {policy.target}) on model {model.name!r}:\n")
        print(plan.table())
    return EXIT_OK


COMMANDS = {"optimize": cmd_optimize, "inspect": cmd_inspect, "policy": cmd_policy}


# ------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad usage
    verbose = bool(getattr(args, "verbose", False))
    if args.version:
        from kopt import __version__

        print(f"kopt {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        import_plugins(getattr(args, "plugin", []))
        return COMMANDS[args.command](args)
    except JobFailed as error:
        return _fail(error, EXIT_FAILED, verbose)
    except (UsageError, ValueError, TypeError, OSError) as error:
        return _fail(error, EXIT_USAGE, verbose)
    except KeyboardInterrupt:
        print("kopt: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - anything else is a failed job
        return _fail(error, EXIT_FAILED, verbose, prefix=f"{type(error).__name__}: ")


def _fail(error: BaseException, code: int, verbose: bool, prefix: str = "") -> int:
    if verbose:
        traceback.print_exception(error)
    print(f"kopt: error: {prefix}{error}", file=sys.stderr)
    if not verbose:
        print("(run with --verbose for the full traceback)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
