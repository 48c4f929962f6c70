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

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


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
            evidence="Coral table; uint8<->int8 I/O QUANTIZE mapped in keras_lstm_mnist_ptq, an int8->int8 requantize"
            " inside the graph mapped in movenet_single_pose_lightning_ptq (float->int8 stays on the CPU by the dtype"
            " rule); v3 fails (#879)",
        ),
        "REDUCE_MAX": OpRule(2, 0, ("not_on_batch_axis",), evidence="Coral table; mapped in logs"),
        "REDUCE_MIN": OpRule(2, 0, ("not_on_batch_axis",), evidence="Coral table"),
        "RELU": OpRule(2, 0, evidence="Coral table"),
        "RELU6": OpRule(2, 0, evidence="Coral table"),
        "RELU_N1_TO_1": OpRule(1, 0, evidence="Coral table"),
        "RESHAPE": OpRule(1, 1, advisories=("large_tensor",), evidence="Coral table"),
        "RESIZE_BILINEAR": OpRule(
            3,
            3,
            ("resize_integer_factor",),
            advisories=("resize_downscale", "large_tensor"),
            evidence="Coral table (size-dependent precision limit); precision threshold (#31, #63); x2 half-pixel"
            " resizes mapped in movenet, a 1x1->33x33 align_corners resize left on the CPU in deeplabv3_mnv2",
        ),
        "RESIZE_NEAREST_NEIGHBOR": OpRule(
            3,
            0,
            ("resize_integer_factor",),
            advisories=("resize_downscale", "large_tensor"),
            evidence="Coral table (same limit as RESIZE_BILINEAR); mapped in compiler-16 logs",
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
        "DENSIFY": "a weight stored sparse (to_tflite(sparse=True)) is expanded on the CPU at run time; the Edge TPU"
        " runs dense int8 matrices and gains nothing from zeros: compile the dense file",
        "SQUARE": "keras.ops.normalize / UnitNormalization leave a float island; use tf.math.l2_normalize",
        "BIDIRECTIONAL_SEQUENCE_LSTM": "only unidirectional LSTMs map",
        "EXP": "EXP is not on the Edge TPU's op list",
        "ARG_MAX": "compute the arg max on the host",
        "CAST": "a dtype change stays on the CPU",
        "GATHER_ND": "the Edge TPU has no gather; run the post-processing head on the host",
        "UNPACK": "UNPACK is not on the Edge TPU's op list",
        "FLOOR_DIV": "integer arithmetic of a post-processing head runs on the host",
        "DIV": "DIV is not on the Edge TPU's op list: multiply by a constant reciprocal",
        "SQRT": "SQRT is not on the Edge TPU's op list",
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
        "resize_integer_factor": "a whole-number factor on each upscaled spatial axis (out/in, or (out-1)/(in-1) with"
        " align_corners)",
    }
)

