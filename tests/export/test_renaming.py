"""Tensor renaming after conversion (kopt.export.renaming) and the lean SavedModel route.

The references are the Keras models themselves: each weight tensor's name must name the layer
whose kernel has that tensor's shape, and the renamed file must run bit for bit like the
converter's own output.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from export_testing import uniform
from keras import layers

from kopt.export import load_tflite, lowering, renaming, run, to_tflite, zipped_size
from kopt.export.renaming import LayerCatalog, rename_tensors
from kopt.report.summary import tflite_layer_name


def two_conv_cnn() -> keras.Model:
    """Layers named ``conv2d`` and ``conv2d_1``: the converter's scopes call the first one
    ``conv2d_1`` and the second ``conv2d_1_2``, which a name-only reading mixes up."""
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv2d")(inputs)
    x = layers.ReLU(name="re_lu")(layers.BatchNormalization(name="bn")(x))
    x = layers.Conv2D(6, 1, name="conv2d_1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="fc")(x), name="two_conv")


KERNEL_SHAPES = {  # TFLite layout of each layer's kernel
    "conv2d": (4, 3, 3, 2),
    "conv2d_1": (6, 1, 1, 4),
    "dw": (1, 3, 3, 6),
    "fc": (3, 6),
}


def raw_converter_output(model, monkeypatch, **kwargs) -> bytes:
    """What to_tflite returned before renaming: the converter's own tensor names."""
    with monkeypatch.context() as patch:
        patch.setattr(renaming, "rename_tensors", lambda tflite, catalog: tflite)
        return to_tflite(model, **kwargs)


def qat(model: keras.Model) -> keras.Model:
    from kopt.quantization import quantize_model

    quantized = quantize_model(model)
    quantized.compile("adam", "mse")
    quantized.fit(uniform((16, 8, 8, 2)), uniform((16, 3), seed=1), epochs=1, batch_size=8, verbose=0)
    return quantized


@pytest.fixture(scope="module")
def ptq_model():
    keras.utils.set_random_seed(0)
    return two_conv_cnn()


def weight_names(tflite: bytes) -> dict[str, tuple]:
    graph = load_tflite(tflite).main
    return {t.name: t.shape for t in graph.tensors if t.is_constant and t.dtype in ("INT8", "INT32") and t.shape}


def check_names(tflite: bytes) -> None:
    graph = load_tflite(tflite).main
    names = [t.name for t in graph.tensors]
    assert len(set(names)) == len(names), names
    assert not any(";" in n or "FakeQuant" in n or "StatefulPartitionedCall" in n for n in names), names
    weights = weight_names(tflite)
    for layer, shape in KERNEL_SHAPES.items():
        assert weights[f"{layer}/kernel"] == shape, (layer, weights)
        assert tflite_layer_name(f"{layer}/kernel", list(KERNEL_SHAPES) + ["bn", "re_lu", "gap"]) == layer
    # conv2d gets its bias from the folded BatchNorm; fc has none (a zero bias is dropped)
    assert weights["conv2d/bias"] == (4,) and weights["conv2d_1/bias"] == (6,) and weights["dw/bias"] == (6,)
    (signature,) = load_tflite(tflite).signatures
    assert [graph.tensors[i].name for _, i in signature.inputs] == [key for key, _ in signature.inputs]
    assert [graph.tensors[i].name for _, i in signature.outputs] == ["output_0"]


def assert_same_model(raw: bytes, renamed: bytes) -> None:
    """Everything but the tensor names is the converter's, and LiteRT gives the same bits."""
    a, b = load_tflite(raw), load_tflite(renamed)
    assert a.signatures == b.signatures
    assert [(o.label, o.version, o.inputs, o.outputs) for o in a.main.operators] == [
        (o.label, o.version, o.inputs, o.outputs) for o in b.main.operators
    ]
    for ta, tb in zip(a.main.tensors, b.main.tensors, strict=True):
        assert (ta.dtype, ta.shape, ta.shape_signature) == (tb.dtype, tb.shape, tb.shape_signature)
        np.testing.assert_array_equal(ta.quantization.scales, tb.quantization.scales)
        np.testing.assert_array_equal(ta.quantization.zero_points, tb.quantization.zero_points)
        assert (ta.data is None) == (tb.data is None)
        if ta.data is not None:
            np.testing.assert_array_equal(ta.data, tb.data)
    x = uniform((12, 8, 8, 2), seed=5)
    got_raw, got_renamed = run(raw, x), run(renamed, x)
    assert got_raw.dtype == got_renamed.dtype and np.array_equal(got_raw, got_renamed)


def test_ptq_tensors_are_named_after_their_keras_layers(ptq_model, monkeypatch):
    data = uniform((32, 8, 8, 2))
    raw = raw_converter_output(ptq_model, monkeypatch, representative_data=data)
    renamed = to_tflite(ptq_model, representative_data=data)
    check_names(renamed)
    assert_same_model(raw, renamed)
    assert len(renamed) < len(raw)


