"""Models that take images as bytes (a ``uint8``/``int8`` ``Input`` with ``Rescaling`` inside) lowered to int8.

Converted as they are, such models start with a float CAST (and a QUANTIZE after it), so no
``int8_io`` gives a fully integer file. kopt lowers an equivalent model whose byte inputs are
float32 holding the same values instead, and anchors their calibrated range to the whole byte
range (one extra calibration sample with one element at each end of it). The int8 file's input
then has scale 1: with ``int8_io="uint8"`` for a ``uint8`` input (zero point 0) the file takes
the raw bytes unchanged, as Coral's models do; with ``int8_io="int8"`` it takes ``bytes - 128``.
"""

from __future__ import annotations

import keras
import numpy as np

from kopt.core.errors import ConversionError
from kopt.export.calibration import InputSpec

BYTE_DTYPES = ("uint8", "int8")


def byte_inputs(specs: list[InputSpec]) -> list[str]:
    """Keys of the inputs that hold bytes."""
    return [s.key for s in specs if s.dtype in BYTE_DTYPES]


def with_float_inputs(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same weights) whose byte inputs are float32: nothing computes in float before the
    first QUANTIZE. Raises :class:`ConversionError` naming the model when Keras cannot clone it."""
    inputs = []
    for tensor in model.inputs:
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        inputs.append(keras.Input(
            batch_shape=tuple(tensor.shape), dtype="float32" if dtype in BYTE_DTYPES else dtype,
            name=getattr(tensor, "name", None),
        ))
    try:
        clone = keras.models.clone_model(model, input_tensors=inputs if len(inputs) > 1 else inputs[0])
        clone.set_weights(model.get_weights())
    except Exception as error:  # noqa: BLE001 - clone_model fails in many ways on unusual models
        raise ConversionError(
            f"model {model.name!r} takes bytes (uint8/int8 inputs) and kopt cannot rebuild it with float32 inputs "
            f"({type(error).__name__}: {error}); build it with a float32 Input holding the byte values instead."
        ) from error
    return clone


def anchored(data: list[np.ndarray], specs: list[InputSpec]) -> list[np.ndarray]:
    """Calibration data as float32, plus one sample whose byte inputs touch both ends of their dtype's range."""
    out = []
    for array, spec in zip(data, specs):
        values = np.asarray(array).astype(np.float32)
        extra = values[:1].copy()
        if spec.dtype in BYTE_DTYPES:
            info = np.iinfo(spec.dtype)
            flat = extra.reshape(-1)
            flat[0], flat[-1] = info.min, info.max
        out.append(np.concatenate([values, extra]))
    return out


def check_byte_input_scales(tflite: bytes, specs: list[InputSpec], io_type: str, model_name: str) -> None:
    """The int8 file's byte inputs have scale 1, so bytes map to its input exactly; else say why not."""
    from kopt.export.flatbuffer import load

    if io_type == "float32":
        return
    model = load(tflite)
    sg = model.main
    keys = byte_inputs(specs)
    for position, tensor_index in enumerate(sg.inputs):
        if position >= len(specs) or specs[position].key not in keys:
            continue
        quantization = sg.tensors[tensor_index].quantization
        scale = float(quantization.scales[0]) if quantization.scales.size else 0.0
        zero_point = int(quantization.zero_points[0]) if quantization.zero_points.size else 0
        if not np.isclose(scale, 1.0, rtol=1e-6):
            raise ConversionError(
                f"model {model_name!r}: input {specs[position].key!r} holds {specs[position].dtype} bytes, but the int8 "
                f"file's input has scale {scale:.6g} (zero point {zero_point}), so bytes cannot be fed to it exactly: "
                "its quantization-aware range did not span the whole byte range. Lower with representative_data "
                "(calibrated ranges are anchored to the byte range), or train with data that spans it."
            )


__all__ = ["anchored", "byte_inputs", "check_byte_input_scales", "with_float_inputs"]
