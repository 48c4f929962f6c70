"""What a ``.tflite`` holds: ops, tensor dtypes, quantization, sizes, and weight statistics.

Sizes follow the TFLite model-optimization documentation: the file size in bytes, and the size
of a zip archive holding the file compressed with DEFLATE (what its size tables report as the
"gzipped"/"zipped" size; pruning and clustering shrink the zipped size, not the file size).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kopt import metrics
from kopt.export.flatbuffer import Quantization, TFLiteSource, load, read_bytes

_WEIGHT_DTYPES = ("INT8", "UINT8", "INT16", "FLOAT16", "FLOAT32")


def tflite_size(tflite: TFLiteSource) -> int:
    """Size of the serialized model in bytes."""
    return len(read_bytes(tflite))


def zipped_size(tflite: TFLiteSource) -> int:
    """Bytes of a zip archive holding the model compressed with DEFLATE (TFMOT docs' measure)."""
    return metrics.zipped_size(read_bytes(tflite))


@dataclass(frozen=True)
class WeightTensor:
    """A constant weight tensor as stored in the flatbuffer (TFLite layout, e.g. conv ``[O, H, W, I]``).

    ``values`` are the stored numbers (int8 for a full-integer model); ``real = scale * (q - zp)``.
    """

    op_index: int
    op: str
    input_index: int
    name: str
    values: np.ndarray = field(repr=False)
    quantization: Quantization = field(repr=False)

    @property
    def dtype(self) -> str:
        return str(self.values.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def _zero(self) -> np.ndarray:
        zp = self.quantization.zero_points
        if not self.quantization.is_quantized or zp.size == 0:
            return np.zeros((), self.values.dtype)
        if zp.size == 1:
            return np.asarray(zp[0])
        shape = [1] * self.values.ndim
        shape[self.quantization.axis] = zp.size
        return zp.reshape(shape)

    def dequantized(self) -> np.ndarray:
        """Real values as float32 (the stored values when the tensor is not quantized)."""
        if not self.quantization.is_quantized:
            return self.values.astype(np.float32)
        scales = self.quantization.scales
        if scales.size > 1:
            shape = [1] * self.values.ndim
            shape[self.quantization.axis] = scales.size
            scales = scales.reshape(shape)
        return ((self.values.astype(np.float64) - self._zero()) * scales).astype(np.float32)

    @property
    def sparsity(self) -> float:
        """Fraction of elements whose real value is exactly 0 (stored value == zero point)."""
        return float(np.mean(self.values == self._zero())) if self.values.size else 0.0

    @property
    def unique_values(self) -> int:
        """Distinct stored values in the whole tensor."""
        return int(np.unique(self.values).size)

    @property
    def max_unique_per_channel(self) -> int:
        """Most distinct stored values within one slice of the quantized axis.

        With per-channel scales a clustered tensor shows its cluster count per channel, not over
        the whole tensor (each channel's centroids land on a different int8 grid).
        """
        if not self.quantization.per_channel or self.values.ndim == 0:
            return self.unique_values
        axis = self.quantization.axis
        moved = np.moveaxis(self.values, axis, 0).reshape(self.values.shape[axis], -1)
        return max(int(np.unique(row).size) for row in moved)

    def follows_n_m(self, n: int = 2, m: int = 4, axis: int = -1) -> bool:
        """True if every group of ``m`` consecutive values along ``axis`` has at most ``n`` non-zeros.

        The default axis is the input-channel axis of CONV_2D ``[O, H, W, I]`` and FULLY_CONNECTED
        ``[O, I]`` weights, where TFLite's sparse kernels look for the 2:4 pattern.
        """
        moved = np.moveaxis(self.values != self._zero(), axis, -1)
        if moved.shape[-1] % m:
            return False
        groups = moved.reshape(*moved.shape[:-1], -1, m)
        return bool(np.all(groups.sum(axis=-1) <= n))

    def stats(self) -> dict[str, Any]:
        return {
            "op_index": self.op_index,
            "op": self.op,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "per_channel": self.quantization.per_channel,
            "sparsity": round(self.sparsity, 6),
            "unique_values": self.unique_values,
            "max_unique_per_channel": self.max_unique_per_channel,
        }


def weight_tensors(tflite: TFLiteSource, *, subgraph: int = 0) -> list[WeightTensor]:
    """Constant weight tensors (not int32 biases or shape/axis parameters), in op order, each once.

    A tensor used by several ops is listed with its first consumer.
    """
    sg = load(tflite).subgraphs[subgraph]
    seen: set[int] = set()
    found = []
    for op in sg.operators:
        for position, index in enumerate(op.inputs):
            t = sg.tensor(index)
            if t is None or index in seen or not t.is_constant or t.dtype not in _WEIGHT_DTYPES or t.size < 2:
                continue
            seen.add(index)
            found.append(WeightTensor(op.index, op.label, position, t.name, t.data, t.quantization))
    return found


@dataclass(frozen=True)
class TFLiteSummary:
    """The result of :func:`inspect`; ``str()`` prints it, ``to_dict()`` serializes it."""

    ops: tuple[dict[str, Any], ...]
    tensors: tuple[dict[str, Any], ...]
    weights: tuple[dict[str, Any], ...]
    size_bytes: int
    zipped_bytes: int
    num_subgraphs: int = 1

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op["op"] for op in self.ops))

    @property
    def dtype_counts(self) -> dict[str, int]:
        return dict(Counter(t["dtype"] for t in self.tensors))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "zipped_bytes": self.zipped_bytes,
            "num_subgraphs": self.num_subgraphs,
            "op_counts": self.op_counts,
            "dtype_counts": self.dtype_counts,
            "ops": list(self.ops),
            "tensors": list(self.tensors),
            "weights": list(self.weights),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        lines = [
            f"TFLite model: {self.size_bytes} bytes, {self.zipped_bytes} bytes zipped, "
            f"{len(self.ops)} ops, {self.num_subgraphs} subgraph(s)",
            "ops: " + ", ".join(f"{name} x{n}" for name, n in self.op_counts.items()),
            "tensor dtypes: " + ", ".join(f"{name} x{n}" for name, n in self.dtype_counts.items()),
            "",
            f"{'#':>4}  {'tensor':<48} {'dtype':<8} {'shape':<18} quantization",
        ]
        for t in self.tensors:
            q = t["quantization"]
            if q["scales"]:
                axis = f" axis {q['axis']}" if len(q["scales"]) > 1 else ""
                qtext = f"scale {q['scales'][0]:.4g} zp {q['zero_points'][0]}" + (
                    f" (+{len(q['scales']) - 1} channels{axis})" if len(q["scales"]) > 1 else ""
                )
            else:
                qtext = "-"
            lines.append(f"{t['index']:>4}  {t['name'][:48]:<48} {t['dtype']:<8} {str(t['shape']):<18} {qtext}")
        if self.weights:
            lines += ["", f"{'weights':<48} {'shape':<18} {'sparsity':>8} {'unique':>7} {'per-ch':>7}"]
            for w in self.weights:
                lines.append(
                    f"{w['name'][:48]:<48} {str(w['shape']):<18} {w['sparsity']:>8.3f} "
                    f"{w['unique_values']:>7} {w['max_unique_per_channel']:>7}"
                )
        return "\n".join(lines)


def inspect(tflite: TFLiteSource) -> TFLiteSummary:
    """Summarize a ``.tflite`` (bytes or path): ops, tensors with quantization, sizes, weight stats."""
    model = load(tflite)
    sg = model.main
    ops = tuple(
        {
            "index": op.index,
            "op": op.label,
            "version": op.version,
            "inputs": list(op.inputs),
            "outputs": list(op.outputs),
            "fused_activation": op.fused_activation,
        }
        for op in sg.operators
    )
    tensors = tuple(
        {
            "index": t.index,
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "shape_signature": None if t.shape_signature is None else list(t.shape_signature),
            "constant": t.is_constant,
            "quantization": t.quantization.to_dict(),
        }
        for t in sg.tensors
    )
    weights = tuple(w.stats() for w in weight_tensors(model))
    return TFLiteSummary(
        ops=ops,
        tensors=tensors,
        weights=weights,
        size_bytes=model.size_bytes,
        zipped_bytes=zipped_size(model),
        num_subgraphs=len(model.subgraphs),
    )
