"""``check_edgetpu``: a static approximation of Coral's ``edgetpu_compiler`` on a ``.tflite``.

No Edge TPU compiler runs on this machine (or installs from PyPI), so kopt predicts what it
would do from the published rules, kept as data in :mod:`kopt.export.edgetpu_rules`:

1. model-level: one subgraph, static shapes, op versions the compiler can parse. Breaking one
   of these makes the whole compilation fail, so nothing is mapped;
2. per op: the op is on Coral's list, its tensors are int8/uint8 (int32 only for constant
   parameters such as a bias), only the 3 innermost dimensions of an activation exceed 1, and
   the op's own limits hold;
3. the single-segment rule (:data:`kopt.export.edgetpu_rules.PARTITIONING`): the mapped ops
   become one custom op, so no data path may leave the segment through a CPU op and come back.
   An op that depends on the segment through an op left on the CPU stays on the CPU even when
   supported ("More than one subgraph is not supported"); supported ops on branches that do not
   depend on such an op still map, wherever they sit in the file (Coral's compiled movenet maps
   three heads that run after its first ARG_MAX). Unsupported ops that do not depend on the
   segment (e.g. a QUANTIZE from a float input) run on the CPU as pre-processing.

An already compiled model (one ``edgetpu-custom-op``) is reported as the compiler left it: the
custom op mapped, every other op on the CPU.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kopt.export import edgetpu_rules as rules
from kopt.export.flatbuffer import Operator, Subgraph, Tensor, TFLiteModel, TFLiteSource, load

MAPPED = "Mapped to Edge TPU"


@dataclass(frozen=True)
class OpVerdict:
    """The checker's verdict on one operator (in execution order)."""

    index: int
    op: str
    version: int
    mapped: bool
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    tensor: str = ""

    @property
    def status(self) -> str:
        """``"mapped"``, or the first reason the op stays on the CPU."""
        return "mapped" if self.mapped else self.reasons[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.op,
            "version": self.version,
            "mapped": self.mapped,
            "status": self.status,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "tensor": self.tensor,
        }


@dataclass(frozen=True)
class EdgeTPUReport:
    """Per-op Edge TPU verdicts for one model, printable like the compiler's log."""

    ops: tuple[OpVerdict, ...]
    errors: tuple[str, ...] = ()
    compiled: bool = False
    source: str = field(default="", compare=False)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def num_mapped(self) -> int:
        return sum(v.mapped for v in self.ops)

    @property
    def fully_mapped(self) -> bool:
        return not self.errors and bool(self.ops) and all(v.mapped for v in self.ops)

    @property
    def unmapped(self) -> tuple[OpVerdict, ...]:
        return tuple(v for v in self.ops if not v.mapped)

    @property
    def first_unsupported(self) -> OpVerdict | None:
        """The first op that is unmapped for a reason of its own (not just stranded after another)."""
        for verdict in self.ops:
            if not verdict.mapped and not verdict.reasons[0].startswith((_STRANDED, _UNCOMPILABLE)):
                return verdict
        return None

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f"op #{v.index} {v.op}: {w}" for v in self.ops for w in v.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fully_mapped": self.fully_mapped,
            "num_mapped": self.num_mapped,
            "num_ops": self.num_ops,
            "compiled": self.compiled,
            "errors": list(self.errors),
            "ops": [v.to_dict() for v in self.ops],
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """Operator / count / status rows, grouped like ``edgetpu_compiler -s`` prints them."""
        groups: Counter[tuple[str, str]] = Counter()
        for v in self.ops:
            # The rule, without the tensor or op it names: one row per op and rule, as the compiler prints.
            groups[(v.op, MAPPED if v.mapped else _rule_of(v.reasons[0]))] += 1
        width = max([len("Operator")] + [len(op) for op, _ in groups]) + 2
        lines = [f"{'Operator':<{width}} {'Count':<10} Status", ""]
        for (op, status), count in groups.items():
            lines.append(f"{op:<{width}} {count:<10} {status}")
        return "\n".join(lines)

    def details(self) -> str:
        """One line per op, in execution order, with every reason and warning."""
        lines = []
        for v in self.ops:
            status = MAPPED if v.mapped else "; ".join(v.reasons)
            lines.append(f"#{v.index:<4} {v.op} v{v.version}  [{_short(v.tensor)}]  {status}")
            lines.extend(f"        warning: {w}" for w in v.warnings)
        return "\n".join(lines)

    def __str__(self) -> str:
        verdict = "fully mapped" if self.fully_mapped else "NOT fully mapped"
        source = f" of {self.source}" if self.source else ""
        head = [f"Edge TPU check{source}: {self.num_mapped}/{self.num_ops} operations mapped ({verdict})"]
        head += [f"Model error: {e}" for e in self.errors]
        first = self.first_unsupported
        if first is not None:
            head.append(
                f"First op left on the CPU: #{first.index} {first.op} [{_short(first.tensor)}]: {first.reasons[0]}"
            )
        head += [
            "",
            f"Number of operations that will run on Edge TPU: {self.num_mapped}",
            f"Number of operations that will run on CPU: {self.num_ops - self.num_mapped}",
            "",
            self.table(),
        ]
        if self.warnings:
            head += ["", "Warnings:"] + [f"  {w}" for w in self.warnings]
        return "\n".join(head)


