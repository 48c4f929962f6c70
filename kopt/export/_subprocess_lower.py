"""Lower a model in a fresh Python process that runs the TensorFlow backend.

Why a process: the Keras backend is fixed when Keras is imported, and only the TensorFlow
backend exports the SavedModel the TFLite converter reads (and only it emits the FakeQuant
ops that carry QAT ranges). A ``.keras`` file holds no backend-specific graph, so a model
built or trained under JAX or PyTorch loads unchanged under TensorFlow.

Protocol, all in one temporary directory: the parent writes ``model.keras``,
``calibration.npz`` (the already materialized representative samples, one array per input)
and ``request.json`` (converter options, modules defining the model's layer classes); the
child writes ``model.tflite`` or ``error.json``, which the parent turns back into the same
exception class. The child runs ``sys.executable`` (same interpreter and packages) with the
parent's ``sys.path``, so kopt and user modules that define custom layers import there too.

The child is kept for the next conversion (:class:`_Worker`): starting Python and importing
TensorFlow costs ~10 s of CPU, more than converting a small model, and an automatic search or a
test suite converts many. It still isolates: a converter crash ends the worker, the parent reports
it as before, and the next conversion starts a new one. The worker is replaced every
:data:`JOBS_PER_WORKER` conversions (TensorFlow keeps some memory per conversion) and ends when the
parent does (its stdin closes).
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from typing import IO, Any

import numpy as np

_BUILTIN_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "RuntimeError": RuntimeError}


def lower_in_subprocess(model: Any, data: list[np.ndarray] | None, options: Any) -> bytes:
    """Save ``model`` to ``.keras``, convert it under ``KERAS_BACKEND=tensorflow``, return the bytes."""
    from kopt.core.errors import ConversionError, UnsupportedLayerError

    lambdas = _lambda_layers(model)
    if lambdas:
        raise UnsupportedLayerError(
            f"Layer(s) {lambdas} are keras.layers.Lambda: a {_backend()} model is lowered through a .keras file that "
            "kopt only loads in Keras safe mode, which refuses Lambda code. Replace each Lambda with a registered "
            "custom layer (@keras.saving.register_keras_serializable), or build the model and call to_tflite "
            "under KERAS_BACKEND=tensorflow."
        )
    with tempfile.TemporaryDirectory(prefix="kopt_lower_") as tmp:
        model.save(os.path.join(tmp, "model.keras"))
        if data is not None:
            np.savez(os.path.join(tmp, "calibration.npz"), *data)
        request = {
            "options": options.to_dict(),
            "modules": _layer_modules(model),
        }
        with open(os.path.join(tmp, "request.json"), "w") as handle:
            json.dump(request, handle)
        exit_code, stderr = convert_in_worker(tmp, request["modules"])
        result = os.path.join(tmp, "model.tflite")
        if os.path.exists(result) and exit_code is None:
            with open(result, "rb") as handle:
                return handle.read()
        error_file = os.path.join(tmp, "error.json")
        if os.path.exists(error_file):
            with open(error_file) as handle:
                raise _rebuild_error(json.load(handle))
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise ConversionError(
            f"the TensorFlow-backend converter process exited with code {exit_code} "
            f"(a negative code is a signal: -11 is a crash inside the converter). Its last output:\n{tail}"
        )


#: Conversions one worker process runs before it is replaced by a fresh one.
JOBS_PER_WORKER = 32


class _Worker:
    """A TensorFlow-backend Python process converting the requests it reads from stdin, one per line."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["KERAS_BACKEND"] = "tensorflow"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(_search_path())
        self.stderr: IO[str] = tempfile.TemporaryFile("w+", prefix="kopt_lower_stderr_")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kopt.export._subprocess_lower", "--serve"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.jobs = 0
        self.module_versions: dict[str, float | None] = {}  # the user modules it imported, as they were then

    def convert(self, workdir: str) -> tuple[int | None, str]:
        """Run one request; ``(None, "")`` once it answered, ``(exit code, its stderr)`` if it died."""
        self.jobs += 1
        self.stderr.seek(0)
        self.stderr.truncate()
        try:
            self.process.stdin.write(json.dumps({"workdir": workdir, "sys_path": _search_path()}) + "\n")
            self.process.stdin.flush()
            answered = self.process.stdout.readline() == "done\n"
        except OSError:  # its stdin closed: it had died already
            answered = False
        if answered:
            return None, ""
        code = self.process.wait()
        self.stderr.seek(0)
        return code, self.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the worker's loop ends at end of input
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.stderr.close()


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def convert_in_worker(workdir: str, modules: list[str]) -> tuple[int | None, str]:
    """Convert the request in ``workdir`` in the shared worker (started, or replaced, as needed).

    ``modules`` (those defining the model's layer classes) are imported by the worker once; if one of
    their files changed since (a user edited a custom layer and reloaded it), a fresh worker imports them."""
    global _worker
    versions = {module: _file_version(module) for module in modules}
    with _worker_lock:
        if _worker is not None and (
            _worker.process.poll() is not None
            or _worker.jobs >= JOBS_PER_WORKER
            or any(_worker.module_versions.get(m, v) != v for m, v in versions.items())
        ):
            _worker.close()
            _worker = None
        if _worker is None:
            _worker = _Worker()
        _worker.module_versions.update(versions)
        exit_code, stderr = _worker.convert(workdir)
        if exit_code is not None:  # it crashed: the next conversion starts a new one
            _worker.close()
            _worker = None
        return exit_code, stderr


