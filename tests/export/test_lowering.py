"""to_tflite: full-integer PTQ and QAT, float16 / dynamic modes, I/O types, batch, errors."""

import keras
import numpy as np
import pytest
from export_testing import qat_model, uniform
from keras import layers, ops

from kopt.core.errors import UnsupportedModelError
from kopt.export import (
    ConversionError,
    MissingRangesError,
    NotFullyIntegerError,
    check_edgetpu,
    evaluate,
    run,
    to_tflite,
)
from kopt.export.flatbuffer import load

SHAPE = (12, 12, 3)


def _cnn(classes=5):
    inp = keras.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    y = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Add()([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Softmax()(layers.Dense(classes)(x)))


@pytest.fixture(scope="module")
def cnn_and_tflite():
    keras.utils.set_random_seed(7)
    model = _cnn()
    # Non-trivial BN statistics so folding is exercised.
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    gamma, beta = np.linspace(0.5, 1.5, 8), np.linspace(-0.2, 0.2, 8)
    bn.set_weights([gamma, beta, np.linspace(-0.1, 0.1, 8), np.linspace(0.5, 2, 8)])
    data = uniform((64,) + SHAPE, seed=1)
    return model, to_tflite(model, representative_data=data), data


# ----------------------------------------------------------------------------- full integer PTQ


def test_ptq_model_is_fully_int8(cnn_and_tflite):
    _, tflite, _ = cnn_and_tflite
    sg = load(tflite).main
    names = [op.name for op in sg.operators]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    used = {i for op in sg.operators for i in op.inputs + op.outputs if i >= 0}
    for index in used:
        t = sg.tensors[index]
        if t.dtype == "INT32":
            assert t.is_constant, t.name  # bias or shape/axis parameter
        else:
            assert t.dtype == "INT8", (t.name, t.dtype)
            assert t.quantization.is_quantized
    for index in sg.inputs + sg.outputs:
        assert sg.tensors[index].dtype == "INT8"
        assert sg.tensors[index].shape[0] == 1 and not sg.tensors[index].is_dynamic


def test_ptq_weights_follow_the_int8_spec(cnn_and_tflite):
    _, tflite, _ = cnn_and_tflite
    sg = load(tflite).main
    axes = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3}
    seen = set()
    for op in sg.operators:
        if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        seen.add(op.name)
        x, w = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
        assert w.dtype == "INT8" and np.all(w.quantization.zero_points == 0)
        assert w.data.min() >= -127 and w.data.max() <= 127
        if op.name == "FULLY_CONNECTED":
            assert w.quantization.scales.size == 1  # per-tensor Dense by default
        else:
            assert w.quantization.axis == axes[op.name]
            assert w.quantization.scales.size == w.shape[axes[op.name]]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = sg.tensors[op.inputs[2]]
            expected = x.quantization.scales[0] * w.quantization.scales
            assert b.dtype == "INT32"
            np.testing.assert_allclose(b.quantization.scales, expected, rtol=1e-6)
    assert seen == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_ptq_model_computes_what_keras_computes(cnn_and_tflite):
    model, tflite, data = cnn_and_tflite
    expected = model.predict(data[:16], verbose=0)
    got = run(tflite, data[:16])
    # Softmax output step is 1/256; PTQ error accumulates over 4 layers.
    assert np.max(np.abs(got - expected)) < 6 / 256
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.85


def test_ptq_model_is_fully_mapped_on_the_edge_tpu(cnn_and_tflite):
    assert check_edgetpu(cnn_and_tflite[1]).fully_mapped


def test_dense_is_per_channel_only_when_asked():
    inp = keras.Input((6,))
    model = keras.Model(inp, layers.Dense(4)(layers.Dense(5)(inp)))
    data = uniform((16, 6))
    for per_channel, scales in ((False, {1}), (True, {5, 4})):
        sg = load(to_tflite(model, representative_data=data, per_channel_dense=per_channel)).main
        fc = [sg.tensors[op.inputs[1]] for op in sg.operators if op.name == "FULLY_CONNECTED"]
        assert {w.quantization.scales.size for w in fc} == scales


# ----------------------------------------------------------------------------- QAT