_STRANDED = "More than one subgraph is not supported"
_UNCOMPILABLE = "the model cannot be compiled (see the model errors)"
_LEFT_BY_COMPILER = "left on the CPU by the Edge TPU compiler (the model is already compiled)"


def _rule_of(reason: str) -> str:
    """A reason without what follows its first top-level ': ' (the tensor, shape or op it names)."""
    depth = 0
    for i, char in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and reason.startswith(": ", i):
            return reason[:i]
    return reason


def _short(tensor_name: str) -> str:
    """The first of the ';'-joined names TFLite gives fused tensors (usually the layer's op)."""
    return tensor_name.split(";")[0]


def check_edgetpu(tflite: TFLiteSource) -> EdgeTPUReport:
    """Predict which ops of a ``.tflite`` (bytes or path) Coral's Edge TPU compiler maps."""
    model = load(tflite)
    source = os.fspath(tflite) if isinstance(tflite, (str, os.PathLike)) else ""
    if not model.subgraphs:
        return EdgeTPUReport(ops=(), errors=("the model has no subgraph",), source=source)
    sg = model.main
    errors = _model_errors(model)
    compiled = any(op.custom_code == rules.COMPILED_CUSTOM_CODE for op in sg.operators)

    verdicts: list[OpVerdict] = []
    flow = _SegmentFlow()
    for op in sg.operators:
        reasons, warnings = _op_problems(sg, op)
        if compiled and op.custom_code != rules.COMPILED_CUSTOM_CODE:
            reasons = [_LEFT_BY_COMPILER] + reasons  # the compiler already decided
        if errors:
            reasons = reasons + [_UNCOMPILABLE]
        blocker = flow.blocker(op)
        if not reasons and blocker is not None:
            reasons = [f"{_STRANDED}: it depends on op #{blocker.index} {blocker.label}, which runs on the CPU after "
                       + "the Edge TPU segment"]
        mapped = not reasons
        flow.record(op, mapped)
        tensor = sg.tensors[op.outputs[0]].name if op.outputs else ""
        verdicts.append(OpVerdict(op.index, op.label, op.version, mapped, tuple(reasons), tuple(warnings), tensor))
    return EdgeTPUReport(ops=tuple(verdicts), errors=tuple(errors), compiled=compiled, source=source)


class _SegmentFlow:
    """Follows, tensor by tensor, whether data has left the Edge TPU segment through a CPU op.

    The compiler turns the mapped ops into one custom op, so a mapped op may not consume data that
    went segment -> CPU op -> here (the custom op would have to wait for its own output). Ops are
    visited in execution order, which TFLite guarantees is a topological order.
    """

    def __init__(self) -> None:
        self._from_segment: set[int] = set()  # tensors computed (transitively) from a mapped op
        self._after_cpu: dict[int, Operator] = {}  # tensor -> the CPU op through which it left the segment

    def blocker(self, op: Operator) -> Operator | None:
        """The CPU op (downstream of the segment) this op depends on, if any."""
        return next((self._after_cpu[i] for i in op.inputs if i in self._after_cpu), None)

    def record(self, op: Operator, mapped: bool) -> None:
        blocker = self.blocker(op)
        from_segment = mapped or any(i in self._from_segment for i in op.inputs)
        for i in op.outputs:
            if from_segment:
                self._from_segment.add(i)
            if blocker is not None:
                self._after_cpu[i] = blocker
            elif not mapped and from_segment:
                self._after_cpu[i] = op


