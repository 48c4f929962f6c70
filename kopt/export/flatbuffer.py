"""A read-only view of a ``.tflite`` file, decoded with LiteRT's generated flatbuffer schema.

Everything here is a thin, typed layer over ``ai_edge_litert.schema_py_generated`` and
``ai_edge_litert.tools.flatbuffer_utils`` (the same generated code TensorFlow ships): no
hand-written parsing. The view gives the checker, the inspector and the tests one shape to
work with: operators in execution order with their op name and version, tensors with their
dtype name, static and signature shape, quantization parameters and constant data as NumPy
arrays in the TFLite layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from kopt.core.errors import CorruptTFLiteError, InvalidArgumentTypeError

TFLiteSource = Union[bytes, bytearray, memoryview, str, os.PathLike, "TFLiteModel"]

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_ACTIVATION_NAMES = {
    code: name for name, code in vars(schema.ActivationFunctionType).items() if not name.startswith("_")
}
_NUMPY_DTYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "UINT16": np.uint16,
    "INT32": np.int32,
    "UINT32": np.uint32,
    "INT64": np.int64,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``, per slice of ``axis``."""

    scales: np.ndarray
    zero_points: np.ndarray
    axis: int = 0

    @property
    def is_quantized(self) -> bool:
        return self.scales.size > 0

    @property
    def per_channel(self) -> bool:
        return self.scales.size > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": [float(s) for s in self.scales],
            "zero_points": [int(z) for z in self.zero_points],
            "axis": int(self.axis),
        }


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph. ``data`` holds the constant value (TFLite layout) or None."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    quantization: Quantization
    data: np.ndarray | None = field(default=None, repr=False, compare=False)
    is_variable: bool = False
    #: Stored in TFLite's sparse encoding (``Tensor.sparsity``: ``to_tflite(sparse=True)``), not dense.
    is_sparse: bool = False

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def is_dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class Operator:
    """One operator, in the order the interpreter runs it."""

    index: int
    name: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...] = ()
    custom_code: str | None = None
    options: Any = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """``CONV_2D``, or ``CUSTOM:<code>`` for custom ops."""
        return f"{self.name}:{self.custom_code}" if self.custom_code is not None else self.name

    @property
    def fused_activation(self) -> str | None:
        code = getattr(self.options, "fusedActivationFunction", None)
        return None if code is None else _ACTIVATION_NAMES.get(code, str(code))

    def option(self, name: str, default: Any = None) -> Any:
        """A field of the op's builtin options (schema object API names, e.g. ``dilationHFactor``)."""
        return getattr(self.options, name, default)


@dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, index: int) -> Tensor | None:
        """The tensor at ``index``; None for the ``-1`` placeholder of an omitted optional input."""
        return None if index < 0 else self.tensors[index]

    def input_tensors(self, op: Operator) -> list[Tensor | None]:
        return [self.tensor(i) for i in op.inputs]

    def output_tensors(self, op: Operator) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs]

    def consumers(self, tensor_index: int) -> list[Operator]:
        return [op for op in self.operators if tensor_index in op.inputs]


@dataclass(frozen=True)
class Signature:
    """A signature def: named inputs/outputs mapped to tensor indices of one subgraph."""

    key: str
    subgraph_index: int
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class TFLiteModel:
    """A decoded ``.tflite`` file. ``raw`` keeps the serialized bytes."""

    subgraphs: tuple[Subgraph, ...]
    signatures: tuple[Signature, ...]
    raw: bytes = field(repr=False, compare=False)

    @property
    def main(self) -> Subgraph:
        """The first subgraph: the one the interpreter runs."""
        return self.subgraphs[0]

    @property
    def size_bytes(self) -> int:
        return len(self.raw)


def read_bytes(tflite: TFLiteSource) -> bytes:
    """The serialized model from bytes, a path, or an already decoded :class:`TFLiteModel`."""
    if isinstance(tflite, TFLiteModel):
        return tflite.raw
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return bytes(tflite)
    if isinstance(tflite, (str, os.PathLike)):
        if not os.path.isfile(tflite):
            raise FileNotFoundError(f"no .tflite file at {os.fspath(tflite)!r}")
        with open(tflite, "rb") as handle:
            return handle.read()
    raise InvalidArgumentTypeError(
        f"expected .tflite bytes or a path to a .tflite file, got {type(tflite).__name__}"
    )