def test_qat_model_uses_fake_quant_ranges_without_data():
    model = qat_model()
    tflite = to_tflite(model)  # no representative data: ranges from the fake-quant ops
    sg = load(tflite).main
    assert [op.name for op in sg.operators] == ["CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    x_in = sg.tensors[sg.inputs[0]].quantization
    assert x_in.scales[0] == pytest.approx(2 / 255) and x_in.zero_points[0] == 0
    conv_out = sg.tensors[sg.operators[0].outputs[0]].quantization
    assert conv_out.scales[0] == pytest.approx(6 / 255) and conv_out.zero_points[0] == -128
    fc_out = sg.tensors[sg.operators[2].outputs[0]].quantization
    assert fc_out.scales[0] == pytest.approx(16 / 255)

    x = uniform((8, 8, 8, 3), seed=3)
    # The int8 model reproduces the fake-quant Keras model to about one output step (1/256).
    error = np.abs(run(tflite, x) - model.predict(x, verbose=0))
    assert np.mean(error <= 1.5 / 256) >= 0.9 and error.max() < 0.03


def test_qat_ranges_win_over_representative_data():
    model = qat_model()
    tflite = to_tflite(model, representative_data=uniform((8, 8, 8, 3), low=-10, high=10))
    x_in = load(tflite).main.tensors[load(tflite).main.inputs[0]].quantization
    assert x_in.scales[0] == pytest.approx(2 / 255)


def test_partial_qat_model_is_refused_naming_the_layer():
    model = qat_model(add_without_fake_quant=True)
    with pytest.raises(NotFullyIntegerError) as info:
        to_tflite(model)
    add = next(layer.name for layer in model.layers if isinstance(layer, layers.Add))
    assert f"layer '{add}'" in str(info.value)
    assert "representative_data" in str(info.value)
    assert any(op == "ADD" for _, op, _ in info.value.float_ops)


def test_partial_qat_model_converts_with_representative_data():
    tflite = to_tflite(qat_model(add_without_fake_quant=True), representative_data=uniform((8, 8, 8, 3)))
    assert check_edgetpu(tflite).fully_mapped


def test_model_without_ranges_gets_a_clear_error():
    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2)(inp))
    with pytest.raises(MissingRangesError, match="representative_data") as info:
        to_tflite(model)
    assert "fake-quant" in str(info.value)


# ----------------------------------------------------------------------------- I/O types, batch, modes


def test_float_io_has_one_quantize_in_and_one_dequantize_out():
    sg = load(to_tflite(qat_model(), int8_io=False)).main
    names = [op.name for op in sg.operators]
    assert names[0] == "QUANTIZE" and names[-1] == "DEQUANTIZE"
    assert names.count("QUANTIZE") == 1 and names.count("DEQUANTIZE") == 1
    assert sg.tensors[sg.inputs[0]].dtype == "FLOAT32" and sg.tensors[sg.outputs[0]].dtype == "FLOAT32"
    inner = {sg.tensors[i].dtype for op in sg.operators[1:-1] for i in op.outputs}
    assert inner == {"INT8"}


def test_uint8_io():
    sg = load(to_tflite(qat_model(), int8_io="uint8")).main
    assert sg.tensors[sg.inputs[0]].dtype == "UINT8" and sg.tensors[sg.outputs[0]].dtype == "UINT8"


def test_batch_is_static_one_by_default_and_dynamic_on_request():
    static = load(to_tflite(qat_model())).main
    dynamic = load(to_tflite(qat_model(), batch_size=None)).main
    assert static.tensors[static.inputs[0]].shape == (1, 8, 8, 3)
    assert not any(t.is_dynamic for t in static.tensors)
    assert dynamic.tensors[dynamic.inputs[0]].shape_signature == (-1, 8, 8, 3)


def _float_cnn():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, activation="relu")(inp)
    return keras.Model(inp, layers.Dense(4)(layers.Flatten()(x)))


def test_float16_mode_stores_float16_weights():
    model = _float_cnn()
    tflite = to_tflite(model, mode="float16")
    sg = load(tflite).main
    weights = [t for t in sg.tensors if t.is_constant and t.size > 8]
    assert weights and {t.dtype for t in weights} == {"FLOAT16"}
    x = uniform((4, 8, 8, 3))
    np.testing.assert_allclose(run(tflite, x), model.predict(x, verbose=0), atol=2e-2)


