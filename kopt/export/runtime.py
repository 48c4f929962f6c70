"""Run a ``.tflite`` on NumPy data with the LiteRT interpreter, quantizing I/O as the model asks.

Used to measure what the deployed int8 model really computes (accuracy, parity with Keras).
Inputs are fed one batch-1 sample at a time (the Edge TPU shape); float inputs of an int8-I/O
model are quantized with the input tensor's scale and zero point exactly as LiteRT's default
QUANTIZE kernel does (float32 division, round half to even; only the reference kernel rounds
half away from zero), so an int8-I/O model gives the same answers as its float-I/O twin.
Integer outputs are dequantized back to float.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from kopt.core.errors import InvalidArgumentError
from kopt.export.flatbuffer import TFLiteModel, TFLiteSource, load
from kopt.metrics import top1_accuracy


def run(
    tflite: TFLiteSource,
    x: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray],
    *,
    dequantize: bool = True,
    num_threads: int | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Outputs of the model on the batch ``x`` (one array per model output; one array if single).

    ``x`` is an array for a single-input model, a list of arrays in signature order or a dict
    keyed by signature input name otherwise. Arrays already in the input tensor's integer
    dtype are fed unchanged.
    """
    model = load(tflite)
    input_names, input_indices, output_indices = _io(model)
    arrays = _arrange(x, input_names)
    count = len(arrays[0])
    if any(len(a) != count for a in arrays):
        raise InvalidArgumentError(f"inputs have different batch sizes: {[len(a) for a in arrays]}")

    interpreter = interpreter_for(model.raw, num_threads=num_threads)
    in_details = {d["index"]: d for d in interpreter.get_input_details()}
    out_details = {d["index"]: d for d in interpreter.get_output_details()}
    step = max(1, int(in_details[input_indices[0]]["shape"][0])) if in_details[input_indices[0]]["shape"].size else 1
    for name, array, index in zip(input_names, arrays, input_indices):
        expected = tuple(int(d) for d in in_details[index].get("shape_signature", in_details[index]["shape"])[1:])
        sample = tuple(array.shape[1:])
        if len(sample) != len(expected) or any(e not in (-1, s) for s, e in zip(sample, expected)):
            raise InvalidArgumentError(
                f"evaluate/run input {name!r}: samples of shape {sample} do not fit the model's input shape {expected} "
                "(-1: any size)."
            )

    collected: list[list[np.ndarray]] = [[] for _ in output_indices]
    for start in range(0, count, step):
        for array, index in zip(arrays, input_indices):
            chunk = array[start : start + step]
            if len(chunk) < step:  # static batch > 1: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            interpreter.set_tensor(index, _to_input(chunk, in_details[index]))
        interpreter.invoke()
        for k, index in enumerate(output_indices):
            value = interpreter.get_tensor(index)
            if dequantize:
                value = _from_output(value, out_details[index])
            collected[k].append(value[: min(step, count - start)])
    outputs = [np.concatenate(parts) if parts else np.zeros((0,)) for parts in collected]
    return outputs[0] if len(outputs) == 1 else outputs


def interpreter_for(tflite: bytes, *, num_threads: int | None = None):
    """A LiteRT interpreter with tensors allocated. XNNPACK (the default delegate) refuses some
    valid files, e.g. sparse int8 FULLY_CONNECTED weights: those run on LiteRT's builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=tflite, num_threads=num_threads)
    try:
        interpreter.allocate_tensors()
    except RuntimeError as error:
        if "delegate" not in str(error).lower():
            raise
        interpreter = Interpreter(
            model_content=tflite,
            num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    return interpreter


def evaluate(tflite: TFLiteSource, x: Any, y: np.ndarray, *, num_threads: int | None = None) -> float:
    """Top-1 accuracy of the model's (first) output on ``x`` against labels ``y`` (ints or one-hot).

    ``x`` and ``y`` are checked first (:func:`kopt.core.data.check_arrays`): one finite label per sample.
    """
    from kopt.core.data import check_arrays

    check_arrays(x, y, argument="evaluate")
    predictions = run(tflite, x, num_threads=num_threads)
    if isinstance(predictions, list):
        predictions = predictions[0]
    return top1_accuracy(predictions, y)


def _io(model: TFLiteModel) -> tuple[list[str], list[int], list[int]]:
    """Input names, input and output tensor indices: from the signature if there is one."""
    if model.signatures:
        sig = model.signatures[0]
        return [n for n, _ in sig.inputs], [i for _, i in sig.inputs], [i for _, i in _in_model_order(sig.outputs)]
    sg = model.main
    return [sg.tensors[i].name for i in sg.inputs], list(sg.inputs), list(sg.outputs)


def _in_model_order(outputs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Signature outputs in the Keras model's order. The converter names them ``output_0`` ...
    ``output_N`` and the signature lists them sorted as text, so from 11 outputs on ``output_10``
    would come before ``output_2``: sort by the number instead."""
    numbers = [re.fullmatch(r"output_(\d+)", name) for name, _ in outputs]
    if not all(numbers):
        return list(outputs)
    return [output for _, output in sorted(zip((int(n.group(1)) for n in numbers), outputs))]


def _arrange(x: Any, names: list[str]) -> list[np.ndarray]:
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing:
            raise InvalidArgumentError(f"inputs {missing} are missing; the model's inputs are {names}")
        return [np.asarray(x[n]) for n in names]
    if isinstance(x, (list, tuple)):
        if len(x) != len(names):
            raise InvalidArgumentError(f"got {len(x)} input arrays for a model with inputs {names}")
        return [np.asarray(a) for a in x]
    if len(names) != 1:
        raise InvalidArgumentError(f"the model has inputs {names}: pass a list or a dict of arrays")
    return [np.asarray(x)]


def _to_input(values: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if values.dtype == dtype:
        return values
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        rounded = np.rint(values.astype(np.float32) / np.float32(scale)).astype(np.int64) + zero_point
        info = np.iinfo(dtype)
        return np.clip(rounded, info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _from_output(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return values