# ----------------------------------------------------------------------------- model level


def _model_errors(model: TFLiteModel) -> list[str]:
    errors = []
    if len(model.subgraphs) != 1:
        errors.append(
            f"{len(model.subgraphs)} subgraphs: the compiler needs a single subgraph "
            "(control flow such as WHILE/IF adds subgraphs)"
        )
    sg = model.main
    used = sorted({i for op in sg.operators for i in op.inputs + op.outputs if i >= 0})
    dynamic = [sg.tensors[i] for i in used if sg.tensors[i].is_dynamic]
    if dynamic:
        t = dynamic[0]
        errors.append(
            f"{len(dynamic)} dynamic-sized tensor(s), e.g. '{_short(t.name)}' with shape signature "
            f"{list(t.shape_signature or ())}: the compiler only accepts static shapes "
            "(convert with a static batch size of 1)"
        )
    seen = set()
    for op in sg.operators:
        rule = rules.EDGETPU_OPS.get(op.name)
        if rule is not None and op.version > rule.max_version and (op.name, op.version) not in seen:
            seen.add((op.name, op.version))
            errors.append(
                f"{op.name} version {op.version} is newer than the compiler can parse (max {rule.max_version}): "
                "compilation would stop with \"Didn't find op for builtin opcode\""
            )
    return errors


# ----------------------------------------------------------------------------- op level


def _op_problems(sg: Subgraph, op: Operator) -> tuple[list[str], list[str]]:
    if op.name == "CUSTOM":
        if op.custom_code == rules.COMPILED_CUSTOM_CODE:
            return [], []
        return [f"Operation not supported: custom op '{op.custom_code}' runs on the CPU"], []
    rule = rules.EDGETPU_OPS.get(op.name)
    if rule is None:
        hint = rules.UNSUPPORTED_OP_HINTS.get(op.name)
        return [f"Operation not supported{f' ({hint})' if hint else ''}"], []
    reasons = _dtype_problems(sg, op, rule) + _rank_problems(sg, op)
    if op.version > rule.max_version:
        reasons.insert(0, f"op version {op.version} is newer than the compiler can parse (max {rule.max_version})")
    for limit in rule.limits:
        problem = _LIMIT_CHECKS[limit](sg, op)
        if problem:
            reasons.append(f"requires {rules.LIMITS[limit]}: {problem}")
    warnings = []
    if op.version > rule.verified_version:
        seen = f"up to v{rule.verified_version}" if rule.verified_version else "none"
        warnings.append(f"{rules.ADVISORIES['unverified_version']} (v{op.version}; Coral-compiled models have {seen})")
    for advisory in rule.advisories:
        if _ADVISORY_CHECKS[advisory](sg, op):
            warnings.append(rules.ADVISORIES[advisory])
    if any(t.is_sparse for _, t in _op_tensors(sg, op)):
        warnings.append(rules.ADVISORIES["sparse_tensor"])
    return reasons, warnings


def _op_tensors(sg: Subgraph, op: Operator) -> list[tuple[str, Tensor]]:
    named = [(f"input {k}", sg.tensors[i]) for k, i in enumerate(op.inputs) if i >= 0]
    return named + [(f"output {k}", sg.tensors[i]) for k, i in enumerate(op.outputs)]


def _dtype_problems(sg: Subgraph, op: Operator, rule: rules.OpRule) -> list[str]:
    problems = []
    for role, t in _op_tensors(sg, op):
        allowed = rules.CONSTANT_DTYPES if t.is_constant else rules.ACTIVATION_DTYPES + rule.extra_dtypes
        if t.dtype not in allowed:
            kind = "constant " if t.is_constant else ""
            problems.append(f"Operation is working on an unsupported data type: {kind}{role} '{t.name}' is {t.dtype}")
        elif t.dtype in ("INT8", "UINT8") and not t.quantization.is_quantized:
            problems.append(f"Model not quantized: {role} '{t.name}' is {t.dtype} without quantization parameters")
    return problems


def _rank_problems(sg: Subgraph, op: Operator) -> list[str]:
    for role, t in _op_tensors(sg, op):
        outer = t.shape[: -rules.MAX_INNER_DIMS] if len(t.shape) > rules.MAX_INNER_DIMS else ()
        if not t.is_constant and any(d != 1 for d in outer):
            return [
                (
                    f"Tensor has unsupported rank (up to {rules.MAX_INNER_DIMS} innermost dimensions mapped): "
                    f"{role} '{t.name}' has shape {list(t.shape)}"
                )
            ]
    return []


