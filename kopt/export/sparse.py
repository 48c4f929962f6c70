"""Sparse tensor storage: TFLite's sparse format for pruned weights, checked against the dense file.

The converter's ``EXPERIMENTAL_SPARSITY`` stores a weight tensor that is mostly zeros in TFLite's
compressed sparse format (``Tensor.sparsity``: a dense and a CSR-like dimension, block-wise when
the zeros come in blocks), so pruning shrinks the raw file and not only the zipped one. LiteRT
runs such files (int8 FULLY_CONNECTED reads them directly; float kernels get a DENSIFY op);
whether it is faster depends on the CPU (XNNPACK's sparse kernels pay on ARM, rarely on x86).
TFLite Micro and the Edge TPU compiler have no sparse kernels: use ``target="micro"`` LUT
compression there.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from kopt.core.errors import KoptRuntimeWarning
from kopt.export.flatbuffer import TFLiteSource, load, read_bytes
from kopt.export.micro import sparse_tensor_names


@dataclass(frozen=True)
class SparseReport:
    """Sparse against dense ``.tflite``: raw sizes, LiteRT latency and output agreement."""

    dense_bytes: int
    sparse_bytes: int
    sparse_tensors: tuple[str, ...]
    max_step_difference: float
    dense_latency_us: float
    sparse_latency_us: float
    samples: int

    @property
    def size_ratio(self) -> float:
        """Sparse file size over dense file size (lower is better)."""
        return self.sparse_bytes / max(1, self.dense_bytes)

    @property
    def agrees(self) -> bool:
        """Outputs within one quantization step of the dense file's (exact for float outputs up to 1e-5)."""
        return self.max_step_difference <= 1.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, sparse_tensors=list(self.sparse_tensors), size_ratio=self.size_ratio,
                    agrees=self.agrees)

    def __str__(self) -> str:
        return (
            f"sparse .tflite: {self.sparse_bytes} bytes raw vs {self.dense_bytes} dense ({self.size_ratio:.2f}x), "
            f"{len(self.sparse_tensors)} sparse tensor(s); LiteRT latency {self.sparse_latency_us:.1f} us vs "
            f"{self.dense_latency_us:.1f} us dense; outputs differ by at most {self.max_step_difference:g} "
            f"step(s) on {self.samples} sample(s)"
        )


