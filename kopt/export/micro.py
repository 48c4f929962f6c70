"""TensorFlow Lite for Microcontrollers: LUT-compressed flash and the TFLM check.

On a microcontroller the ``.tflite`` sits raw in flash, so pruning and clustering only pay when
the file itself shrinks. TFLM's lookup-table compression (``tflite_micro.compression``) stores a
tensor with at most 128 distinct values (per tensor, or per channel along axis 0 / the last
axis) as 1-7-bit indices plus a value table, and inserts DECODE ops that expand it at run time.

TFLM does not run every compressed tensor exactly as before (issue 26: a 64x3x3x32 conv kernel at
6 bits per tensor gave outputs 173 steps off; here an all-zero CONV_2D bias, and the kernel of a first
convolution with one input channel, also changed the outputs), so :func:`compress` keeps a tensor
compressed only when the TFLM interpreter's outputs stay bit-identical to the uncompressed file
on sample inputs, tensor by tensor and then all together. TFLM's pruning and Huffman methods are
stubs in the installed ``tflite-micro`` (they raise), so only LUT compression is offered.

:func:`check_micro` loads a model into the TFLM interpreter (its own op resolver decides which
ops exist), runs it once, reads the arena the recording allocator used and finds the smallest arena
that loads and runs the model (preparing ops needs temporary room beyond the recorded total).
DECODE writes the expanded tensors into the arena, so LUT compression trades flash for RAM.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kopt.core.errors import KoptRuntimeWarning, MicroError
from kopt.export.flatbuffer import Subgraph, Tensor, TFLiteModel, TFLiteSource, load, read_bytes

MAX_LUT_BITS = 7
DEFAULT_VERIFY_SAMPLES = 16
_TFLM_DTYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "FLOAT32": np.float32}
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_DCM_BYTES = 16  # TFLM's decode common metadata header, ahead of every value table


def _tflm():
    try:
        from tflite_micro import compression, runtime
    except ImportError as error:
        raise MicroError(
            "TFLite Micro support needs the tflite-micro package: pip install 'kopt[micro]' (or tflite-micro)"
        ) from error
    return runtime, compression


# ----------------------------------------------------------------------------- running TFLM


@contextlib.contextmanager
def _captured_native_stderr() -> Iterator[io.StringIO]:
    """Collect what C++ writes to file descriptor 2 (TFLM logs errors and allocations there)."""
    log = io.StringIO()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.write(sink.read().decode("utf-8", "replace"))


def _arena_size(model: TFLiteModel) -> int:
    """An arena large enough for any plan: every tensor's bytes twice, plus room for bookkeeping."""
    total = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            itemsize = np.dtype(_TFLM_DTYPES.get(t.dtype, np.float32)).itemsize
            total += t.size * itemsize
    return 2 * total + 10 * model.size_bytes + (1 << 16)


class _Interpreter:
    """The TFLM Python interpreter on one model, with its C++ log captured for error messages."""

    def __init__(self, tflite: bytes, model: TFLiteModel, arena_size: int | None = None) -> None:
        runtime, _ = _tflm()
        self.model = model
        self.log = ""
        with _captured_native_stderr() as log:
            try:
                self._interpreter = runtime.Interpreter.from_bytes(
                    tflite, arena_size=arena_size or _arena_size(model))
            except Exception as error:  # noqa: BLE001 - re-raised with TFLM's own log
                self._interpreter = None
                failure = error
        self.log = log.getvalue()
        if self._interpreter is None:
            raise MicroError(f"TFLite Micro cannot load the model: {failure}. TFLM says: {self.log.strip()}")
        self.input_dtypes = [_TFLM_DTYPES.get(model.main.tensors[i].dtype) for i in model.main.inputs]
        self.input_shapes = [model.main.tensors[i].shape for i in model.main.inputs]

    def outputs(self, sample: Sequence[np.ndarray]) -> list[np.ndarray]:
        with _captured_native_stderr() as log:
            try:
                for index, array in enumerate(sample):
                    self._interpreter.set_input(array, index)
                self._interpreter.invoke()
                result = [np.array(self._interpreter.get_output(k)) for k in range(len(self.model.main.outputs))]
            except Exception as error:  # noqa: BLE001 - re-raised with TFLM's own log
                result, failure = None, error
        if result is None:
            raise MicroError(f"TFLite Micro failed to run the model: {failure}. TFLM says: {log.getvalue().strip()}")
        return result

    def recorded_arena_bytes(self) -> int | None:
        """Bytes of the arena the recording allocator used (after at least one invoke); the arena
        must be somewhat larger, for the temporary allocations made while preparing ops."""
        with _captured_native_stderr() as log:
            self._interpreter.print_allocations()
        match = _ARENA_TOTAL.search(log.getvalue())
        return int(match.group(1)) if match else None


