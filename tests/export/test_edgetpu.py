"""check_edgetpu: Coral's ground truth, then every rule on models built (or edited) for it."""

import copy
import json

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from export_testing import (
    EDGETPU_PAIRS,
    compiler_mapped_ops,
    fixture_path,
    lower,
    mutate,
    op_positions,
    qat_model,
    uniform,
)
from keras import layers, ops

from kopt.export import check_edgetpu, to_tflite
from kopt.export.flatbuffer import load

SHAPE = (8, 8, 4)


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _verdict(report, op_name):
    return next(v for v in report.ops if v.op == op_name)


# ----------------------------------------------------------------------------- Coral references


@pytest.mark.backends
@pytest.mark.parametrize("name", EDGETPU_PAIRS)
def test_mapped_ops_are_the_compilers_op_for_op(name):
    mapped, left_on_cpu = compiler_mapped_ops(name)

    report = check_edgetpu(fixture_path(name))

    assert report.num_ops == len(mapped) + len(left_on_cpu)
    assert [v.index for v in report.ops if v.mapped] == mapped
    assert [v.index for v in report.unmapped] == left_on_cpu
    assert report.fully_mapped == (not left_on_cpu)
    assert not report.compiled and not report.errors


@pytest.mark.backends
@pytest.mark.parametrize("name", EDGETPU_PAIRS)
def test_each_cpu_op_has_its_own_reason_or_names_the_cpu_op_it_depends_on(name):
    sg = load(fixture_path(name)).main
    producer = {t: op.index for op in sg.operators for t in op.outputs}
    report = check_edgetpu(fixture_path(name))

    for verdict in report.unmapped:
        reason = verdict.reasons[0]
        if not reason.startswith("More than one subgraph is not supported"):
            continue
        blocker = int(reason.split("depends on op #")[1].split()[0])
        assert not report.ops[blocker].mapped
        ancestors, frontier = set(), [verdict.index]
        while frontier:  # walk the data flow upwards, independently of the checker
            parents = {producer[t] for t in sg.operators[frontier.pop()].inputs if t in producer}
            frontier += sorted(parents - ancestors)
            ancestors |= parents
        assert blocker in ancestors, (verdict.index, blocker)


DEEPLAB_CPU_REASONS = {  # the compiler's split of DeepLab v3, and why each op stays on the CPU
    64: "whole-number upscaling",  # RESIZE_BILINEAR 1x1 -> 33x33 with align_corners
    65: "depends on op #64",  # QUANTIZE (a requantize) after it
    66: "depends on op #64",  # CONCATENATION of the resized image pooling with the ASPP conv
    67: "depends on op #64",
    68: "depends on op #64",
    69: "depends on op #64",
    70: "depends on op #64",
    71: "Operation not supported",  # ARG_MAX
}


@pytest.mark.backends
def test_deeplab_reasons_name_the_resize_limit_and_the_ops_after_it():
    report = check_edgetpu(fixture_path("deeplabv3_mnv2_pascal_quant"))
    assert {v.index: v.reasons[0] for v in report.unmapped}.keys() == DEEPLAB_CPU_REASONS.keys()
    for verdict in report.unmapped:
        assert DEEPLAB_CPU_REASONS[verdict.index] in verdict.reasons[0], verdict
    assert report.first_unsupported.index == 64 and "1 -> 33 with align_corners" in report.first_unsupported.reasons[0]
    assert report.ops[62].mapped and report.ops[62].op == "CONV_2D"  # the ASPP branch beside the resize
    assert any("large tensor" in w for w in report.ops[70].warnings)  # 33x33 -> 513x513x21, on the CPU anyway