def load(tflite: TFLiteSource) -> TFLiteModel:
    """Decode a ``.tflite`` (bytes, path or :class:`TFLiteModel`) into a :class:`TFLiteModel`."""
    if isinstance(tflite, TFLiteModel):
        return tflite
    raw = read_bytes(tflite)
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise CorruptTFLiteError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(raw))
        buffers = model.buffers or []
        subgraphs = tuple(_subgraph(model, sg, buffers) for sg in (model.subgraphs or []))
        signatures = tuple(
            Signature(
                key=_text(sig.signatureKey),
                subgraph_index=int(sig.subgraphIndex),
                inputs=tuple((_text(t.name), int(t.tensorIndex)) for t in (sig.inputs or [])),
                outputs=tuple((_text(t.name), int(t.tensorIndex)) for t in (sig.outputs or [])),
            )
            for sig in (model.signatureDefs or [])
        )
    except Exception as error:  # the generated decoder fails in many ways on damaged bytes
        raise CorruptTFLiteError(
            f"the TFLite flatbuffer ({len(raw)} bytes) is truncated or corrupted and cannot be decoded "
            f"({type(error).__name__}: {error}); re-export it with kopt.export.to_tflite or copy it again."
        ) from error
    return TFLiteModel(subgraphs=subgraphs, signatures=signatures, raw=raw)


def to_bytes(model_object: Any) -> bytes:
    """Serialize a schema object-API model (``ModelT``), e.g. one edited in a test."""
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_object))


def read_object(tflite: TFLiteSource) -> Any:
    """The mutable schema object-API model (``ModelT``), for building test variants of a file."""
    return flatbuffer_utils.read_model_from_bytearray(bytearray(read_bytes(tflite)))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _ints(values: Any) -> tuple[int, ...]:
    return () if values is None else tuple(int(v) for v in values)


def _subgraph(model: Any, sg: Any, buffers: list) -> Subgraph:
    tensors = tuple(_tensor(i, t, buffers) for i, t in enumerate(sg.tensors or []))
    operators = tuple(_operator(i, op, model) for i, op in enumerate(sg.operators or []))
    return Subgraph(
        name=_text(sg.name),
        tensors=tensors,
        operators=operators,
        inputs=_ints(sg.inputs),
        outputs=_ints(sg.outputs),
    )


def _tensor(index: int, t: Any, buffers: list) -> Tensor:
    dtype = flatbuffer_utils.type_to_name(t.type)
    shape = _ints(t.shape)
    q = t.quantization
    scales = np.asarray([] if q is None or q.scale is None else q.scale, dtype=np.float64)
    zero_points = np.asarray([] if q is None or q.zeroPoint is None else q.zeroPoint, dtype=np.int64)
    axis = 0 if q is None else int(q.quantizedDimension)
    data = None
    if 0 < t.buffer < len(buffers) and buffers[t.buffer].data is not None and len(buffers[t.buffer].data):
        data = _decode(np.asarray(buffers[t.buffer].data, dtype=np.uint8), dtype, shape)
    signature = _ints(t.shapeSignature) if t.shapeSignature is not None else None
    return Tensor(
        index=index,
        name=_text(t.name),
        dtype=dtype,
        shape=shape,
        shape_signature=signature or None,
        quantization=Quantization(scales, zero_points, axis),
        data=data,
        is_variable=bool(t.isVariable),
        is_sparse=t.sparsity is not None,
    )


def _decode(raw: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Constant buffer bytes as an array of the tensor's dtype and shape (raw bytes if packed)."""
    np_dtype = _NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        return raw
    values = np.frombuffer(raw.tobytes(), dtype=np.dtype(np_dtype).newbyteorder("<"))
    if values.size != (int(np.prod(shape)) if shape else 1):
        return raw
    return values.astype(np_dtype, copy=False).reshape(shape)


def _operator(index: int, op: Any, model: Any) -> Operator:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
    custom = _text(code.customCode) if name == "CUSTOM" else None
    return Operator(
        index=index,
        name=name,
        version=int(code.version),
        inputs=_ints(op.inputs),
        outputs=_ints(op.outputs),
        intermediates=_ints(op.intermediates),
        custom_code=custom,
        options=op.builtinOptions,
    )
