"""The ``kopt`` command line: optimize a saved model, inspect a ``.tflite``, show a policy's plan.

Exit codes: 0 success; 1 the job ran and failed (training or lowering failed, or the Edge TPU
target is not fully mapped); 2 bad usage or input (unknown option, missing, malformed or truncated
file, invalid policy, data that kopt's validation refuses, an ``--out`` that cannot be written).
Everything that can be checked is checked before any training starts. Errors print one line
(plus a hint) without a traceback unless ``--verbose`` is given.

Fast and quiet start: Keras and TensorFlow load only once a command needs them (``--help``,
``--version`` and usage errors answer at once), after the backend log levels are set, so no
INFO lines from TensorFlow, absl, the converter or XNNPACK show unless ``--verbose``.

Models load with ``keras.saving.load_model`` in safe mode; policy files are JSON data and
data files are loaded with ``allow_pickle=False``: nothing from a file is ever executed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# kopt.policy.presets.PRESET_NAMES, repeated so that the parser needs no Keras (a test keeps them equal).
PRESET_NAMES = ("prune", "prune_2x4", "cluster", "qat", "ptq", "pqat", "cqat", "pcqat", "edgetpu", "micro")
MESSAGE_LIMIT = 400  # characters per printed error line: configs and long lists are cut

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
    opt.add_argument("--quiet", action="store_true", help="print nothing but errors (the results are in --out)")
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
    pol.add_argument("model", metavar="MODEL.keras", nargs="?", help="required unless --schema")
    pol.add_argument("--policy", metavar="NAME|FILE.json", help=f"a preset ({presets}) or a policy JSON file")
    pol.add_argument("--schema", action="store_true",
                     help="print the JSON Schema of policy files (kopt/policy/policy.schema.json) and exit")
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

    if spec == "auto":
        return "auto"
    if spec in PRESET_NAMES:
        return Policy.preset(spec)
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        return Policy.load(path)  # PolicyError when missing or malformed
    raise UsageError(f"--policy {spec!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor a JSON file.")


def check_model_file(spec: str) -> None:
    """A ``.keras`` file that exists and is a zip archive: checked before Keras loads (seconds saved on bad input)."""
    import zipfile

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"no model file at {spec!r}.")
    if path.suffix != ".keras":
        raise UsageError(f"{spec!r} is not a .keras file (save the model with model.save('model.keras')).")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{spec!r} is not a valid .keras file: it is not a zip archive (truncated, or another format). "
                         "Save the model again with model.save('model.keras').")


def load_model(spec: str) -> Any:
    check_model_file(spec)
    load_kopt()
    import keras

    try:
        return keras.saving.load_model(Path(spec))  # safe mode: no code from the file runs
    except Exception as error:  # noqa: BLE001 - any loading failure is bad input
        reason = shorten(f"{type(error).__name__}: {error}", 200)
        raise UsageError(f"{spec!r} is not a valid .keras file: Keras cannot load it ({reason}).") from error


def load_data(spec: str) -> dict[str, Any]:
    import numpy as np

    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"no data file at {spec!r}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except Exception as error:  # noqa: BLE001 - truncated archives raise BadZipFile, EOFError, ValueError...
        raise UsageError(f"cannot read {spec!r} as a .npz archive of arrays ({type(error).__name__}: "
                         f"{shorten(str(error), 200)}); save it again with numpy.savez.") from error

    missing = [key for key in ("x_train", "y_train") if key not in data]
    if missing:
        raise UsageError(f"{spec!r} lacks {missing}; it has {sorted(data)}. {DATA_KEYS_HELP}")
    if ("x_val" in data) != ("y_val" in data):
        raise UsageError(f"{spec!r} has only one of x_val / y_val; give both or neither.")
    for x_key, y_key in (("x_train", "y_train"), ("x_val", "y_val")):
        if x_key in data and len(data[x_key]) != len(data[y_key]):
            raise UsageError(f"{spec!r}: {x_key} has {len(data[x_key])} samples but {y_key} has {len(data[y_key])}.")
    return data


def check_out(spec: str) -> None:
    """``--out`` can take the results: not an existing file, and a directory kopt can write in.

    Probed by creating it (and a temporary file in it) and removing what was created, so a bad
    ``--out`` is found in a millisecond, not after the whole job.
    """
    import tempfile

    out = Path(spec)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {spec!r} is an existing file; give a directory (it is created if missing).")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"--out {spec!r} cannot be created: {str(existing)!r} is a file, not a directory.")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UsageError(f"--out {spec!r} is not writable ({error.strerror or error}); choose another directory.") from error
    finally:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break


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
    check_out(args.out)
    if args.epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {args.epochs}.")
    _positive("--batch-size", args.batch_size)
    check_model_file(args.model)
    data = load_data(args.data)
    load_kopt()
    from kopt.api import optimize
    from kopt.core.data import check_data, check_inputs
    from kopt.core.errors import InvalidArgumentError, UnsupportedModelError
    from kopt.pipeline.stages import check_plan
    from kopt.pipeline.training import CompileSettings
    from kopt.policy import PolicyError

    policy = load_policy(args.policy)
    budget = load_budget(args)
    model = load_model(args.model)
    overrides = compile_overrides(args, model)
    # Everything that can be checked before training is bad input (exit 2).
    if budget is None:
        check_plan(policy.resolve(model))
    else:
        from kopt.search.walk import check_classifier

        check_classifier(model)
    settings = CompileSettings.from_model(model, **overrides)
    validation = (data["x_val"], data["y_val"]) if "x_val" in data else None
    check_data(model, (data["x_train"], data["y_train"]), argument="x_train/y_train", loss=settings.loss)
    check_data(model, validation, argument="x_val/y_val", loss=settings.loss)
    if "x_calibration" in data:
        check_inputs(model, data["x_calibration"], argument="x_calibration")

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
            callbacks=[] if args.quiet else [one_line_per_epoch()],
            **overrides,
        )
        paths = result.save(args.out)
    except (InvalidArgumentError, UnsupportedModelError, PolicyError):
        raise  # refused before any work (kopt validates first): bad input, exit 2
    except Exception as error:  # noqa: BLE001 - the job failed: exit 1
        raise JobFailed(f"{type(error).__name__}: {error}") from error
    if not args.quiet:
        if result.search is not None:  # a named policy's stage lines were printed as each stage ended
            print(str(result.report))
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

    if modules:
        load_kopt()  # a plugin may import any kopt module: load the package in its usual order first
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
    load_kopt()
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
    if args.schema:
        print(schema_text(), end="")
        return EXIT_OK
    if args.model is None or args.policy is None:
        raise UsageError("kopt policy needs MODEL.keras and --policy NAME|FILE.json (or --schema alone).")
    check_model_file(args.model)
    load_kopt()
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


def one_line_per_epoch() -> Any:
    """Keras' progress logger printing one line per epoch: ``epoch 1/2: 10/10 - 3s - loss: ...``.

    With ``verbose=2`` Keras prints an ``Epoch 1/2`` line before each epoch's line; given this logger
    among the callbacks, ``fit`` uses it instead of its own.
    """
    import keras

    class OneLinePerEpoch(keras.callbacks.ProgbarLogger):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            epochs, self.epochs = self.epochs, 1  # Keras writes "Epoch i/n" only when n > 1
            try:
                super().on_epoch_begin(epoch, logs)
            finally:
                self.epochs = epochs

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            sys.stdout.write(f"epoch {epoch + 1}/{self.epochs}: ")
            super().on_epoch_end(epoch, logs)

    return OneLinePerEpoch()


def schema_text() -> str:
    """The JSON Schema of policy files, shipped in the package (read without importing Keras)."""
    from importlib.resources import files

    return files("kopt").joinpath("policy", "policy.schema.json").read_text(encoding="utf-8")


COMMANDS = {"optimize": cmd_optimize, "inspect": cmd_inspect, "policy": cmd_policy}


# ------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad usage
    verbose = bool(getattr(args, "verbose", False))
    if args.version:
        from kopt import __version__

        print(f"kopt {__version__}")
        return EXIT_OK
    quiet_backends(verbose)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with native_stderr_silenced(not verbose):
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
        return code
    print(f"kopt: error: {shorten(prefix + str(error))}", file=sys.stderr)
    print("(run with --verbose for the full traceback)", file=sys.stderr)
    return code


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of at most ``limit`` characters: the first line of ``text`` (TensorFlow stacks follow it)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    more = len(lines) > 1
    if len(first) > limit:
        first, more = first[: limit - 1].rstrip() + "…", False
    return first + (" […]" if more else "")


def load_kopt() -> None:
    """Import the whole package (registers kopt's layer classes with Keras) once a command needs it."""
    import kopt

    kopt._load()


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to /dev/null; Python's ``sys.stderr`` still shows.

    TensorFlow's absl lines ("All log messages before absl::InitializeLog()", CUDA stubs) and
    LiteRT's "Created TensorFlow Lite XNNPACK delegate" ignore every log level. kopt's own
    warnings and errors go through ``sys.stderr``, which is pointed at the real stream.
    """
    try:
        fd = sys.stderr.fileno() if enabled else -1
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        fd = -1
    if fd < 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, fd)
        os.close(saved)


def quiet_backends(verbose: bool) -> None:
    """Log levels set before TensorFlow loads: no INFO/WARNING lines from TF, absl, the converter or XNNPACK.

    The converter subprocess inherits the environment, so it is quiet too. ``--verbose`` leaves them as they are.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")  # C++ absl logging (used by LiteRT / XNNPACK)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import logging
    import warnings

    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*retracing.*")


if __name__ == "__main__":
    sys.exit(main())
