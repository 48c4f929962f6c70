"""The Edge TPU compiler's requirements, as data.

Everything the checker knows about the Edge TPU lives in this file; ``kopt/export/edgetpu.py``
only interprets it. Sources (see ``edgetpu-and-int8-spec.md``, section 2): Coral's
"TensorFlow models on the Edge TPU" page (current table as mirrored by Axis for the Edge TPU
based ARTPEC-7; 2019 table), compiler logs quoted in google-coral/edgetpu issues, and the op
versions found in Coral's own compiled reference models (google-coral/test_data).

How to read an :class:`OpRule`:

* ``max_version``: the newest version of the op believed to load in compiler 16. A newer version
  makes the compiler abort ("Didn't find op for builtin opcode ... Model could not be parsed"),
  which the checker reports as a model-level error.
* ``verified_version``: the newest version seen inside a model that Coral itself compiled (0 if
  never seen). Versions above it but within ``max_version`` are the ones TF 2.21 emits for int8
  and are accepted with an "unverified" advisory.
* ``limits``: names of per-op limits (see :data:`LIMITS`); failing one keeps the op off the TPU.
* ``advisories``: names of conditions that are legal but worth a warning (see :data:`ADVISORIES`).
* ``extra_dtypes``: dtypes a non-constant tensor of this op may have besides int8/uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class OpRule:
    max_version: int
    verified_version: int = 0
    limits: tuple[str, ...] = ()
    advisories: tuple[str, ...] = ()
    extra_dtypes: tuple[str, ...] = ()
    evidence: str = ""


_WEIGHTED = ("constant_parameters", "weight_zero_point", "bias_scale")

#: Ops the Edge TPU maps (spec 2.3), with version bounds (spec 2.4) and limits.
EDGETPU_OPS: Mapping[str, OpRule] = MappingProxyType(
    {
        "ADD": OpRule(2, 2, evidence="Coral table; mapped in compiler-16 logs"),
        "AVERAGE_POOL_2D": OpRule(2, 1, ("no_fused_activation",), evidence="Coral table"),
        "CONCATENATION": OpRule(
            2, 2, ("no_fused_activation", "constant_input_is_zero_pad"), evidence="Coral table"
        ),
        "CONV_2D": OpRule(3, 3, ("same_dilation",) + _WEIGHTED, evidence="Coral table; CONV_2D v6 fails (#631)"),
        "DEPTHWISE_CONV_2D": OpRule(3, 3, ("same_dilation",) + _WEIGHTED, evidence="Coral table"),
        "EXPAND_DIMS": OpRule(1, 0, evidence="Coral table (current)"),
        "FULLY_CONNECTED": OpRule(
            5,
            4,
            ("fc_default_weights_format", "fc_output_one_dimensional") + _WEIGHTED,
            advisories=("per_channel_fully_connected",),
            evidence="Coral table; FC v4 in Coral models, TF 2.21 emits v5 with keep_num_dims",
        ),
        "L2_NORMALIZATION": OpRule(2, 0, ("fixed_output_params",), evidence="Coral table"),
        "LOGISTIC": OpRule(2, 2, ("fixed_output_params",), evidence="Coral table"),
        "MAXIMUM": OpRule(2, 0, evidence="Coral table"),
        "MINIMUM": OpRule(2, 0, evidence="Coral table"),
        "MAX_POOL_2D": OpRule(2, 0, ("no_fused_activation",), evidence="Coral table"),
        "MEAN": OpRule(
            2,
            0,
            ("not_on_batch_axis", "mean_channel_multiple"),
            advisories=("large_tensor",),
            evidence="Coral table; big MEAN inputs may stay on the CPU (#461)",
        ),
        "MUL": OpRule(2, 2, evidence="Coral table"),
        "PACK": OpRule(2, 2, ("not_on_batch_axis",), evidence="Coral table (current)"),
        "PAD": OpRule(2, 2, ("no_batch_padding",), evidence="Coral table"),
        "PRELU": OpRule(1, 0, ("prelu_alpha_innermost",), evidence="Coral table (current)"),
        "QUANTIZE": OpRule(
            2,
            1,
            advisories=("quantize_not_at_io",),
            evidence="Coral table; uint8<->int8 I/O QUANTIZE mapped in keras_lstm_mnist_ptq; v3 fails (#879)",
        ),
        "REDUCE_MAX": OpRule(2, 0, ("not_on_batch_axis",), evidence="Coral table; mapped in logs"),
        "REDUCE_MIN": OpRule(2, 0, ("not_on_batch_axis",), evidence="Coral table"),
        "RELU": OpRule(2, 0, evidence="Coral table"),
        "RELU6": OpRule(2, 0, evidence="Coral table"),
        "RELU_N1_TO_1": OpRule(1, 0, evidence="Coral table"),
        "RESHAPE": OpRule(1, 1, advisories=("large_tensor",), evidence="Coral table"),
        "RESIZE_BILINEAR": OpRule(
            3, 3, advisories=("may_stay_on_cpu",), evidence="Coral table; precision threshold (#31)"
        ),
        "RESIZE_NEAREST_NEIGHBOR": OpRule(
            3, 0, advisories=("may_stay_on_cpu",), evidence="Coral table; mapped in compiler-16 logs"
        ),
        "RSQRT": OpRule(1, 0, evidence="newer Coral table [unconfirmed]; RSQRT v2 fails in compiler 15 (#384)"),
        "SLICE": OpRule(2, 0, evidence="Coral 2019 table"),
        "SOFTMAX": OpRule(
            2,
            2,
            ("softmax_one_dimensional", "softmax_max_elements", "fixed_output_params"),
            evidence="Coral 2019 table",
        ),
        "SPACE_TO_DEPTH": OpRule(2, 0, evidence="Coral 2019 table"),
        "SPLIT": OpRule(2, 1, ("not_on_batch_axis",), evidence="Coral 2019 table; mapped in logs"),
        "SQUARED_DIFFERENCE": OpRule(2, 0, evidence="newer Coral table [unconfirmed]"),
        "SQUEEZE": OpRule(1, 0, evidence="Coral 2019 table (relayout limit lifted in newer runtimes)"),
        "STRIDED_SLICE": OpRule(
            2, 0, ("strided_slice_unit_strides", "strided_slice_no_masks"), evidence="Coral 2019 table"
        ),
        "SUB": OpRule(2, 2, evidence="Coral 2019 table"),
        "SUM": OpRule(2, 0, ("not_on_batch_axis",), evidence="newer Coral table [unconfirmed]"),
        "TANH": OpRule(2, 0, ("fixed_output_params",), evidence="Coral 2019 table"),
        "TRANSPOSE": OpRule(
            2,
            0,
            advisories=("may_stay_on_cpu",),
            evidence="newer Coral table [unconfirmed]; mapped and unmapped in one compiler-16 log",
        ),
        "TRANSPOSE_CONV": OpRule(
            2, 0, _WEIGHTED, evidence="newer Coral table [unconfirmed]; v3/v4 fail to parse (#147, #845)"
        ),
        "UNIDIRECTIONAL_SEQUENCE_LSTM": OpRule(
            1,
            1,
            extra_dtypes=("INT16",),
            evidence="Coral table (unidirectional only); keras_lstm_mnist_ptq fully mapped",
        ),
    }
)

#: Why an op the compiler does not map is left out, with what to use instead (spec 2.3, 4.4).
UNSUPPORTED_OP_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "LEAKY_RELU": "use ReLU or PReLU",
        "HARD_SWISH": "use ReLU6, or swish (LOGISTIC + MUL)",
        "TILE": "Keras UpSampling2D lowers to TILE through rank-5 tensors; use Resizing(interpolation='nearest')",
        "DEQUANTIZE": "a conversion to float: part of the model is not int8",
        "GATHER": "the Edge TPU has no gather",
        "SQUARE": "keras.ops.normalize / UnitNormalization leave a float island; use tf.math.l2_normalize",
        "BIDIRECTIONAL_SEQUENCE_LSTM": "only unidirectional LSTMs map",
        "EXP": "EXP is not on the Edge TPU's op list",
        "ARG_MAX": "compute the arg max on the host",
        "CAST": "a dtype change stays on the CPU",
        "WHILE": "control flow creates extra subgraphs",
        "IF": "control flow creates extra subgraphs",
    }
)

#: Per-op limits: name -> what it requires (the reason text when it fails starts with this).
LIMITS: Mapping[str, str] = MappingProxyType(
    {
        "no_fused_activation": "no fused activation function",
        "same_dilation": "the same dilation factor in x and y",
        "constant_parameters": "filter and bias constant at compile time",
        "weight_zero_point": "int8 weights with zero_point 0 (TFLite int8 spec)",
        "bias_scale": "an int32 bias with scale = input_scale * weight_scale (relative tolerance 1e-6)",
        "fc_default_weights_format": "the default weights format",
        "fc_output_one_dimensional": "a one-dimensional output ([1, N])",
        "not_on_batch_axis": "no operation along the batch dimension",
        "mean_channel_multiple": "a channel count that is a multiple of 4 when reducing over channels",
        "no_batch_padding": "no padding in the batch dimension",
        "prelu_alpha_innermost": "an alpha with only its innermost dimension larger than 1",
        "constant_input_is_zero_pad": "a constant input only as the second of exactly 2 inputs, all zeros",
        "softmax_one_dimensional": "a one-dimensional input ([1, N])",
        "softmax_max_elements": "at most 16000 elements",
        "fixed_output_params": "the fixed output quantization of the TFLite int8 spec",
        "strided_slice_unit_strides": "all strides equal to 1",
        "strided_slice_no_masks": "ellipsis_mask and new_axis_mask equal to 0",
    }
)

#: Legal but risky conditions, reported as warnings.
ADVISORIES: Mapping[str, str] = MappingProxyType(
    {
        "per_channel_fully_connected": "per-channel FULLY_CONNECTED weights: unknown whether compiler 16 maps them"
        " (Coral's models use per-tensor; kopt.export.to_tflite emits per-tensor)",
        "quantize_not_at_io": "QUANTIZE inside the graph (a requantize from mismatched ranges)",
        "large_tensor": "large tensor: the compiler may leave this op on the CPU",
        "may_stay_on_cpu": "the compiler may leave this op on the CPU for some shapes",
        "unverified_version": "op version newer than any seen in a model Coral compiled",
    }
)

#: Dtypes a non-constant tensor may have (any op), and constant tensors (weights, bias, shape/axis params).
ACTIVATION_DTYPES: tuple[str, ...] = ("INT8", "UINT8")
CONSTANT_DTYPES: tuple[str, ...] = ("INT8", "UINT8", "INT32", "INT64")

#: Only the innermost 3 dimensions of an activation tensor may be larger than 1 (so batch 1).
MAX_INNER_DIMS = 3
SOFTMAX_MAX_ELEMENTS = 16000
MEAN_CHANNEL_MULTIPLE = 4
#: Elements above which RESHAPE / MEAN inputs get the "large_tensor" advisory (a heuristic: the
#: compiler's real threshold is not published).
LARGE_TENSOR_ELEMENTS = 1 << 20
BIAS_SCALE_RTOL = 1e-6

#: (scale, zero_point) of int8 outputs fixed by the TFLite spec; uint8 uses zero_point + 128.
FIXED_OUTPUT_PARAMS: Mapping[str, tuple[float, int]] = MappingProxyType(
    {
        "SOFTMAX": (1 / 256, -128),
        "LOGISTIC": (1 / 256, -128),
        "TANH": (1 / 128, 0),
        "L2_NORMALIZATION": (1 / 128, 0),
        "LOG_SOFTMAX": (16 / 256, 127),
    }
)

#: (activation input, weights input, bias input) positions of the weighted ops.
WEIGHTED_OP_INPUTS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "CONV_2D": (0, 1, 2),
        "DEPTHWISE_CONV_2D": (0, 1, 2),
        "FULLY_CONNECTED": (0, 1, 2),
        "TRANSPOSE_CONV": (2, 1, 3),
    }
)

#: Custom op code of the Edge TPU part of an already compiled model.
COMPILED_CUSTOM_CODE = "edgetpu-custom-op"
