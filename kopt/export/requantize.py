"""One float hop the converter leaves when a QAT model is also calibrated: DEQUANTIZE -> QUANTIZE at an input.

A quantization-aware model with parts that have no trained ranges (a layer excluded from QAT, the inside
of a block kept whole) is lowered with ``representative_data``. Where an integer model input (its range
the trained one) feeds a tensor the converter gave a *calibrated* range (a block's first op), it writes
``int8 input -> DEQUANTIZE -> float -> QUANTIZE -> int8`` (a float tensor in an int8 file) instead of one
requantize. :func:`fold_input_requantize` removes the pair and gives the input the parameters the QUANTIZE
wrote: the input is quantized once, straight to the grid the next op reads, instead of twice.
"""

from __future__ import annotations

from typing import Any

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kopt.export.flatbuffer import TFLiteSource, read_bytes, read_object, to_bytes

_BUILTINS = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _op_name(model: Any, op: Any) -> str:
    return _BUILTINS.get(flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]), "")


def fold_input_requantize(tflite: TFLiteSource) -> bytes:
    """``tflite`` without ``DEQUANTIZE -> QUANTIZE`` pairs reading an integer model input (see the module
    docstring); unchanged when it has none. The input must feed only the pair, and the QUANTIZE write the
    input's type."""
    model = read_object(tflite)
    folded = 0
    for sg in model.subgraphs:
        operators = list(sg.operators or [])
        inputs = [int(i) for i in sg.inputs]
        outputs = [int(i) for i in sg.outputs]

        def consumers(index: int) -> list[Any]:
            return [op for op in operators if index in [int(i) for i in op.inputs]]

        for op in list(operators):
            if _op_name(model, op) != "DEQUANTIZE" or int(op.inputs[0]) not in inputs:
                continue
            source, middle = int(op.inputs[0]), int(op.outputs[0])
            after = consumers(middle)
            if len(consumers(source)) != 1 or len(after) != 1 or middle in outputs:
                continue
            quantize = after[0]
            target = int(quantize.outputs[0])
            if _op_name(model, quantize) != "QUANTIZE" or target in outputs:
                continue
            if sg.tensors[target].type != sg.tensors[source].type:
                continue
            sg.tensors[source].quantization = sg.tensors[target].quantization
            for other in operators:
                other.inputs = [source if int(i) == target else int(i) for i in other.inputs]
            operators.remove(op)
            operators.remove(quantize)
            folded += 1
        sg.operators = operators
    return to_bytes(model) if folded else read_bytes(tflite)


__all__ = ["fold_input_requantize"]
