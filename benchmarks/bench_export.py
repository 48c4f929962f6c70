"""kopt.export speed, against baselines measured in the same run.

* reading a .tflite: kopt's view (``load``), ``check_edgetpu`` and ``inspect`` against the bare
  schema decode they build on (``flatbuffer_utils.read_model_from_bytearray``);
* ``run``: kopt's per-sample loop (with int8 I/O quantization) against a bare interpreter loop;
* lowering a small CNN in this process against lowering it in a TensorFlow-backend subprocess
  (the JAX/PyTorch path): the price of the process.

Run: ``python benchmarks/bench_export.py`` (TensorFlow backend). Writes benchmarks/results/bench_export.json.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _harness import best_of, timed, write_json  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402
from keras import layers  # noqa: E402

from kopt.export import check_edgetpu, inspect, run, to_tflite  # noqa: E402
from kopt.export.flatbuffer import load  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    calibration = rng.uniform(-1, 1, (16, 96, 96, 3)).astype("float32")
    lower_mobilenet, tflite = timed(lambda: to_tflite(mobilenet, representative_data=calibration))

    results = {"tflite_bytes": len(tflite), "lower_mobilenet_v2_s": lower_mobilenet}
    decode = best_of(lambda: flatbuffer_utils.read_model_from_bytearray(bytearray(tflite)))
    results["decode_baseline_s"] = decode
    for name, fn in (("load", lambda: load(tflite)), ("check_edgetpu", lambda: check_edgetpu(tflite)),
                     ("inspect", lambda: inspect(tflite))):
        seconds = best_of(fn)
        results[f"{name}_s"] = seconds
        results[f"{name}_vs_decode"] = seconds / decode

    x = rng.uniform(-1, 1, (32, 96, 96, 3)).astype("float32")

    def bare_loop():
        interpreter = Interpreter(model_content=tflite)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        scale, zero_point = detail["quantization"]
        out = interpreter.get_output_details()[0]["index"]
        for i in range(len(x)):
            q = np.clip(np.rint(x[i : i + 1] / scale) + zero_point, -128, 127).astype(np.int8)
            interpreter.set_tensor(detail["index"], q)
            interpreter.invoke()
            interpreter.get_tensor(out)

    bare = best_of(bare_loop, repeat=3)
    ours = best_of(lambda: run(tflite, x), repeat=3)
    results.update({"run_bare_s": bare, "run_s": ours, "run_vs_bare": ours / bare})

    inp = keras.Input((16, 16, 3))
    small = keras.Model(inp, layers.Dense(4)(layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3)(inp))))
    data = rng.uniform(-1, 1, (16, 16, 16, 3)).astype("float32")
    in_process = best_of(lambda: to_tflite(small, representative_data=data), repeat=2)
    subprocess = best_of(lambda: to_tflite(small, representative_data=data, isolate=True), repeat=2)
    results.update(
        {"lower_small_in_process_s": in_process, "lower_small_subprocess_s": subprocess,
         "subprocess_vs_in_process": subprocess / in_process}
    )

    for key, value in results.items():
        print(f"{key:<28} {value:.4g}" if isinstance(value, float) else f"{key:<28} {value}")
    write_json("bench_export", results)


if __name__ == "__main__":
    main()