#: Where each limit comes from (Coral's "TensorFlow models on the Edge TPU" page, issues, reference pairs).
LIMIT_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "no_fused_activation": "Coral op table: AveragePool2d, MaxPool2d, Concatenation \"No fused activation function\"",
        "same_dilation": "Coral op table: Conv2d, DepthwiseConv2d \"Must use the same dilation in x and y dimensions\"",
        "constant_parameters": "Coral model requirements: \"Model parameters (such as bias tensors) are constant at"
        " compile-time\"; google-coral/edgetpu#25",
        "weight_zero_point": "TFLite int8 quantization spec (weights symmetric, zero_point 0); conv.cc prepare check",
        "bias_scale": "TFLite int8 spec; tensorflow/tensorflow#36705 (the compiler runs TFLite's prepare check)",
        "fc_default_weights_format": "Coral op table: FullyConnected \"Only the default format is supported\"",
        "fc_output_one_dimensional": "Coral op table: FullyConnected \"Output tensor is one-dimensional\"",
        "not_on_batch_axis": "Coral op table: Mean, Pack, ReduceMax/Min, no reduction/packing along the batch dimension",
        "mean_channel_multiple": "Coral op table: Mean \"If a z-reduction, the z-dimension must be multiple of 4\"",
        "no_batch_padding": "Coral op table: Pad \"No padding in batch dimension\"",
        "prelu_alpha_innermost": "Coral op table: PReLU \"Alpha must be 1-dimensional\" (only the innermost dimension > 1)",
        "constant_input_is_zero_pad": "Coral op table: Concatenation, a constant input must be an all-zero second input",
        "softmax_one_dimensional": "Coral 2019 op table: Softmax, 1-D input only",
        "softmax_max_elements": "Coral 2019 op table: Softmax, at most 16 000 elements",
        "fixed_output_params": "TFLite int8 quantization spec (fixed output scale/zero_point)",
        "strided_slice_unit_strides": "Coral 2019 op table: StridedSlice, strides of 1 only",
        "strided_slice_no_masks": "Coral 2019 op table: StridedSlice, no ellipsis or new-axis mask",
        "resize_integer_factor": "Coral op table: ResizeBilinear/ResizeNearestNeighbor \"Depending on input/output"
        " size, this operation may not be mapped to the Edge TPU to avoid loss in precision\"; google-coral/edgetpu#31"
        " and #63 (\"Image-interpolation layer won't run precisely enough\"); Coral's pairs: x2 (half-pixel) mapped in"
        " movenet_single_pose_lightning_ptq, 1x1->33x33 with align_corners (no defined factor) on the CPU in"
        " deeplabv3_mnv2_pascal_quant",
    }
)

#: How the compiler splits a graph between the Edge TPU and the CPU (one rule each, with its source).
PARTITIONING: Mapping[str, str] = MappingProxyType(
    {
        "single_segment": "All mapped ops form one Edge TPU custom op (\"the Edge TPU compiler cannot partition the"
        " model more than once\": Coral, \"TensorFlow models on the Edge TPU\" / Axis ARTPEC-7 tips); every Coral"
        " compiled reference holds exactly one edgetpu-custom-op.",
        "downstream_of_cpu": "An op that depends, through an op left on the CPU, on the Edge TPU segment stays on the"
        " CPU even when supported (\"the unsupported operator and every operator after it runs on the CPU\", Axis"
        " ARTPEC-7 tips after Coral's page; compiler log status \"More than one subgraph is not supported\", google-coral/edgetpu#461).",
        "independent_branches": "'After' means downstream in the data flow, not later in the file: supported ops on"
        " branches that do not depend on the CPU op still map (movenet_single_pose_lightning_ptq: three heads"
        " after the first ARG_MAX map, 98 of 157 ops; deeplabv3_mnv2_pascal_quant: the ASPP 1x1 conv beside the"
        " unmapped resize maps).",
        "leading_cpu_ops": "Unsupported ops before the segment (that do not depend on it), such as a CAST/QUANTIZE of a"
        " float or uint8 input, run on the CPU as pre-processing and feed the segment (movenet).",
    }
)

#: Legal but risky conditions, reported as warnings.
ADVISORIES: Mapping[str, str] = MappingProxyType(
    {
        "per_channel_fully_connected": "per-channel FULLY_CONNECTED weights: unknown whether compiler 16 maps them"
        " (Coral's models use per-tensor; kopt.export.to_tflite emits per-tensor)",
        "quantize_not_at_io": "QUANTIZE inside the graph (a requantize between two ranges): an extra op that shared"
        " ranges avoid; the compiler maps it unless an op upstream keeps it on the CPU (Coral's movenet)",
        "large_tensor": "large tensor: the compiler may leave this op on the CPU",
        "may_stay_on_cpu": "the compiler may leave this op on the CPU for some shapes",
        "resize_downscale": "a downscaling resize: no Coral reference shows whether the compiler maps it (the"
        " size-dependent precision limit of Coral's op table may keep it on the CPU)",
        "unverified_version": "op version newer than any seen in a model Coral compiled",
        "sparse_tensor": "a weight stored in TFLite's sparse encoding (to_tflite(sparse=True)): Coral documents no"
        " support for sparse tensors and no Coral-compiled model has one; compile the dense file for the Edge TPU"
        " (the Edge TPU gains nothing from zeros: it runs dense int8 matrices)",
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
