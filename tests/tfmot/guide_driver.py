"""Runs one TFMOT guide notebook with ``run_notebook.py``'s edits, then measures what it built.

Usage: guide_driver.py RUNNER NOTEBOOK. Executes the cells exactly as ``run_notebook.py`` does
(its own functions), then prints one JSON line ``MEASURED {...}`` with the structure of the
models the notebook left in its namespace: kernel sparsity, distinct kernel values, the
dtypes of the TFLite tensors. Exit 1 (with the traceback) when a cell fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import traceback

import numpy as np


def load_runner(path: str):
    spec = importlib.util.spec_from_file_location("run_notebook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernels(model) -> dict[str, np.ndarray]:
    """Kernel each conv/dense layer computes with, by layer name (wrappers read through)."""
    import keras

    from kopt.quantization import QuantizeWrapper

    out = {}
    for layer in model.layers:
        if isinstance(layer, QuantizeWrapper):
            for variable, value in layer.transformed_weights(training=False):
                if variable.name == "kernel":
                    out[layer.layer.name] = keras.ops.convert_to_numpy(value)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            out[layer.name] = keras.ops.convert_to_numpy(layer.kernel)
    return out


def tflite_tensors(content: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    details = interpreter.get_tensor_details()
    result = {"ops": [], "weights": []}
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        data_in, weight = (details[i] for i in op["inputs"][:2])
        values = interpreter.get_tensor(weight["index"])
        result["ops"].append({"op": op["op_name"], "input": str(np.dtype(data_in["dtype"])),
                              "weight": str(np.dtype(weight["dtype"]))})
        per_channel = max(len(np.unique(channel)) for channel in values)  # TFLite weights are [out, ...]
        result["weights"].append({"sparsity": float(np.mean(values == 0)), "unique": len(np.unique(values)),
                                  "unique_per_channel": int(per_channel)})
    return result


def measure(namespace: dict) -> dict:
    measured = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if hasattr(value, "layers") and hasattr(value, "predict"):
            measured[name] = {
                "type": type(value).__name__,
                "kernels": {k: {"sparsity": float(np.mean(v == 0)), "unique": len(np.unique(v))}
                            for k, v in kernels(value).items()},
            }
        elif isinstance(value, (bool, int, float, np.integer, np.floating)):
            measured[name] = {"type": "number", "value": float(value)}
        elif isinstance(value, bytes) and value[4:8] == b"TFL3":
            measured[name] = {"type": "tflite", **tflite_tensors(value)}
    return measured


def main() -> int:
    runner_path, notebook = sys.argv[1], sys.argv[2]
    runner = load_runner(runner_path)
    with open(notebook, encoding="utf-8") as f:
        cells = runner.edited_cells(json.load(f), "kopt.tfmot", "keras")
    runner.install_offline_datasets("keras")
    os.chdir(tempfile.mkdtemp(prefix="guide-"))
    namespace: dict = {"__name__": "__main__"}
    for index, source in enumerate(cells):
        try:
            exec(compile(source, f"<{os.path.basename(notebook)} cell {index}>", "exec"), namespace)  # noqa: S102
        except Exception:  # noqa: BLE001  (any failing cell is reported, as run_notebook.py does)
            print(f"FAILED cell {index}\n{source}")
            traceback.print_exc(file=sys.stdout)
            return 1
    print("MEASURED " + json.dumps(measure(namespace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
