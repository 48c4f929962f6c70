"""16x8 files from quantization-aware training: int64 biases, as the TFLite 16x8 spec has them.

TF 2.21's converter lowers a graph with 16-bit FakeQuant activations (the ``"int16x8"`` QAT
scheme) to int16 activations and int8 weights, but keeps the int32 biases of its int8 route:
its ``full_integer_quantization_bias_type`` option applies to post-training calibration only.
LiteRT's int16 CONV_2D then computes garbage (saturated outputs, no error) from an int32 bias,
while the 16x8 spec and the calibrated route use int64. :func:`widen_biases` rewrites those
biases to int64 (the same integers, so nothing is rounded again).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from kopt.export.flatbuffer import TFLiteSource, read_bytes, read_object, to_bytes

#: Ops with an accumulator-typed bias: op -> (activation input, bias input).
_BIASED_OPS = {
    schema.BuiltinOperator.CONV_2D: (0, 2),
    schema.BuiltinOperator.DEPTHWISE_CONV_2D: (0, 2),
    schema.BuiltinOperator.FULLY_CONNECTED: (0, 2),
    schema.BuiltinOperator.TRANSPOSE_CONV: (2, 3),
}


def widen_biases(tflite: TFLiteSource) -> bytes:
    """``tflite`` with every int32 bias of an op on int16 activations stored as int64."""
    model = read_object(tflite)
    widened: set[int] = set()
    for sg in model.subgraphs:
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            positions = _BIASED_OPS.get(max(code.builtinCode, code.deprecatedBuiltinCode))
            inputs = list(op.inputs)
            if positions is None or len(inputs) <= positions[1] or inputs[positions[1]] < 0:
                continue
            if sg.tensors[inputs[positions[0]]].type != schema.TensorType.INT16:
                continue
            bias = sg.tensors[inputs[positions[1]]]
            buffer = model.buffers[bias.buffer]
            if bias.type != schema.TensorType.INT32 or buffer.data is None or bias.buffer in widened:
                continue
            wide = np.frombuffer(bytes(bytearray(buffer.data)), "<i4").astype("<i8")
            buffer.data = np.frombuffer(wide.tobytes(), np.uint8)
            bias.type = schema.TensorType.INT64
            widened.add(bias.buffer)
    return to_bytes(model) if widened else read_bytes(tflite)