@pytest.mark.backends
def test_movenet_heads_after_the_first_cpu_op_still_map():
    report = check_edgetpu(fixture_path("movenet_single_pose_lightning_ptq"))
    first_cpu_after_segment = report.ops[89]
    assert first_cpu_after_segment.op == "ARG_MAX" and not first_cpu_after_segment.mapped
    later_mapped = [v for v in report.ops[90:] if v.mapped]
    assert [v.op for v in later_mapped].count("CONV_2D") == 6 and len(later_mapped) == 11
    requantize = report.ops[104]
    assert requantize.op == "QUANTIZE" and requantize.mapped  # int8 -> int8 inside the graph
    assert [w.split(":")[0] for w in report.warnings if "QUANTIZE inside the graph" in w] == ["op #104 QUANTIZE"]
    assert [v.mapped for v in report.ops[:2]] == [False, False]  # CAST, QUANTIZE of the uint8 input


@pytest.mark.backends
def test_compiled_model_is_recognised():
    report = check_edgetpu(fixture_path("split_concat_edgetpu"))
    assert report.compiled
    assert [v.op for v in report.ops] == ["CUSTOM:edgetpu-custom-op"]
    assert report.fully_mapped


@pytest.mark.backends
def test_foreign_custom_op_stays_on_cpu():
    def rename(model):
        model.operatorCodes[0].customCode = b"my-custom-op"

    report = check_edgetpu(mutate(_read(fixture_path("split_concat_edgetpu")), rename))
    assert not report.fully_mapped
    assert "my-custom-op" in report.ops[0].reasons[0]


# ----------------------------------------------------------------------------- supported ops map


def _many_supported_ops(x):
    x = layers.Conv2D(8, 3, padding="same", activation="relu6")(x)
    x = layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D()(x)
    a, b = ops.split(x, 2, axis=-1)
    x = layers.Concatenate()([b, a])
    x = layers.Add()([x, layers.Conv2D(8, 1)(x)])
    x = layers.Multiply()([x, layers.Activation("sigmoid")(x)])
    x = layers.Subtract()([ops.tanh(x), layers.ReLU()(x)])
    x = layers.PReLU(shared_axes=[1, 2])(x)
    x = ops.minimum(ops.maximum(x, -0.5), 2.0)
    x = layers.Resizing(10, 10, interpolation="nearest")(x)
    x = layers.Resizing(8, 8, interpolation="bilinear")(x)
    x = layers.AveragePooling2D(2)(x)
    x = x[:, 1:3, 1:3, :]
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    g = layers.GlobalMaxPooling2D()(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), g])
    x = layers.Reshape((8,))(layers.Reshape((2, 4))(x))
    return layers.Softmax()(layers.Dense(10)(x))


def test_model_of_supported_ops_is_fully_mapped():
    tflite = lower(_many_supported_ops, SHAPE)
    report = check_edgetpu(tflite)

    assert report.fully_mapped, str(report)
    assert report.num_mapped == report.num_ops
    names = {v.op for v in report.ops}
    expected = {
        "CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "MAX_POOL_2D", "SPLIT", "CONCATENATION", "ADD", "MUL",
        "LOGISTIC", "SUB", "TANH", "RELU", "PRELU", "MAXIMUM", "MINIMUM", "RESIZE_NEAREST_NEIGHBOR",
        "RESIZE_BILINEAR", "AVERAGE_POOL_2D", "STRIDED_SLICE", "TRANSPOSE_CONV", "REDUCE_MAX", "MEAN",
        "FULLY_CONNECTED", "SOFTMAX",
    }  # fmt: skip
    assert expected <= names, expected - names


def test_qat_model_is_fully_mapped():
    report = check_edgetpu(to_tflite(qat_model()))
    assert report.fully_mapped
    assert [v.op for v in report.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]


# ----------------------------------------------------------------------------- unsupported ops

UNSUPPORTED = {
    "LEAKY_RELU": lambda x: layers.LeakyReLU()(x),
    "HARD_SWISH": lambda x: layers.Activation("hard_swish")(x),
    "EXP": lambda x: ops.exp(x),
    "TILE": lambda x: ops.tile(x, (1, 2, 1, 1)),
}