# ----------------------------------------------------------------------------- per-op limits
# Each check returns None when the limit holds, else what breaks it.


def _input(sg: Subgraph, op: Operator, position: int) -> Tensor | None:
    return sg.tensor(op.inputs[position]) if position < len(op.inputs) else None


def _real_zero(t: Tensor) -> np.ndarray:
    """Per-element zero point of a constant tensor (0 when not quantized)."""
    zp = t.quantization.zero_points
    if zp.size <= 1:
        return np.asarray(zp[0] if zp.size else 0)
    shape = [1] * t.data.ndim
    shape[t.quantization.axis] = zp.size
    return zp.reshape(shape)


def _axes(sg: Subgraph, op: Operator, axis_input: int, data_input: int) -> tuple[list[int], int] | None:
    axis_t, data_t = _input(sg, op, axis_input), _input(sg, op, data_input)
    if axis_t is None or data_t is None or not axis_t.is_constant:
        return None
    rank = len(data_t.shape)
    return [int(a) % rank if rank else int(a) for a in np.ravel(axis_t.data)], rank


def _check_no_fused_activation(sg: Subgraph, op: Operator) -> str | None:
    act = op.fused_activation
    return None if act in (None, "NONE") else f"fused {act}"


def _check_same_dilation(sg: Subgraph, op: Operator) -> str | None:
    h, w = op.option("dilationHFactor", 1), op.option("dilationWFactor", 1)
    return None if h == w else f"dilation {h} in y and {w} in x"


def _check_constant_parameters(sg: Subgraph, op: Operator) -> str | None:
    _, w_pos, b_pos = rules.WEIGHTED_OP_INPUTS[op.name]
    for role, pos in (("filter", w_pos), ("bias", b_pos)):
        t = _input(sg, op, pos)
        if t is not None and not t.is_constant:
            return f"Filter, bias, or other param is not constant at compile-time ({role} '{t.name}')"
    return None


def _check_weight_zero_point(sg: Subgraph, op: Operator) -> str | None:
    _, w_pos, _ = rules.WEIGHTED_OP_INPUTS[op.name]
    w = _input(sg, op, w_pos)
    if w is None or w.dtype != "INT8" or not w.quantization.is_quantized:
        return None  # legacy uint8 weights are asymmetric by design
    bad = np.flatnonzero(w.quantization.zero_points != 0)
    return None if bad.size == 0 else f"weights '{w.name}' have zero_point {int(w.quantization.zero_points[bad[0]])}"


def _check_bias_scale(sg: Subgraph, op: Operator) -> str | None:
    x_pos, w_pos, b_pos = rules.WEIGHTED_OP_INPUTS[op.name]
    x, w, b = _input(sg, op, x_pos), _input(sg, op, w_pos), _input(sg, op, b_pos)
    if b is None or x is None or w is None:
        return None
    if not (x.quantization.is_quantized and w.quantization.is_quantized and w.dtype in ("INT8", "UINT8")):
        return None  # float or hybrid op: the dtype rule already reports it
    if b.dtype != "INT32":
        return f"bias '{b.name}' is {b.dtype}"
    if not b.quantization.is_quantized:
        return f"bias '{b.name}' has no quantization parameters"
    expected = np.float64(x.quantization.scales[0]) * w.quantization.scales.astype(np.float64)
    actual = b.quantization.scales.astype(np.float64)
    if expected.size != actual.size and 1 not in (expected.size, actual.size):
        return f"bias '{b.name}' has {actual.size} scales for {expected.size} weight scales"
    tolerance = rules.BIAS_SCALE_RTOL * np.minimum(expected, actual)
    if np.any(np.abs(expected - actual) > tolerance):
        return (
            f"bias '{b.name}' scale {actual.ravel()[0]:.6g} differs from "
            f"input*weight scale {expected.ravel()[0]:.6g}"
        )
    return None


def _check_fc_default_weights_format(sg: Subgraph, op: Operator) -> str | None:
    fmt = op.option("weightsFormat", 0)
    return None if fmt == 0 else f"weights format {fmt} (shuffled)"