def sample_inputs(tflite: TFLiteSource, x: Any = None, *, count: int = DEFAULT_VERIFY_SAMPLES, seed: int = 0):
    """Batch-1 inputs in the model's own input dtypes: ``x`` quantized like LiteRT does, else random
    values spanning each input's full integer range (uniform in [-1, 1) for float inputs)."""
    from kopt.export.runtime import _arrange, _io, _to_input

    model = load(tflite)
    sg = model.main
    tensors = [sg.tensors[i] for i in sg.inputs]
    samples: list[list[np.ndarray]] = []
    if x is not None:
        names, _, _ = _io(model)
        arrays = _arrange(x, names if len(names) == len(tensors) else [t.name for t in tensors])
        for k in range(min(count, len(arrays[0]))):
            sample = []
            for array, t in zip(arrays, tensors):
                scale = float(t.quantization.scales[0]) if t.quantization.is_quantized else 0.0
                zero = int(t.quantization.zero_points[0]) if t.quantization.is_quantized else 0
                detail = {"dtype": _TFLM_DTYPES.get(t.dtype, np.float32), "quantization": (scale, zero)}
                sample.append(_to_input(np.asarray(array[k : k + 1]), detail).reshape(t.shape))
            samples.append(sample)
    rng = np.random.default_rng(seed)
    while len(samples) < count:
        sample = []
        for t in tensors:
            dtype = np.dtype(_TFLM_DTYPES.get(t.dtype, np.float32))
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                sample.append(rng.integers(info.min, info.max, size=t.shape, endpoint=True).astype(dtype))
            else:
                sample.append(rng.uniform(-1, 1, size=t.shape).astype(dtype))
        samples.append(sample)
    return samples


def _runs_with_arena(model: TFLiteModel, arena_size: int) -> bool:
    """TFLM plans and allocates every tensor and scratch buffer when the interpreter is built."""
    try:
        _Interpreter(model.raw, model, arena_size)
    except MicroError:
        return False
    return True


def minimal_arena_bytes(tflite: TFLiteSource, *, start: int | None = None, granularity: int = 16) -> int:
    """The smallest tensor arena (to ``granularity`` bytes) with which TFLM loads and runs the model
    on zeros: a bisection between the recording allocator's total and a size that is known to work."""
    model = load(tflite)
    interpreter = _Interpreter(model.raw, model)
    zeros = [np.zeros(shape, dtype or np.float32) for shape, dtype in
             zip(interpreter.input_shapes, interpreter.input_dtypes)]
    interpreter.outputs(zeros)
    low = max(granularity, (start or interpreter.recorded_arena_bytes() or granularity) - granularity)
    high = _arena_size(model)
    if _runs_with_arena(model, low):
        return low
    while high - low > granularity:
        middle = (low + high) // 2
        if _runs_with_arena(model, middle):
            high = middle
        else:
            low = middle
    return high


