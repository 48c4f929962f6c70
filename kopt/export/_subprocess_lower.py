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
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from typing import Any

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
        env = dict(os.environ)
        env["KERAS_BACKEND"] = "tensorflow"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p and os.path.isdir(p))
        process = subprocess.run(
            [sys.executable, "-m", "kopt.export._subprocess_lower", tmp],
            env=env,
            capture_output=True,
            text=True,
        )
        result = os.path.join(tmp, "model.tflite")
        if os.path.exists(result) and process.returncode == 0:
            with open(result, "rb") as handle:
                return handle.read()
        error_file = os.path.join(tmp, "error.json")
        if os.path.exists(error_file):
            with open(error_file) as handle:
                raise _rebuild_error(json.load(handle))
        tail = "\n".join(process.stderr.strip().splitlines()[-15:])
        raise ConversionError(
            f"the TensorFlow-backend converter process exited with code {process.returncode} "
            f"(a negative code is a signal: -11 is a crash inside the converter). Its last output:\n{tail}"
        )


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
    """Entry point of the converting process (TensorFlow backend)."""
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
        sys.exit(1)


def _requested_modules(workdir: str) -> list[str]:
    try:
        with open(os.path.join(workdir, "request.json")) as handle:
            return json.load(handle)["modules"]
    except (OSError, ValueError, KeyError):
        return []


if __name__ == "__main__":
    _child(sys.argv[1])