def _one_dimensional(t: Tensor) -> bool:
    return all(d == 1 for d in t.shape[:-1])


def _check_fc_output_one_dimensional(sg: Subgraph, op: Operator) -> str | None:
    out = sg.tensors[op.outputs[0]]
    if _one_dimensional(out):
        return None
    return (
        f"output shape {list(out.shape)} "
        "(a Dense on a >2-D tensor: use Flatten/GlobalAveragePooling or a 1x1 Conv2D)"
    )


def _check_not_on_batch_axis(sg: Subgraph, op: Operator) -> str | None:
    if op.name == "PACK":
        out = sg.tensors[op.outputs[0]]
        rank = len(out.shape)
        axes = [int(op.option("axis", 0)) % rank] if rank else []
    else:
        axis_input, data_input = (0, 1) if op.name == "SPLIT" else (1, 0)
        found = _axes(sg, op, axis_input, data_input)
        if found is None:
            return "the axis is not a compile-time constant"
        axes, rank = found
    return "operates along the batch dimension (axis 0)" if rank >= 2 and 0 in axes else None


def _check_mean_channel_multiple(sg: Subgraph, op: Operator) -> str | None:
    found = _axes(sg, op, 1, 0)
    if found is None:
        return "the reduction axes are not a compile-time constant"
    axes, rank = found
    channels = _input(sg, op, 0).shape[-1] if rank else 1
    if rank >= 2 and rank - 1 in axes and channels % rules.MEAN_CHANNEL_MULTIPLE:
        return f"reduces over {channels} channels"
    return None


def _check_no_batch_padding(sg: Subgraph, op: Operator) -> str | None:
    paddings = _input(sg, op, 1)
    if paddings is None or not paddings.is_constant:
        return "the paddings are not a compile-time constant"
    pads = np.asarray(paddings.data).reshape(-1, 2)
    return None if pads.shape[0] < 2 or not pads[0].any() else f"pads the batch dimension by {pads[0].tolist()}"


def _check_prelu_alpha_innermost(sg: Subgraph, op: Operator) -> str | None:
    alpha = _input(sg, op, 1)
    if alpha is None or _one_dimensional(alpha):
        return None
    return f"alpha '{alpha.name}' has shape {list(alpha.shape)} (Keras PReLU needs shared_axes=[1, 2])"


def _check_constant_input_is_zero_pad(sg: Subgraph, op: Operator) -> str | None:
    constants = [t for t in sg.input_tensors(op) if t is not None and t.is_constant]
    if not constants:
        return None
    if len(op.inputs) != 2:
        return f"a constant input among {len(op.inputs)} inputs"
    t = constants[0]
    return None if np.all(t.data == _real_zero(t)) else f"constant input '{t.name}' is not all zeros"


def _check_softmax_one_dimensional(sg: Subgraph, op: Operator) -> str | None:
    x = _input(sg, op, 0)
    return None if _one_dimensional(x) else f"input shape {list(x.shape)}"


def _check_softmax_max_elements(sg: Subgraph, op: Operator) -> str | None:
    x = _input(sg, op, 0)
    return None if x.size <= rules.SOFTMAX_MAX_ELEMENTS else f"{x.size} elements"


def _check_fixed_output_params(sg: Subgraph, op: Operator) -> str | None:
    out = sg.tensors[op.outputs[0]]
    q = out.quantization
    if out.dtype not in ("INT8", "UINT8") or not q.is_quantized:
        return None
    scale, zero_point = rules.FIXED_OUTPUT_PARAMS[op.name]
    zero_point += 128 if out.dtype == "UINT8" else 0
    if abs(q.scales[0] - scale) <= rules.BIAS_SCALE_RTOL * scale and int(q.zero_points[0]) == zero_point:
        return None
    return f"output scale {q.scales[0]:.6g}, zero_point {int(q.zero_points[0])} instead of {scale:.6g}, {zero_point}"


def _check_strided_slice_unit_strides(sg: Subgraph, op: Operator) -> str | None:
    strides = _input(sg, op, 3)
    if strides is None or not strides.is_constant:
        return "the strides are not a compile-time constant"
    return None if np.all(strides.data == 1) else f"strides {np.ravel(strides.data).tolist()}"