def test_dynamic_mode_stores_int8_weights_and_float_activations():
    model = _float_cnn()
    tflite = to_tflite(model, mode="dynamic")
    sg = load(tflite).main
    large = [t for t in sg.tensors if t.is_constant and t.size >= 1024]  # TF skips smaller tensors
    assert large and {t.dtype for t in large} == {"INT8"}
    assert sg.tensors[sg.inputs[0]].dtype == "FLOAT32"
    x = uniform((4, 8, 8, 3))
    np.testing.assert_allclose(run(tflite, x), model.predict(x, verbose=0), atol=5e-2)


# ----------------------------------------------------------------------------- inputs and data forms


def test_representative_data_forms_calibrate_identically():
    inp = keras.Input((6,))
    model = keras.Model(inp, layers.Dense(3)(layers.Dense(5, activation="relu")(inp)))
    x = uniform((20, 6), seed=5)
    y = np.zeros(20, "int32")
    import tensorflow as tf

    forms = {
        "array": x,
        "generator function": lambda: ([row[None]] for row in x),
        "generator of (x, y) batches": ((x[i : i + 4], y[i : i + 4]) for i in range(0, 20, 4)),
        "tf.data": tf.data.Dataset.from_tensor_slices((x, y)).batch(5),
    }
    params = {}
    for form, data in forms.items():
        sg = load(to_tflite(model, representative_data=data)).main
        params[form] = [tuple(sg.tensors[i].quantization.scales) for op in sg.operators for i in op.outputs]
    assert len(set(map(tuple, params.values()))) == 1, params


def test_multi_input_model():
    a, b = keras.Input((4,), name="left"), keras.Input((6,), name="right")
    joined = layers.Concatenate()([layers.Dense(5)(a), layers.Dense(5)(b)])
    model = keras.Model([a, b], layers.Dense(3)(joined))
    xa, xb = uniform((32, 4), seed=1), uniform((32, 6), seed=2)
    tflite = to_tflite(model, representative_data=[xa, xb])
    expected = model.predict([xa[:8], xb[:8]], verbose=0)
    got = run(tflite, {"left": xa[:8], "right": xb[:8]})
    assert np.max(np.abs(got - expected)) < 0.05


def test_subclassed_model_takes_its_shape_from_the_data():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    x = uniform((16, 5))
    model(x[:1])
    tflite = to_tflite(model, representative_data=x)
    assert np.max(np.abs(run(tflite, x) - model.predict(x, verbose=0))) < 0.05


# ----------------------------------------------------------------------------- errors


def test_converter_failure_names_the_op_and_the_layer():
    inp = keras.Input((8,))
    x = layers.Dense(8)(inp)
    x = layers.Lambda(lambda t: ops.erfinv(ops.tanh(t) * 0.5), name="odd_one")(x)
    model = keras.Model(inp, layers.Dense(2)(x))
    with pytest.raises(ConversionError) as info:
        to_tflite(model, representative_data=uniform((8, 8)))
    assert info.value.op == "tf.Erfinv"
    assert info.value.layer == "odd_one"
    assert "'odd_one' (Lambda)" in str(info.value)
    assert info.value.__cause__ is not None  # the converter's own error stays attached


def test_float_island_is_refused_naming_the_layer():
    inp = keras.Input((8,))
    x = layers.UnitNormalization(name="unit_norm")(layers.Dense(8)(inp))
    model = keras.Model(inp, layers.Dense(3)(x))
    with pytest.raises(NotFullyIntegerError, match="unit_norm"):
        to_tflite(model, representative_data=uniform((8, 8)))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"mode": "int4"}, "mode"),
        ({"int8_io": "int16"}, "int8_io"),
        ({"batch_size": 0}, "batch_size"),
        ({"calibration_samples": 0}, "calibration_samples"),
        ({"mode": "float16", "representative_data": np.zeros((2, 4))}, "representative_data"),
    ],
)
def test_bad_arguments(kwargs, words):
    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2)(inp))
    with pytest.raises(ValueError, match=words):
        to_tflite(model, **kwargs)