@pytest.mark.parametrize("op_name", sorted(UNSUPPORTED))
def test_op_the_edge_tpu_lacks_is_named(op_name):
    def build(x):
        x = layers.Conv2D(4, 1)(x)
        return layers.Conv2D(4, 1)(UNSUPPORTED[op_name](x))

    report = check_edgetpu(lower(build, SHAPE))

    assert not report.fully_mapped
    assert report.first_unsupported.op == op_name
    assert report.first_unsupported.reasons[0].startswith("Operation not supported")
    assert op_name in str(report)


def test_first_unsupported_op_ends_the_segment():
    def build(x):
        x = layers.Conv2D(4, 1)(x)
        x = layers.LeakyReLU()(x)
        x = layers.Conv2D(4, 1)(x)
        return layers.Conv2D(4, 1)(x)

    report = check_edgetpu(lower(build, SHAPE))

    assert [v.op for v in report.ops] == ["CONV_2D", "LEAKY_RELU", "CONV_2D", "CONV_2D"]
    assert [v.mapped for v in report.ops] == [True, False, False, False]
    assert report.num_mapped == 1
    for stranded in report.ops[2:]:
        assert stranded.reasons[0].startswith("More than one subgraph is not supported")
        assert "#1 LEAKY_RELU" in stranded.reasons[0]


def test_branch_independent_of_the_cpu_op_still_maps():
    def build(x):
        x = layers.Conv2D(4, 1)(x)
        stranded = layers.Conv2D(4, 1)(layers.LeakyReLU()(x))
        independent = layers.Conv2D(4, 1, name="independent")(x)
        return [stranded, independent]

    tflite = lower(build, SHAPE)
    report = check_edgetpu(tflite)

    sg = load(tflite).main
    leaky = _verdict(report, "LEAKY_RELU")
    after_leaky = [op.index for op in sg.operators if set(op.inputs) & set(sg.operators[leaky.index].outputs)]
    assert len(after_leaky) == 1 and not report.ops[after_leaky[0]].mapped
    assert f"depends on op #{leaky.index} LEAKY_RELU" in report.ops[after_leaky[0]].reasons[0]
    others = [v for v in report.ops if v.index not in (leaky.index, after_leaky[0])]
    assert len(others) == 2 and all(v.mapped and v.op == "CONV_2D" for v in others)
    assert report.num_mapped == 2


def test_cpu_preprocessing_of_a_second_input_feeds_the_segment_wherever_it_runs():
    a, b = keras.Input(SHAPE), keras.Input(SHAPE)
    model = keras.Model([a, b], layers.Add()([layers.Conv2D(4, 1)(layers.Conv2D(4, 1)(a)), b]))
    data = (uniform((8, *SHAPE), seed=1), uniform((8, *SHAPE), seed=2))
    tflite = to_tflite(model, representative_data=data, int8_io=False)  # float inputs: a QUANTIZE each

    def quantize_b_just_before_the_add(m):  # still a valid execution order, now after the convs
        ops = m.subgraphs[0].operators
        add = next(op for op in ops if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.ADD)
        feeding = next(op for op in ops if set(op.outputs) & set(add.inputs) and
                       m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.QUANTIZE)
        ops.remove(feeding)
        ops.insert(ops.index(add), feeding)

    report = check_edgetpu(mutate(tflite, quantize_b_just_before_the_add))

    assert [v.op for v in report.ops] == ["QUANTIZE", "CONV_2D", "CONV_2D", "QUANTIZE", "ADD", "DEQUANTIZE"]
    assert [v.mapped for v in report.ops] == [False, True, True, False, True, False]
    assert "FLOAT32" in report.ops[3].reasons[0]