def _check_strided_slice_no_masks(sg: Subgraph, op: Operator) -> str | None:
    ellipsis, new_axis = op.option("ellipsisMask", 0), op.option("newAxisMask", 0)
    return None if not (ellipsis or new_axis) else f"ellipsis_mask {ellipsis}, new_axis_mask {new_axis}"


def _check_resize_integer_factor(sg: Subgraph, op: Operator) -> str | None:
    x, out = _input(sg, op, 0), sg.tensors[op.outputs[0]]
    if x is None or len(x.shape) != 4 or len(out.shape) != 4:
        return f"input shape {list(x.shape) if x is not None else None}, output shape {list(out.shape)}"
    align = bool(op.option("alignCorners", False))
    for axis, name in ((1, "height"), (2, "width")):
        size_in, size_out = x.shape[axis], out.shape[axis]
        if size_out <= size_in:
            continue  # identity or downscaling: no Coral reference constrains it (see the advisory)
        if align:
            size_in, size_out = size_in - 1, size_out - 1  # align_corners scales by (in-1)/(out-1)
        if size_in <= 0 or size_out % size_in:
            scaling = f"{x.shape[axis]} -> {out.shape[axis]}" + (" with align_corners" if align else "")
            return f"{name} {scaling} is not a whole-number upscaling"
    return None


_LIMIT_CHECKS: dict[str, Callable[[Subgraph, Operator], str | None]] = {
    "no_fused_activation": _check_no_fused_activation,
    "same_dilation": _check_same_dilation,
    "constant_parameters": _check_constant_parameters,
    "weight_zero_point": _check_weight_zero_point,
    "bias_scale": _check_bias_scale,
    "fc_default_weights_format": _check_fc_default_weights_format,
    "fc_output_one_dimensional": _check_fc_output_one_dimensional,
    "not_on_batch_axis": _check_not_on_batch_axis,
    "mean_channel_multiple": _check_mean_channel_multiple,
    "no_batch_padding": _check_no_batch_padding,
    "prelu_alpha_innermost": _check_prelu_alpha_innermost,
    "constant_input_is_zero_pad": _check_constant_input_is_zero_pad,
    "softmax_one_dimensional": _check_softmax_one_dimensional,
    "softmax_max_elements": _check_softmax_max_elements,
    "fixed_output_params": _check_fixed_output_params,
    "strided_slice_unit_strides": _check_strided_slice_unit_strides,
    "strided_slice_no_masks": _check_strided_slice_no_masks,
    "resize_integer_factor": _check_resize_integer_factor,
}


# ----------------------------------------------------------------------------- advisories


def _per_channel_fc(sg: Subgraph, op: Operator) -> bool:
    w = _input(sg, op, 1)
    return w is not None and w.quantization.per_channel


def _quantize_not_at_io(sg: Subgraph, op: Operator) -> bool:
    """An 8-bit -> 8-bit requantize between two ops (a float -> int8 QUANTIZE already fails the dtype rule)."""
    tensors = [t for t in sg.input_tensors(op) + sg.output_tensors(op) if t is not None and not t.is_constant]
    eight_bit = all(t.dtype in ("INT8", "UINT8") for t in tensors)
    return eight_bit and not (set(op.inputs) & set(sg.inputs) or set(op.outputs) & set(sg.outputs))


def _large_tensor(sg: Subgraph, op: Operator) -> bool:
    x, out = _input(sg, op, 0), sg.tensors[op.outputs[0]] if op.outputs else None
    return any(t is not None and t.size > rules.LARGE_TENSOR_ELEMENTS for t in (x, out))


def _resize_downscales(sg: Subgraph, op: Operator) -> bool:
    x, out = _input(sg, op, 0), sg.tensors[op.outputs[0]]
    return x is not None and len(x.shape) == len(out.shape) == 4 and any(
        out.shape[a] < x.shape[a] for a in (1, 2)
    )


_ADVISORY_CHECKS: dict[str, Callable[[Subgraph, Operator], bool]] = {
    "per_channel_fully_connected": _per_channel_fc,
    "quantize_not_at_io": _quantize_not_at_io,
    "large_tensor": _large_tensor,
    "may_stay_on_cpu": lambda sg, op: True,
    "resize_downscale": _resize_downscales,
}

assert set(_LIMIT_CHECKS) == set(rules.LIMITS), "every limit in edgetpu_rules needs a check"
assert set(_ADVISORY_CHECKS) | {"unverified_version", "sparse_tensor"} == set(rules.ADVISORIES)