def stop_worker() -> None:
    """End the converter process, if one is running (it also ends with this process)."""
    global _worker
    with _worker_lock:
        if _worker is not None:
            _worker.close()
            _worker = None


atexit.register(stop_worker)


def _file_version(module: str) -> float | None:
    """When the source file of an imported module last changed (None if it has none)."""
    path = getattr(sys.modules.get(module), "__file__", None)
    try:
        return os.path.getmtime(path) if path else None
    except OSError:
        return None


def _search_path() -> list[str]:
    """This process's import path (user modules defining custom layers must import in the worker too)."""
    return [p for p in sys.path if isinstance(p, str) and p and os.path.isdir(p)]


def _layer_modules(model: Any) -> list[str]:
    """Modules defining the model's (custom) layer classes: the child imports them to register them."""
    classes = {type(model)} | {type(layer) for layer in model._flatten_layers(include_self=False, recursive=True)}
    modules = {c.__module__ for c in classes}
    return sorted(m for m in modules if m != "keras" and not m.startswith("keras."))


def _backend() -> str:
    import keras

    return {"jax": "JAX", "torch": "PyTorch"}.get(keras.backend.backend(), keras.backend.backend())


def _lambda_layers(model: Any) -> list[str]:
    """Names of the model's Lambda layers: their (Python bytecode) config cannot be loaded safely."""
    import keras

    layers = model._flatten_layers(include_self=False, recursive=True)
    return sorted(layer.name for layer in layers if isinstance(layer, keras.layers.Lambda))


def load_request_model(workdir: str) -> Any:
    """Load the ``.keras`` file the parent wrote, always in Keras safe mode (nothing from it is executed)."""
    import keras

    return keras.saving.load_model(os.path.join(workdir, "model.keras"), safe_mode=True)


def _rebuild_error(payload: dict[str, Any]) -> Exception:
    name, module, message = payload["type"], payload.get("module", ""), payload["message"]
    if module.startswith("kopt."):
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                error = cls(message, **payload.get("attributes", {}))
            except TypeError:
                error = cls(message)
            return error
    if name in _BUILTIN_ERRORS:
        return _BUILTIN_ERRORS[name](message)
    from kopt.core.errors import ConversionError

    return ConversionError(f"{name} in the converter process: {message}")


def _child(workdir: str) -> None:
    """Convert the request in ``workdir`` and exit, 1 on failure (a one-off converting process)."""
    if not _convert(workdir):
        sys.exit(1)


def _serve() -> None:
    """The worker's loop: one JSON request per stdin line, ``done`` on the protocol stream after each.

    Anything else written to stdout (Python or native code) goes to stderr, so the protocol stream
    carries only the answers."""
    import keras

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        request = json.loads(line)
        sys.path.extend(p for p in request["sys_path"] if p not in sys.path)
        _convert(request["workdir"])
        keras.backend.clear_session()
        protocol.write("done\n")


def _convert(workdir: str) -> bool:
    """Write ``model.tflite`` (True) or ``error.json`` (False) into ``workdir``."""
    try:
        from kopt.export.lowering import LoweringOptions, input_specs, lower_in_process

        with open(os.path.join(workdir, "request.json")) as handle:
            request = json.load(handle)
        for module in request["modules"]:
            if module != "__main__":
                importlib.import_module(module)
        model = load_request_model(workdir)
        calibration = os.path.join(workdir, "calibration.npz")
        data = None
        if os.path.exists(calibration):
            with np.load(calibration) as archive:
                data = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        specs = input_specs(model)
        if data is not None:
            specs = [type(s)(s.key, tuple(a.shape[1:]), s.dtype) for s, a in zip(specs, data)]
        tflite = lower_in_process(model, data, specs, LoweringOptions(**request["options"]))
        with open(os.path.join(workdir, "model.tflite"), "wb") as handle:
            handle.write(tflite)
        return True
    except Exception as error:  # noqa: BLE001 - shipped to the parent
        attributes = {k: getattr(error, k) for k in ("op", "layer", "float_ops") if hasattr(error, k)}
        payload = {
            "type": type(error).__name__,
            "module": type(error).__module__,
            "message": str(error),
            "attributes": attributes,
            "traceback": traceback.format_exc(),
        }
        if "__main__" in _requested_modules(workdir) and isinstance(error, (TypeError, ValueError)):
            payload["message"] += (
                " (the model uses layer classes defined in __main__, which the converter process cannot "
                "import: move them to an importable module)"
            )
        with open(os.path.join(workdir, "error.json"), "w") as handle:
            json.dump(payload, handle, default=str)
        return False


def _requested_modules(workdir: str) -> list[str]:
    try:
        with open(os.path.join(workdir, "request.json")) as handle:
            return json.load(handle)["modules"]
    except (OSError, ValueError, KeyError):
        return []


if __name__ == "__main__":
    _serve() if sys.argv[1] == "--serve" else _child(sys.argv[1])