def test_qat_names_drop_the_fake_quant_scopes_and_match_ptq(ptq_model, monkeypatch):
    keras.utils.set_random_seed(1)
    quantized = qat(ptq_model)
    raw = raw_converter_output(quantized, monkeypatch)
    renamed = to_tflite(quantized)
    assert any("FakeQuant" in t.name for t in load_tflite(raw).main.tensors)  # what the converter writes
    check_names(renamed)
    assert_same_model(raw, renamed)
    assert zipped_size(renamed) < zipped_size(raw)
    ptq = to_tflite(ptq_model, representative_data=uniform((32, 8, 8, 2)))
    assert set(weight_names(renamed)) - set(weight_names(ptq)) == {"fc/bias"}  # trained, no longer zero
    assert set(weight_names(ptq)) <= set(weight_names(renamed))


def test_report_maps_renamed_weights_to_the_right_layers(ptq_model):
    from kopt.report.summary import tflite_stage

    tflite = to_tflite(ptq_model, representative_data=uniform((32, 8, 8, 2)))
    stage = tflite_stage("int8", tflite, layer_names=list(KERNEL_SHAPES))
    kernels = {s.layer: s.parameters for s in stage.layers if s.kernel_parameters}
    assert kernels == {layer: int(np.prod(shape)) for layer, shape in KERNEL_SHAPES.items()}


def test_lean_saved_model_gives_the_same_file_as_keras_export(ptq_model, monkeypatch):
    """write_saved_model's own SavedModel and its Keras ExportArchive fallback convert to equal bytes."""
    data = uniform((32, 8, 8, 2))
    lean = to_tflite(ptq_model, representative_data=data)
    exports = []
    real_archive = keras.export.ExportArchive

    def lean_fails(model, signature, path):
        raise ValueError("untracked resource")  # what tf.saved_model.save says of a lookup table

    def counted_archive():
        exports.append(real_archive())
        return exports[-1]

    monkeypatch.setattr(lowering, "_lean_saved_model", lean_fails)
    monkeypatch.setattr(keras.export, "ExportArchive", counted_archive)
    exported = to_tflite(ptq_model, representative_data=data)
    assert len(exports) == 1
    assert exported == lean


def test_export_failure_is_a_conversion_error(ptq_model, monkeypatch):
    from kopt.export import ConversionError

    def broken(*args, **kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(lowering, "_lean_saved_model", broken)
    monkeypatch.setattr(keras.export, "ExportArchive", broken)
    with pytest.raises(ConversionError, match="two_conv.*disk full"):
        to_tflite(ptq_model, representative_data=uniform((8, 8, 8, 2)))


def test_a_renaming_failure_keeps_the_converters_names_with_a_warning(ptq_model, monkeypatch):
    data = uniform((16, 8, 8, 2))
    raw = raw_converter_output(ptq_model, monkeypatch, representative_data=data)

    def broken(tflite, catalog):
        raise KeyError("opcode")

    monkeypatch.setattr(renaming, "rename_tensors", broken)
    with pytest.warns(RuntimeWarning, match="two_conv.*KeyError"):
        assert to_tflite(ptq_model, representative_data=data) == raw


def test_scope_suffixes_are_read_with_the_files_convention():
    """Layers conv2d and conv2d_1: under a suffixed model scope (``m_1``) every component lost
    one ``_<n>``; under a plain one (``m``) an exact name wins."""
    catalog = LayerCatalog(frozenset({"conv2d", "conv2d_1"}), frozenset({"conv2d", "conv2d_1"}), "m")
    suffixed = renaming._Resolver(catalog, ["m_1/conv2d_1/convolution", "m_1/conv2d_1_2/convolution"])
    assert suffixed.part("m_1/conv2d_1/convolution") == "conv2d"
    assert suffixed.part("m_1/conv2d_1_2/convolution") == "conv2d_1"
    plain = renaming._Resolver(catalog, ["m/conv2d/convolution", "m/conv2d_1/convolution"])
    assert plain.part("m/conv2d_1/convolution") == "conv2d_1"
    assert plain.part("m/conv2d/convolution") == "conv2d"
    # the op name (last component) is never read as a layer, even when one is called "add"
    adds = renaming._Resolver(LayerCatalog(frozenset({"add", "conv2d"}), frozenset(), "m"), ["m_1/x"])
    assert adds.part("m_1/conv2d_1/add_3") == "conv2d"


def test_duplicate_names_get_a_slash_counter_never_a_layer_like_suffix():
    assert renaming._unique(["re_lu", "re_lu", "re_lu/1", "re_lu", "a;b", ""]) == [
        "re_lu", "re_lu/2", "re_lu/1", "re_lu/3", "a_b", "tensor"
    ]


def test_rename_accepts_plain_layer_names_and_keeps_bytes_valid(ptq_model):
    tflite = to_tflite(ptq_model, representative_data=uniform((16, 8, 8, 2)))
    again = rename_tensors(tflite, [layer.name for layer in ptq_model.layers])
    assert [t.name for t in load_tflite(again).main.tensors] == [t.name for t in load_tflite(tflite).main.tensors]
    assert_same_model(tflite, again)