def test_bad_model_and_bad_data():
    with pytest.raises(UnsupportedModelError):
        to_tflite(layers.Dense(3))
    inp = keras.Input((4,), name="features")
    model = keras.Model(inp, layers.Dense(2)(inp))
    with pytest.raises(ValueError, match="features"):
        to_tflite(model, representative_data=np.zeros((5, 7), "float32"))


# ----------------------------------------------------------------------------- accuracy parity


def test_int8_accuracy_on_digits_within_one_point_of_keras():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(32, activation="relu")(h)
    model = keras.Model(inp, layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=6, batch_size=64, verbose=0)

    float_accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    tflite = to_tflite(model, representative_data=x_train)
    int8_accuracy = evaluate(tflite, x_test, y_test)

    assert float_accuracy > 0.9
    assert abs(int8_accuracy - float_accuracy) <= 0.01, (float_accuracy, int8_accuracy)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_mobilenet_v2_ptq_is_fully_int8_and_fully_mapped():
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    data = uniform((32, 96, 96, 3), seed=11)
    tflite = to_tflite(model, representative_data=data)
    report = check_edgetpu(tflite)
    assert report.fully_mapped, str(report)
    sg = load(tflite).main
    assert {sg.tensors[i].dtype for op in sg.operators for i in op.outputs} == {"INT8"}
    assert report.num_ops == len(sg.operators) >= 60


@pytest.mark.parametrize("path", ["lean SavedModel", "Keras export fallback"])
def test_a_resizing_layer_does_not_put_the_layers_after_it_in_training_mode(path, monkeypatch):
    """keras.layers.Resizing's ``call`` defaults to ``training=True``, and Keras hands a resolved value on to
    the layers called after it: traced without ``training=False``, the folded BatchNorm and fake-quants of a
    segmentation head (SegFormer, DeepLabV3) updated their variables and the FakeQuant ops did not convert.
    The fallback for models the lean SavedModel cannot hold (captured lookup tables) must trace the same way."""
    from kopt.export import lowering
    from kopt.quantization import quantize_model

    if path == "Keras export fallback":
        def refuse(*args):
            raise ValueError("untracked resource")

        monkeypatch.setattr(lowering, "_lean_saved_model", refuse)

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 1)(inp)
    x = layers.Resizing(16, 16, interpolation="bilinear")(x)
    x = layers.Conv2D(4, 1, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    qat = quantize_model(keras.Model(inp, x))
    qat(uniform((4, 8, 8, 3), seed=1), training=True)  # ranges and BN statistics
    before = [np.copy(keras.ops.convert_to_numpy(v)) for v in qat.non_trainable_variables]
    sg = load(to_tflite(qat)).main
    assert {op.name for op in sg.operators} <= {"CONV_2D", "RESIZE_BILINEAR"}, [op.name for op in sg.operators]
    after = [keras.ops.convert_to_numpy(v) for v in qat.non_trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # lowering changes no statistic or range


def test_the_converters_garbage_collection_scans_only_the_conversions_own_objects(monkeypatch):
    """TF's converter runs gc.collect() on every conversion; to_tflite freezes the objects alive before it
    (so the collection skips them) and unfreezes them after. An application's own frozen set is left alone."""
    import gc

    frozen_at_collect = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: frozen_at_collect.append(gc.get_freeze_count()) or collect(*a))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2)(inputs))
    data = uniform((8, 4))
    already_frozen = gc.get_freeze_count()  # tests/conftest.py freezes the test process at start
    gc.unfreeze()
    try:
        to_tflite(model, representative_data=data)
        assert frozen_at_collect and min(frozen_at_collect) > 0
        assert gc.get_freeze_count() == 0  # everything is back
        gc.freeze()
        application_frozen, frozen_at_collect[:] = gc.get_freeze_count(), []
        to_tflite(model, representative_data=data)
        assert frozen_at_collect and max(frozen_at_collect) <= application_frozen  # nothing more frozen...
        assert gc.get_freeze_count() > 0.9 * application_frozen  # ...and the application's set not unfrozen
    finally:
        gc.unfreeze()
        if already_frozen:
            gc.freeze()