def _raw_outputs(tflite: bytes, samples: list[list[np.ndarray]]) -> tuple[list[np.ndarray], float]:
    """LiteRT outputs (not dequantized) per sample, and the median invoke time in microseconds, on
    LiteRT's builtin kernels for both files (XNNPACK cannot delegate sparse int8 FULLY_CONNECTED)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = load(tflite)
    interpreter = Interpreter(
        model_content=tflite, num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    inputs = [d["index"] for d in interpreter.get_input_details()]
    order = {t: k for k, t in enumerate(model.main.inputs)}
    inputs.sort(key=lambda index: order.get(index, index))
    outputs = [d["index"] for d in interpreter.get_output_details()]
    results, times = [], []
    for sample in samples:
        for index, array in zip(inputs, sample):
            interpreter.set_tensor(index, array)
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
        results.append(np.concatenate([interpreter.get_tensor(i).ravel().astype(np.float64) for i in outputs]))
    return results, float(np.median(times) * 1e6) if times else 0.0


def _output_steps(tflite: bytes) -> float:
    """The size of one output quantization step (1 for integer outputs as compared raw, 1e-5 for float)."""
    sg = load(tflite).main
    dtypes = {sg.tensors[i].dtype for i in sg.outputs}
    return 1.0 if dtypes <= {"INT8", "UINT8", "INT16"} else 1e-5


def compare(sparse: TFLiteSource, dense: TFLiteSource, x: Any = None, *, samples: int = 32,
            repeats: int = 3) -> SparseReport:
    """Run both files in LiteRT on the same inputs (``x``, else random ones over the full input range)."""
    from kopt.export.micro import sample_inputs

    sparse_raw, dense_raw = read_bytes(sparse), read_bytes(dense)
    inputs = sample_inputs(dense_raw, x, count=samples)
    step = _output_steps(dense_raw)
    dense_times, sparse_times = [], []
    for _ in range(max(1, repeats)):
        dense_out, dense_us = _raw_outputs(dense_raw, inputs)
        sparse_out, sparse_us = _raw_outputs(sparse_raw, inputs)
        dense_times.append(dense_us)
        sparse_times.append(sparse_us)
    worst = max((float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(dense_out, sparse_out)), default=0.0)
    return SparseReport(
        dense_bytes=len(dense_raw),
        sparse_bytes=len(sparse_raw),
        sparse_tensors=sparse_tensor_names(sparse_raw),
        max_step_difference=worst / step,
        dense_latency_us=min(dense_times),
        sparse_latency_us=min(sparse_times),
        samples=len(inputs),
    )


def _misaligned_blocks(model: Any) -> dict[int, str]:
    """Block-sparse tensors (index -> why) whose blocked dimension is not a multiple of the block:
    LiteRT's int8 1x16 FULLY_CONNECTED kernel reads whole 16-wide blocks of the input row (its
    ``m_cols % 16`` check is a debug-only DCHECK), so a [512, 40] kernel in 1x16 blocks gives
    outputs ~140 steps off, silently."""
    found = {}
    for index, t in enumerate(model.subgraphs[0].tensors):
        sparsity = t.sparsity
        if sparsity is None or sparsity.blockMap is None:
            continue
        rank = len(t.shape)
        for k, axis in enumerate(sparsity.blockMap):
            block = sparsity.dimMetadata[rank + k].denseSize
            if block > 1 and t.shape[axis] % block:
                found[index] = f"its dimension {axis} has {t.shape[axis]} entries, not a multiple of its {block}-wide blocks"
    return found


def _restore_dense(sparse: bytes, dense: bytes, names: list[str]) -> bytes:
    """``sparse`` with the named sparse tensors stored dense, values from the same tensor of ``dense``."""
    from kopt.export.flatbuffer import read_object, to_bytes

    model, reference = read_object(sparse), read_object(dense)
    by_name = {t.name: t for t in reference.subgraphs[0].tensors}
    for t in model.subgraphs[0].tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        twin = by_name.get(t.name)
        if name in names and t.sparsity is not None and twin is not None and list(twin.shape) == list(t.shape):
            model.buffers[t.buffer].data = reference.buffers[twin.buffer].data
            t.sparsity = None
    return to_bytes(model)


def aligned(sparse: bytes, dense: bytes) -> tuple[bytes, dict[str, str]]:
    """``sparse`` with each block-sparse tensor LiteRT cannot run exactly (:func:`_misaligned_blocks`)
    stored dense again, its values taken from the same tensor of ``dense``; and those tensors' names
    with the reason."""
    from kopt.export.flatbuffer import read_object

    model = read_object(sparse)
    tensors = model.subgraphs[0].tensors
    misaligned = {
        (tensors[i].name.decode() if isinstance(tensors[i].name, bytes) else str(tensors[i].name)): why
        for i, why in _misaligned_blocks(model).items()
    }
    if not misaligned:
        return sparse, {}
    result = _restore_dense(sparse, dense, list(misaligned))
    kept = set(sparse_tensor_names(result))
    return result, {name: why for name, why in misaligned.items() if name not in kept}


def _agreeing(sparse: bytes, dense: bytes, x: Any, samples: int) -> tuple[bytes, dict[str, str]]:
    """Sparse tensors stored dense again, smallest first, until LiteRT's outputs agree with the dense
    file's: LiteRT's sparse kernels round differently (one step per layer), and an int8 softmax can
    turn one step of logits into several of probability."""
    from kopt.export.flatbuffer import load as load_model

    sizes = {t.name: t.size for t in load_model(dense).main.tensors}
    restored: dict[str, str] = {}
    report = compare(sparse, dense, x, samples=samples, repeats=1)
    for name in sorted(report.sparse_tensors, key=lambda n: sizes.get(n, 0)):
        if report.agrees:
            break
        restored[name] = f"with it sparse, outputs differ by {report.max_step_difference:g} steps"
        sparse = _restore_dense(sparse, dense, [name])
        report = compare(sparse, dense, x, samples=samples, repeats=1)
    return sparse, restored


def verified(sparse: bytes, dense: bytes, data: list[np.ndarray] | None, model_name: str) -> bytes:
    """The sparse file if it is smaller and agrees with the dense one in LiteRT, else the dense file
    (with a warning saying why: asking for sparse storage must never silently change nothing).
    Block-sparse tensors LiteRT would run wrongly are stored dense first (:func:`aligned`), named
    in a warning."""
    x = None if data is None else (data[0] if len(data) == 1 else data)
    samples = max(32, 0 if data is None else len(data[0]))
    sparse, restored = aligned(sparse, dense)
    if sparse_tensor_names(sparse) and not compare(sparse, dense, x, samples=samples, repeats=1).agrees:
        sparse, disagreeing = _agreeing(sparse, dense, x, samples)
        if sparse_tensor_names(sparse):  # else: nothing sparse agrees, the dense file is returned below
            restored.update(disagreeing)
    if restored:
        warnings.warn(
            f"kopt.export.to_tflite(sparse=True): model '{model_name}': "
            + "; ".join(f"'{name}' stays dense ({why})" for name, why in restored.items())
            + ". A kernel whose input size its blocks do not divide can be pruned unstructured instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    report = compare(sparse, dense, x, samples=samples, repeats=1)
    problem = None
    if not report.sparse_tensors:
        problem = ("the converter stored no tensor as sparse (it only encodes weights that are mostly zeros: "
                   "prune the model first, e.g. with kopt.sparsity, and strip it)")
    elif not report.agrees:
        problem = f"its outputs differ from the dense file's by {report.max_step_difference:g} steps in LiteRT"
    elif report.sparse_bytes >= report.dense_bytes:
        problem = f"it is not smaller ({report.sparse_bytes} vs {report.dense_bytes} bytes)"
    if problem:
        warnings.warn(
            f"kopt.export.to_tflite(sparse=True): model '{model_name}' is returned dense: {problem}.",
            KoptRuntimeWarning,
            stacklevel=3,
        )
        return dense
    return sparse