def test_float_io_quantize_and_dequantize_stay_on_cpu_around_one_segment():
    report = check_edgetpu(to_tflite(qat_model(), int8_io=False))

    assert report.ops[0].op == "QUANTIZE" and report.ops[-1].op == "DEQUANTIZE"
    assert [v.mapped for v in report.ops] == [False, True, True, True, True, False]
    assert "FLOAT32" in report.ops[0].reasons[0]
    assert not report.fully_mapped


def test_uint8_io_quantize_ops_are_mapped():
    report = check_edgetpu(to_tflite(qat_model(), int8_io="uint8"))
    assert [v.op for v in report.ops].count("QUANTIZE") == 2
    assert report.fully_mapped


# ----------------------------------------------------------------------------- tensor rules


def test_float_model_is_not_mapped():
    inp = keras.Input(SHAPE)
    model = keras.Model(inp, layers.Conv2D(4, 1)(inp))
    report = check_edgetpu(to_tflite(model, mode="float16"))
    assert report.num_mapped == 0
    assert "FLOAT32" in _verdict(report, "CONV_2D").reasons[0]
    assert _verdict(report, "DEQUANTIZE").reasons[0].startswith("Operation not supported")


def test_more_than_three_dimensions_larger_than_one():
    report = check_edgetpu(lower(lambda x: ops.max(layers.Reshape((2, 4, 8, 4))(x), axis=1), SHAPE))
    reshape = _verdict(report, "RESHAPE")
    assert not reshape.mapped
    assert "unsupported rank" in reshape.reasons[0]
    assert "[1, 2, 4, 8, 4]" in reshape.reasons[0]


def test_dynamic_batch_makes_model_uncompilable():
    report = check_edgetpu(to_tflite(qat_model(), batch_size=None))
    assert report.num_mapped == 0
    assert any("dynamic-sized" in e for e in report.errors)
    assert report.first_unsupported is None


# ----------------------------------------------------------------------------- per-op limits (converted)

