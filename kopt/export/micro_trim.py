"""What a TFLite Micro file can do without: bytes the converter writes that TFLM never reads.

On a microcontroller every byte of the ``.tflite`` is flash. Once the weights are LUT-compressed,
the rest of the file is a large share of it (mnist1d CNN clustered to 4 values: ~14 KB of
~59 KB), and part of that rest is not used by TFLM:

* per-channel zero points: int64, one per channel, always 0 for weights and biases. TFLM's
  allocator accepts a single zero point for a per-channel tensor ("as a space-saving
  optimization, zero point arrays for weights can be reduced to a single value"), and
  ``tflite_micro.compression`` keeps such arrays as they are;
* per-channel bias scales: TFLM's convolutions derive their multipliers from the input,
  filter and output scales; a bias keeps its first scale (per tensor), which is what its checks
  read;
* metadata the converter adds (``CONVERSION_METADATA``, ``min_runtime_version``), the signature
  defs and the description: TFLM reads only its own metadata entries (e.g.
  ``OfflineMemoryAllocation``, kept).

Each trim is a :class:`Trim`; :func:`kopt.export.micro.compress` keeps one only when the TFLM
interpreter's outputs stay bit-identical to the untrimmed file's. LiteRT needs the full arrays,
so a trimmed file is for TFLM only (as the LUT-compressed file is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kopt.export.flatbuffer import TFLiteSource, read_object, to_bytes

#: Metadata entries TFLM reads; every other entry is left out by :func:`drop_converter_metadata`.
TFLM_METADATA = ("OfflineMemoryAllocation",)


@dataclass(frozen=True)
class Trim:
    """One edit of the file TFLM does not need: ``apply(model object) -> bytes saved`` (0: nothing to do)."""

    name: str
    apply: Callable[[Any], int]


def _constant(model: Any, tensor: Any) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers) else None
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def single_zero_points(model: Any) -> int:
    """Per-channel zero points of constant tensors (all 0) stored as one value."""
    saved = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            q = t.quantization
            if q is None or q.zeroPoint is None or len(q.zeroPoint) <= 1 or not _constant(model, t):
                continue
            if np.any(np.asarray(q.zeroPoint) != 0):
                continue
            saved += 8 * (len(q.zeroPoint) - 1)
            q.zeroPoint = np.zeros(1, np.int64)
    return saved


def _bias_tensors(model: Any) -> set[tuple[int, int]]:
    """(subgraph, tensor) of int32/int64 constant third inputs of convolutions and FULLY_CONNECTED."""
    from ai_edge_litert import schema_py_generated as schema

    biased = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
              schema.BuiltinOperator.FULLY_CONNECTED}
    found = set()
    for s, sg in enumerate(model.subgraphs):
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) not in biased:
                continue
            inputs = list(op.inputs)
            if len(inputs) > 2 and inputs[2] >= 0:
                t = sg.tensors[inputs[2]]
                if t.type in (schema.TensorType.INT32, schema.TensorType.INT64) and _constant(model, t):
                    found.add((s, inputs[2]))
    return found


def per_tensor_bias_scales(model: Any) -> int:
    """Per-channel bias quantization reduced to its first scale and a zero point of 0."""
    saved = 0
    for s, index in _bias_tensors(model):
        q = model.subgraphs[s].tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) <= 1:
            continue
        zeros = 0 if q.zeroPoint is None else len(q.zeroPoint)
        saved += 4 * (len(q.scale) - 1) + 8 * max(0, zeros - 1)
        q.scale = np.asarray(q.scale[:1], np.float32)
        q.zeroPoint = np.zeros(1, np.int64)
        q.quantizedDimension = 0
    return saved


def drop_converter_metadata(model: Any) -> int:
    """Signature defs, the description and metadata entries other than TFLM's own."""
    saved = 0
    kept = []
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else str(entry.name)
        if name in TFLM_METADATA:
            kept.append(entry)
            continue
        buffer = model.buffers[entry.buffer]
        saved += len(name) + 16 + (0 if buffer.data is None else len(buffer.data))
        buffer.data = None  # an empty buffer stays, so buffer indices keep their meaning
    model.metadata = kept or None
    if model.signatureDefs:
        saved += 64 * len(model.signatureDefs)
        model.signatureDefs = None
    if model.description:
        saved += len(model.description)
        model.description = None
    return saved


def unquantized_decode_inputs(model: Any) -> int:
    """No quantization on the inputs of TFLM's DECODE ops (LUT indices and value tables are raw
    bytes; the decoded tensor carries the quantization). ``tflite_micro.compression`` leaves the
    original tensor's quantization on the encoded one (its editor keeps the flatbuffer's fields)."""
    changed = 0
    for sg in model.subgraphs:
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            if name != "TFLM_DECODE":
                continue
            for index in op.inputs:
                if index >= 0 and sg.tensors[index].quantization is not None:
                    sg.tensors[index].quantization = None
                    changed += 1
    return changed


#: In the order :func:`kopt.export.micro.compress` tries them.
TRIMS = (
    Trim("single zero point per weight/bias tensor", single_zero_points),
    Trim("per-tensor bias scales", per_tensor_bias_scales),
    Trim("converter metadata and signature defs", drop_converter_metadata),
)


def trimmed(tflite: TFLiteSource, trims: tuple[Trim, ...]) -> bytes | None:
    """``tflite`` with ``trims`` applied, or None if none of them changes anything."""
    model = read_object(tflite)
    if sum(trim.apply(model) for trim in trims) == 0:
        return None
    return to_bytes(model)

#: Applied to every LUT-compressed file (and verified with it).
DECODE_INPUTS = Trim("quantization of DECODE inputs", unquantized_decode_inputs)