def run_micro(tflite: TFLiteSource, samples: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    """Raw outputs of the TFLM interpreter, one list of output arrays per sample."""
    model = load(tflite)
    interpreter = _Interpreter(model.raw, model)
    return [interpreter.outputs(sample) for sample in samples]


def _identical(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> tuple[bool, float]:
    worst = 0.0
    for outs_a, outs_b in zip(a, b):
        for u, v in zip(outs_a, outs_b):
            if u.shape != v.shape:
                return False, math.inf
            worst = max(worst, float(np.max(np.abs(u.astype(np.float64) - v.astype(np.float64)), initial=0.0)))
    return worst == 0.0, worst


# ----------------------------------------------------------------------------- compression


@dataclass(frozen=True)
class CompressedTensor:
    """One tensor stored as LUT indices in the compressed file."""

    index: int
    name: str
    shape: tuple[int, ...]
    bits: int
    per_channel_axis: int | None
    original_bytes: int
    compressed_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, shape=list(self.shape))


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that could have been compressed but stays as it was, and why."""

    index: int
    name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MicroCompression:
    """The result of :func:`compress`: the file for TFLM and what happened to each tensor."""

    tflite: bytes = field(repr=False)
    original_bytes: int
    compressed: tuple[CompressedTensor, ...]
    skipped: tuple[SkippedTensor, ...]
    verified_samples: int
    trims: tuple[str, ...] = ()
    untrimmed: tuple[str, ...] = ()

    @property
    def flash_bytes(self) -> int:
        return len(self.tflite)

    @property
    def ratio(self) -> float:
        return self.original_bytes / max(1, self.flash_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_bytes": self.original_bytes,
            "flash_bytes": self.flash_bytes,
            "ratio": self.ratio,
            "verified_samples": self.verified_samples,
            "compressed": [c.to_dict() for c in self.compressed],
            "skipped": [s.to_dict() for s in self.skipped],
            "trims": list(self.trims),
            "untrimmed": list(self.untrimmed),
        }

    def __str__(self) -> str:
        lines = [
            (f"TFLM compression: {self.original_bytes} -> {self.flash_bytes} bytes ({self.ratio:.2f}x), "
             f"{len(self.compressed)} tensor(s) as lookup tables, outputs bit-identical on "
             f"{self.verified_samples} sample(s)")
        ]
        for c in self.compressed:
            how = "per tensor" if c.per_channel_axis is None else f"per channel (axis {c.per_channel_axis})"
            lines.append(f"  {c.name} {list(c.shape)}: {c.bits}-bit indices {how}, "
                         f"{c.original_bytes} -> {c.compressed_bytes} bytes")
        lines += [f"  not compressed: {s.name}: {s.reason}" for s in self.skipped]
        lines += [f"  left out (TFLM does not read it): {trim}" for trim in self.trims]
        lines += [f"  kept: {reason}" for reason in self.untrimmed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Option:
    bits: int
    axis: int | None
    nbytes: int


def _bits(values: int) -> int:
    return max(1, math.ceil(math.log2(values))) if values > 1 else 1


def _lut_axes(t: Tensor, ndim: int) -> list[int | None]:
    """The LUT layouts TFLM decodes correctly: its DECODE takes the number of value tables from the
    tensor's quantization (one per scale), so a per-channel quantized tensor needs one table per
    channel of its quantized axis (which must be the first or last axis), any other tensor one table.
    (A per-tensor table on a per-channel quantized conv kernel decodes to wrong weights: issue 26's
    64x3x3x32 kernel, the first conv of the mnist1d CNN.)"""
    q = t.quantization
    if not q.per_channel:
        return [None]
    return [int(q.axis)] if int(q.axis) in (0, ndim - 1) else []


def _lut_options(t: Tensor) -> list[_Option]:
    """LUT layouts that fit in <= 7 bits and shrink the tensor, smallest first."""
    data = np.asarray(t.data)
    if data.ndim == 0 or data.size == 0:
        return []
    original = data.nbytes
    options = []
    for axis in _lut_axes(t, data.ndim):
        if axis is None:
            distinct, channels = len(np.unique(data)), 1
        else:
            moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
            distinct, channels = max(len(np.unique(row)) for row in moved), data.shape[axis]
        bits = _bits(distinct)
        if bits > MAX_LUT_BITS:
            continue
        nbytes = math.ceil(data.size * bits / 8) + _DCM_BYTES + channels * distinct * data.itemsize
        if nbytes < original:
            options.append(_Option(bits, axis, nbytes))
    return sorted(options, key=lambda o: o.nbytes)


def _compressible(sg: Subgraph) -> list[Tensor]:
    """Constant tensors read by some op (weights, biases); shape and axis operands are too small to
    shrink and are filtered by :func:`_lut_options`."""
    read = {i for op in sg.operators for i in op.inputs if i >= 0}
    return [
        t for t in sg.tensors
        if t.data is not None and t.index in read and t.dtype in _TFLM_DTYPES and np.shape(t.data) == t.shape
    ]


def _compress_with(tflite: bytes, chosen: dict[int, _Option]) -> bytes:
    _, compression = _tflm()
    from tflite_micro.tensorflow.lite.micro.compression import spec

    specs = [
        spec.Tensor(0, index, [spec.LookUpTableCompression(
            option.bits, spec.PerTensor() if option.axis is None else spec.PerChannel(option.axis))])
        for index, option in sorted(chosen.items())
    ]
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        compressed = bytes(compression.compress(tflite, specs))
    from kopt.export import micro_trim

    return micro_trim.trimmed(compressed, (micro_trim.DECODE_INPUTS,)) or compressed


def compress(
    tflite: TFLiteSource,
    *,
    x: Any = None,
    samples: int = DEFAULT_VERIFY_SAMPLES,
    seed: int = 0,
    warn: bool = True,
    trim: bool = True,
) -> MicroCompression:
    """LUT-compress every tensor of ``tflite`` whose distinct values fit in <= 7 bits, keeping each
    only if the TFLM interpreter's outputs stay bit-identical to the uncompressed file.

    First (``trim=True``) the file loses what TFLM does not read (:mod:`kopt.export.micro_trim`:
    per-channel zero-point arrays, per-channel bias scales, converter metadata), each trim kept
    only if TFLM's outputs stay bit-identical; the result is then for TFLM only.

    Args:
        tflite: an (integer) ``.tflite``, bytes or path.
        x: inputs to verify on (float values are quantized like the model's input); padded to
            ``samples`` with random inputs over the input's full range.
        samples: how many batch-1 inputs to compare outputs on.
        seed: seeds the random inputs.
        warn: warn naming every tensor that had to stay uncompressed.
        trim: leave out what TFLM does not read (verified like the tensors).
    """
    original = read_bytes(tflite)
    model = load(original)
    if len(model.subgraphs) != 1:
        raise MicroError(f"compress handles one-subgraph models; this one has {len(model.subgraphs)}")
    inputs = sample_inputs(model, x, count=samples, seed=seed)
    reference = run_micro(model, inputs)
    raw, trims, untrimmed = _trimmed(original, inputs, reference) if trim else (original, (), ())

    chosen: dict[int, _Option] = {}
    compressed: list[CompressedTensor] = []
    skipped: list[SkippedTensor] = []
    for t in _compressible(model.main):
        options = _lut_options(t)
        if not options:
            continue
        failures = []
        for option in options:
            ok, detail = _try(raw, {t.index: option}, inputs, reference)
            if ok:
                chosen[t.index] = option
                compressed.append(CompressedTensor(
                    t.index, t.name, t.shape, option.bits, option.axis, int(np.asarray(t.data).nbytes), option.nbytes))
                break
            layout = "per tensor" if option.axis is None else f"per channel axis {option.axis}"
            failures.append(f"{option.bits}-bit {layout}: {detail}")
        else:
            skipped.append(SkippedTensor(t.index, t.name, "; ".join(failures)))

    result = raw
    if chosen:
        ok, detail = _try(raw, chosen, inputs, reference)
        if not ok:  # each alone was exact, together they are not: keep the largest exact prefix
            kept: dict[int, _Option] = {}
            for index, option in sorted(chosen.items(), key=lambda item: -item[1].nbytes):
                if _try(raw, {**kept, index: option}, inputs, reference)[0]:
                    kept[index] = option
                else:
                    name = model.main.tensors[index].name
                    skipped.append(SkippedTensor(index, name, f"exact alone, not with the others ({detail})"))
            chosen = kept
            compressed = [c for c in compressed if c.index in kept]
        result = _compress_with(raw, chosen) if chosen else raw
    if warn and skipped:
        warnings.warn(
            "kopt.export.micro.compress: these tensors stay uncompressed because TFLM's outputs were not "
            "bit-identical with them compressed: " + "; ".join(f"'{s.name}' ({s.reason})" for s in skipped),
            KoptRuntimeWarning,
            stacklevel=2,
        )
    return MicroCompression(result, len(original), tuple(compressed), tuple(skipped), len(inputs), trims, untrimmed)


def _trimmed(raw: bytes, inputs, reference) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """``raw`` with every trim of :data:`micro_trim.TRIMS` that keeps TFLM's outputs bit-identical."""
    from kopt.export import micro_trim

    kept: list[micro_trim.Trim] = []
    applied, refused = [], []
    result = raw
    for trim in micro_trim.TRIMS:
        candidate = micro_trim.trimmed(raw, (*kept, trim))
        if candidate is None or len(candidate) >= len(result):
            continue
        try:
            ok, worst = _identical(reference, run_micro(candidate, inputs))
            detail = f"outputs differ by up to {worst:g}"
        except MicroError as error:
            ok, detail = False, str(error)[:200]
        if ok:
            kept.append(trim)
            applied.append(f"{trim.name} ({len(result) - len(candidate)} B)")
            result = candidate
        else:
            refused.append(f"{trim.name}: {detail}")
    return result, tuple(applied), tuple(refused)


def _try(raw: bytes, chosen: dict[int, _Option], inputs, reference) -> tuple[bool, str]:
    try:
        candidate = _compress_with(raw, chosen)
        outputs = run_micro(candidate, inputs)
    except Exception as error:  # noqa: BLE001 - a failed layout is reported, the tensor stays as it was
        return False, f"{type(error).__name__}: {str(error)[:200]}"
    ok, worst = _identical(reference, outputs)
    return ok, "bit-identical" if ok else f"outputs differ by up to {worst:g}"


# ----------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class MicroOp:
    """One operator as TFLM sees it."""

    index: int
    op: str
    supported: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MicroReport:
    """What TFLite Micro makes of a model: ops, flash (the file) and arena (RAM) bytes."""

    ops: tuple[MicroOp, ...]
    flash_bytes: int
    arena_bytes: int | None
    recorded_arena_bytes: int | None = None
    errors: tuple[str, ...] = ()
    compressed_tensors: int = 0
    sparse_tensors: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def runs(self) -> bool:
        """TFLM loaded and ran the model."""
        return not self.errors and self.arena_bytes is not None

    @property
    def unsupported(self) -> tuple[MicroOp, ...]:
        return tuple(op for op in self.ops if not op.supported)

    def fits(self, max_flash_bytes: int | None = None, max_arena_bytes: int | None = None) -> bool:
        """The model runs in TFLM within the given flash and arena limits."""
        if not self.runs:
            return False
        if max_flash_bytes is not None and self.flash_bytes > max_flash_bytes:
            return False
        return max_arena_bytes is None or (self.arena_bytes or 0) <= max_arena_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes,
            "recorded_arena_bytes": self.recorded_arena_bytes,
            "compressed_tensors": self.compressed_tensors,
            "sparse_tensors": list(self.sparse_tensors),
            "errors": list(self.errors),
            "ops": [op.to_dict() for op in self.ops],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        counts: dict[tuple[str, str], int] = {}
        for op in self.ops:
            key = (op.op, "supported" if op.supported else op.reason)
            counts[key] = counts.get(key, 0) + 1
        width = max([len("Operator")] + [len(op) for op, _ in counts]) + 2
        lines = [f"{'Operator':<{width}} {'Count':<10} Status", ""]
        lines += [f"{op:<{width}} {n:<10} {status}" for (op, status), n in counts.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = "runs" if self.runs else "does NOT run"
        arena = f"{self.arena_bytes} bytes" if self.arena_bytes is not None else "unknown"
        head = [
            f"TFLite Micro check{f' of {self.source}' if self.source else ''}: {verdict} in TFLM",
            (f"Flash (model file): {self.flash_bytes} bytes, of which {self.compressed_tensors} tensor(s) "
             "LUT-compressed (DECODE ops)"),
            (f"Arena (tensor RAM): {arena} needed to load and run; TFLM's recording allocator counts "
            f"{self.recorded_arena_bytes} bytes in use"),
        ]
        head += [f"Error: {e}" for e in self.errors]
        return "\n".join(head + ["", self.table()])


def check_micro(tflite: TFLiteSource) -> MicroReport:
    """Load ``tflite`` into the TFLM interpreter, run it once on zeros and report ops, flash and arena."""
    model = load(tflite)
    source = os.fspath(tflite) if isinstance(tflite, (str, os.PathLike)) else ""
    sg = model.main
    sparse = sparse_tensor_names(model.raw)
    errors: list[str] = []
    if len(model.subgraphs) > 1:
        errors.append(f"{len(model.subgraphs)} subgraphs: kopt checks the first only")
    missing: str | None = None
    arena: int | None = None
    recorded: int | None = None
    try:
        interpreter = _Interpreter(model.raw, model)
        zeros = [np.zeros(shape, dtype or np.float32) for shape, dtype in
                 zip(interpreter.input_shapes, interpreter.input_dtypes)]
        interpreter.outputs(zeros)
        recorded = interpreter.recorded_arena_bytes()
        arena = minimal_arena_bytes(model, start=recorded)
    except MicroError as error:
        found = _MISSING_OP.search(str(error))
        missing = found.group(1) if found else None
        errors.append(str(error))
    if sparse:
        errors.append(f"sparse tensors {list(sparse)}: TFLM has no sparse kernels; export without sparse=True")
    first_missing = next((op.index for op in sg.operators if missing and _label(op) == missing), None)
    ops = []
    for op in sg.operators:
        if arena is not None or (first_missing is not None and op.index < first_missing):
            ops.append(MicroOp(op.index, _label(op), True))
        elif missing is not None and _label(op) == missing:
            ops.append(MicroOp(op.index, _label(op), False, "not in TFLM's op resolver"))
        else:
            ops.append(MicroOp(op.index, _label(op), False, "not checked: TFLM stopped before this op"))
    decodes = sum(op.op == "DECODE" for op in ops)
    return MicroReport(tuple(ops), model.size_bytes, arena, recorded, tuple(errors), decodes, sparse, source)


def _label(op) -> str:
    """``DECODE`` for TFLM's decompression op, the op's usual label otherwise."""
    return "DECODE" if op.custom_code == "TFLM_DECODE" else op.label


def sparse_tensor_names(tflite: TFLiteSource) -> tuple[str, ...]:
    """Names of the tensors stored in TFLite's sparse format (``Tensor.sparsity`` set)."""
    from kopt.export.flatbuffer import read_object

    obj = read_object(tflite)
    return tuple(
        t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        for t in (obj.subgraphs[0].tensors or []) if getattr(t, "sparsity", None) is not None
    )