LIMIT_CASES = {
    "CONV_2D-dilation": ("CONV_2D", "dilation", lambda x: layers.Conv2D(4, 3, dilation_rate=(1, 2), padding="same")(x)),
    "FULLY_CONNECTED-4d": ("FULLY_CONNECTED", "one-dimensional", lambda x: layers.Dense(5)(x)),
    "MEAN-6-channels": ("MEAN", "multiple of 4", lambda x: ops.mean(layers.Conv2D(6, 1)(x), axis=-1)),
    "STRIDED_SLICE-stride-2": ("STRIDED_SLICE", "strides", lambda x: x[:, ::2, :, :]),
    "PRELU-alpha-3d": ("PRELU", "alpha", lambda x: layers.PReLU()(x)),
    "CONCATENATION-constant": (
        "CONCATENATION", "not all zeros", lambda x: ops.concatenate([x, ops.ones((1, 8, 8, 2))], axis=-1)
    ),
    "SOFTMAX-4d": ("SOFTMAX", "one-dimensional", lambda x: layers.Softmax()(x)),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_per_op_limit_violations(case):
    op_name, words, build = LIMIT_CASES[case]
    report = check_edgetpu(lower(build, SHAPE))
    verdict = _verdict(report, op_name)
    assert not verdict.mapped
    assert words in verdict.reasons[0]
    assert not report.fully_mapped


LIMIT_PASSES = {
    "MEAN-8-channels": lambda x: ops.mean(layers.Conv2D(8, 1)(x), axis=-1),
    "CONCATENATION-zero-pad": lambda x: ops.concatenate([x, ops.zeros((1, 8, 8, 2))], axis=-1),
    "STRIDED_SLICE-unit": lambda x: x[:, 1:7, 1:7, :],
    "SOFTMAX-large-1d": lambda x: layers.Softmax()(layers.Dense(16000)(layers.GlobalAveragePooling2D()(x))),
}


@pytest.mark.parametrize("case", sorted(LIMIT_PASSES))
def test_per_op_limits_hold(case):
    report = check_edgetpu(lower(LIMIT_PASSES[case], SHAPE, samples=4))
    assert report.fully_mapped, str(report)


def test_softmax_over_16000_elements():
    report = check_edgetpu(
        lower(lambda x: layers.Softmax()(layers.Dense(16004)(layers.GlobalAveragePooling2D()(x))), SHAPE, samples=4)
    )
    assert "16004 elements" in _verdict(report, "SOFTMAX").reasons[0]


RESIZES = {  # (height, width) of an 8x8 input -> whether the compiler's resize limit holds
    "x2 bilinear": (lambda x: layers.Resizing(16, 16, interpolation="bilinear")(x), True),
    "x3 nearest": (lambda x: layers.Resizing(24, 24, interpolation="nearest")(x), True),
    "x1.5 bilinear": (lambda x: layers.Resizing(12, 12, interpolation="bilinear")(x), False),
    "x2 by x1.5 nearest": (lambda x: layers.Resizing(16, 12, interpolation="nearest")(x), False),
    "1x1 to 6x6 bilinear": (
        lambda x: layers.Resizing(6, 6, interpolation="bilinear")(layers.GlobalAveragePooling2D(keepdims=True)(x)),
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(RESIZES))
def test_resize_maps_only_with_whole_number_upscaling(case):
    build, maps = RESIZES[case]
    report = check_edgetpu(lower(build, SHAPE, samples=4))
    resize = next(v for v in report.ops if v.op.startswith("RESIZE_"))
    assert resize.mapped == maps, resize
    if not maps:
        assert "is not a whole-number upscaling" in resize.reasons[0]


def test_resize_with_align_corners_scales_by_sizes_minus_one():
    def align(model, sg, op):
        op.builtinOptions.alignCorners, op.builtinOptions.halfPixelCenters = True, False

    x2 = lower(lambda x: layers.Resizing(16, 16, interpolation="bilinear")(x), SHAPE, samples=4)
    assert _verdict(check_edgetpu(x2), "RESIZE_BILINEAR").mapped
    report = check_edgetpu(mutate(x2, _edit_op("RESIZE_BILINEAR", align)))  # (16-1)/(8-1) is not whole
    assert "8 -> 16 with align_corners" in _verdict(report, "RESIZE_BILINEAR").reasons[0]


def test_downscaling_resize_is_mapped_with_a_warning():
    report = check_edgetpu(lower(lambda x: layers.Resizing(4, 4, interpolation="bilinear")(x), SHAPE, samples=4))
    resize = _verdict(report, "RESIZE_BILINEAR")
    assert resize.mapped and any("downscaling" in w for w in resize.warnings)


def test_per_channel_dense_gets_a_warning():
    def build(x):
        return layers.Dense(4)(layers.Flatten()(x))

    per_tensor = check_edgetpu(lower(build, SHAPE))
    per_channel = check_edgetpu(lower(build, SHAPE, per_channel_dense=True))
    assert not any("per-channel" in w for w in _verdict(per_tensor, "FULLY_CONNECTED").warnings)
    assert any("per-channel" in w for w in _verdict(per_channel, "FULLY_CONNECTED").warnings)
    assert per_channel.fully_mapped


# ----------------------------------------------------------------------------- limits on edited files


@pytest.fixture(scope="module")
def base_tflite():
    """CONV_2D, MAX_POOL_2D, PAD, MEAN, FULLY_CONNECTED, SOFTMAX: a fully mapped model to edit."""

    def build(x):
        x = layers.ZeroPadding2D(1)(layers.Conv2D(4, 3, padding="same")(x))
        x = layers.GlobalAveragePooling2D()(layers.MaxPooling2D()(x))
        return layers.Softmax()(layers.Dense(4)(x))

    tflite = lower(build, SHAPE)
    assert check_edgetpu(tflite).fully_mapped
    return tflite


def _edit_op(name, edit):
    def apply(model):
        sg = model.subgraphs[0]
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator, name):
                edit(model, sg, op)
                return
        raise AssertionError(f"no {name} op")

    return apply


def _set_fused_relu(model, sg, op):
    op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU


def _nonzero_weight_zero_point(model, sg, op):
    q = sg.tensors[op.inputs[1]].quantization
    q.zeroPoint = np.full(len(q.zeroPoint), 3, np.int64)


def _wrong_bias_scale(model, sg, op):
    q = sg.tensors[op.inputs[2]].quantization
    q.scale = np.asarray(q.scale, np.float32) * np.float32(1.001)


def _wrong_softmax_output(model, sg, op):
    sg.tensors[op.outputs[0]].quantization.scale = np.asarray([1 / 255], np.float32)


def _filter_as_input(model, sg, op):
    sg.tensors[op.inputs[1]].buffer = 0
    sg.inputs = list(sg.inputs) + [op.inputs[1]]


def _pad_batch(model, sg, op):
    paddings = sg.tensors[op.inputs[1]]
    values = np.frombuffer(model.buffers[paddings.buffer].data.tobytes(), np.int32).reshape(-1, 2).copy()
    values[0] = [1, 0]
    model.buffers[paddings.buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def _shuffled_weights(model, sg, op):
    op.builtinOptions.weightsFormat = schema.FullyConnectedOptionsWeightsFormat.SHUFFLED4x16INT8


def _mean_over_batch(model, sg, op):
    axes = sg.tensors[op.inputs[1]]
    model.buffers[axes.buffer].data = np.frombuffer(np.asarray([0, 1], np.int32).tobytes(), np.uint8)


EDITS = {
    "MAX_POOL_2D fused activation": ("MAX_POOL_2D", _set_fused_relu, "fused RELU"),
    "CONV_2D weight zero point": ("CONV_2D", _nonzero_weight_zero_point, "zero_point 3"),
    "CONV_2D bias scale": ("CONV_2D", _wrong_bias_scale, "bias"),
    "SOFTMAX output params": ("SOFTMAX", _wrong_softmax_output, "output scale"),
    "FULLY_CONNECTED filter not constant": ("FULLY_CONNECTED", _filter_as_input, "not constant at compile-time"),
    "PAD batch padding": ("PAD", _pad_batch, "batch"),
    "FULLY_CONNECTED weights format": ("FULLY_CONNECTED", _shuffled_weights, "weights format"),
    "MEAN over batch": ("MEAN", _mean_over_batch, "batch dimension"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_limit_on_edited_model(base_tflite, case):
    op_name, edit, words = EDITS[case]
    report = check_edgetpu(mutate(base_tflite, _edit_op(op_name, edit)))
    verdict = _verdict(report, op_name)
    assert not verdict.mapped
    assert any(words in r for r in verdict.reasons), verdict.reasons
    assert report.first_unsupported.op == op_name


def test_bias_scale_within_tolerance_is_accepted(base_tflite):
    def tiny_error(model, sg, op):
        q = sg.tensors[op.inputs[2]].quantization
        q.scale = np.asarray(q.scale, np.float32) * np.float32(1 + 2e-7)

    assert check_edgetpu(mutate(base_tflite, _edit_op("CONV_2D", tiny_error))).fully_mapped


def test_op_version_newer_than_compiler_aborts(base_tflite):
    def newer(model):
        for code in model.operatorCodes:
            if code.builtinCode == schema.BuiltinOperator.CONV_2D:
                code.version = 6

    report = check_edgetpu(mutate(base_tflite, newer))
    assert report.num_mapped == 0
    assert any("CONV_2D version 6" in e for e in report.errors)
    assert report.first_unsupported.op == "CONV_2D"
    assert "version 6" in report.first_unsupported.reasons[0]


def test_more_than_one_subgraph(base_tflite):
    report = check_edgetpu(mutate(base_tflite, lambda m: m.subgraphs.append(copy.deepcopy(m.subgraphs[0]))))
    assert not report.fully_mapped
    assert any("2 subgraphs" in e for e in report.errors)


def test_requantize_inside_graph_is_a_warning(base_tflite):
    def retype(model):
        model.operatorCodes[model.subgraphs[0].operators[1].opcodeIndex].builtinCode = schema.BuiltinOperator.QUANTIZE
        model.operatorCodes[model.subgraphs[0].operators[1].opcodeIndex].deprecatedBuiltinCode = (
            schema.BuiltinOperator.QUANTIZE
        )
        model.operatorCodes[model.subgraphs[0].operators[1].opcodeIndex].version = 1

    tflite = mutate(base_tflite, retype)
    report = check_edgetpu(tflite)
    quantize = report.ops[1]
    assert quantize.op == "QUANTIZE" and quantize.mapped
    assert any("QUANTIZE inside the graph" in w for w in quantize.warnings)
    assert op_positions(tflite, "QUANTIZE") == [1]


# ----------------------------------------------------------------------------- the report


def test_report_prints_like_the_compiler_and_serializes(base_tflite):
    report = check_edgetpu(base_tflite)
    text = str(report)
    assert "Number of operations that will run on Edge TPU: 6" in text
    assert "Operator" in text and "Count" in text and "Status" in text
    assert "CONV_2D" in report.table() and "Mapped to Edge TPU" in report.table()
    payload = json.loads(report.to_json())
    assert payload["fully_mapped"] is True
    assert payload["num_mapped"] == payload["num_ops"] == 6
    assert [op["status"] for op in payload["ops"]] == ["mapped"] * 6
    assert all(v.status == "mapped" for v in report.ops)


@pytest.mark.backends
def test_table_groups_ops_by_rule_like_the_compilers_log():
    report = check_edgetpu(fixture_path("movenet_single_pose_lightning_ptq"))
    rows = [line.split(None, 2) for line in report.table().splitlines()[2:]]
    assert len(rows) == len({(op, status) for op, _, status in rows})
    assert ["RESHAPE", "7", "More than one subgraph is not supported"] in rows
    assert ["QUANTIZE", "7", "Operation is working on an unsupported data type"] in rows
    assert sum(int(count) for _, count, _ in rows) == report.num_ops
    assert "depends on op #" in report.details() and "depends on op #" not in report.table()


def test_report_of_unmapped_model_names_the_reason():
    report = check_edgetpu(lower(lambda x: layers.Conv2D(4, 1)(layers.LeakyReLU()(x)), SHAPE))
    payload = report.to_dict()
    leaky = next(op for op in payload["ops"] if op["op"] == "LEAKY_RELU")
    assert leaky["mapped"] is False and leaky["status"].startswith("Operation not supported")
    assert "First op left on the CPU: #0 LEAKY_RELU" in str(report)
    assert "NOT fully mapped" in str(report)


@pytest.mark.backends
def test_ops_left_in_a_compiled_model_are_reported_as_the_compiler_left_them():
    def append_cpu_op(model):
        sg = model.subgraphs[0]
        copy_of_custom = copy.deepcopy(sg.operators[0])
        model.operatorCodes.append(schema.OperatorCodeT())
        code = model.operatorCodes[-1]
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
        code.version = 1
        copy_of_custom.opcodeIndex = len(model.operatorCodes) - 1
        copy_of_custom.inputs, copy_of_custom.outputs = [sg.outputs[0]], [sg.outputs[0]]
        sg.operators.append(copy_of_custom)

    tflite = mutate(_read(fixture_path("split_concat_edgetpu")), append_cpu_op)
    report = check_edgetpu(tflite)
    assert report.compiled and report.num_mapped == 1 and report.num_ops == 2
    assert report.ops[1].op == "RELU" and "left on the CPU by the Edge TPU compiler" in report.ops[1].reasons[0]
