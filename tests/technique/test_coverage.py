"""Never silently ineffective: a technique that reaches less of the model than asked says so (kopt.coverage)."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers

import kopt
from kopt.technique.coverage import CoverageWarning

pytestmark = pytest.mark.backends


@keras.saving.register_keras_serializable(package="kopt_tests")
class ConvDenseBlock(layers.Layer):
    """A composite layer kopt cannot open: its call reads the batch size (``None`` when traced
    symbolically), so the Conv2D and Dense it owns stay hidden from the graph."""

    def __init__(self, filters: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = layers.Conv2D(filters, 3, padding="same")
        self.dense = layers.Dense(filters)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.dense.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x):
        batch_ones = keras.ops.ones((keras.ops.shape(x)[0], 1, 1, 1))
        return self.dense(keras.ops.relu(self.conv(x))) * batch_ones

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class UncopyableBlock(ConvDenseBlock):
    """Kept whole *and* out of reach: its config does not round-trip (``from_config`` raises), so kopt
    cannot copy it to wrap its sublayers in place, and never changes the user's own object."""

    def get_config(self):
        return {**super().get_config(), "unknown_argument": 1}


@keras.saving.register_keras_serializable(package="kopt_tests")
class RawWeightsBlock(ConvDenseBlock):
    """Kept whole and copyable, but its kernels are its own raw weights (no sublayer QAT could wrap in place)."""

    def build(self, input_shape):
        self.w_conv = self.add_weight(shape=(3, 3, input_shape[-1], self.filters))
        self.w_dense = self.add_weight(shape=(self.filters, self.filters))

    def call(self, x):
        batch_ones = keras.ops.ones((keras.ops.shape(x)[0], 1, 1, 1))
        h = keras.ops.relu(keras.ops.conv(x, self.w_conv, padding="same"))
        return keras.ops.matmul(h, self.w_dense) * batch_ones


def composite_model(filters=32, block=UncopyableBlock):
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = block(filters, name="block")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, name="head")(x))


def plain_model():
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, name="head")(x))


def kernel_sizes(model):
    """Independent count: every trainable weight of rank >= 2 by variable path (NumPy shapes)."""
    return {v.path: int(np.prod(v.shape)) for v in model.trainable_weights if len(v.shape) >= 2}


def coverage_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, CoverageWarning)]


def test_pruning_warns_with_the_composite_layer_kernels_and_the_reachable_sparsity():
    model = composite_model()
    sizes = kernel_sizes(model)
    reachable = 0.5 * (sizes["stem/kernel"] + sizes["head/kernel"]) / sum(sizes.values())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned, report = kopt.sparsity.prune_low_magnitude(model, return_report=True)
    (message,) = coverage_warnings(caught)
    assert "'block' UncopyableBlock" in message and message.count("kernel (") == 2
    assert f"at most {100 * reachable:.1f} % sparsity" in message and "50.0 % requested" in message
    assert report.coverage.reachable_sparsity == pytest.approx(reachable)
    assert "get_prunable_weights" in str(report) and "cannot be copied from its config" in str(report)

    # What training then reaches over all kernels is what the warning announced.
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, 16)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stripped = kopt.strip(pruned)
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(v) == 0)) for v in stripped.trainable_weights if len(v.shape) >= 2)
    assert zeros / sum(sizes.values()) == pytest.approx(reachable, abs=0.01)
    assert zeros / sum(sizes.values()) < 0.9 * 0.5


def test_clustering_and_qat_name_each_kernel_left_out():
    model = composite_model()
    raw = composite_model(block=RawWeightsBlock)  # QAT cannot reach raw weights: left in float, named
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kopt.clustering.cluster_weights(model, 8)
        _, report = kopt.quantization.quantize_model(raw, unsupported="float", return_report=True)
    cluster_message, qat_message = coverage_warnings(caught)
    assert cluster_message.startswith("Coverage: clustering") and "inside composite layer 'block'" in cluster_message
    assert "quantization-aware training" in qat_message and "left in float" in qat_message
    assert cluster_message.count("in layer 'block' UncopyableBlock") == 2
    assert qat_message.count("in layer 'block' RawWeightsBlock") == 2
    assert report.coverage.total == sum(kernel_sizes(raw).values())
    with pytest.raises(kopt.errors.UnsupportedLayerError, match="'block'.*cannot be copied from its config"):
        kopt.quantization.quantize_model(model)  # the default refuses a block it cannot reach, saying why

    copyable = composite_model(block=ConvDenseBlock)  # a closed block QAT reaches in place: nothing left out
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        _, report = kopt.quantization.quantize_model(copyable, return_report=True)
    assert report.in_place_blocks == ["block"] and report.coverage.fraction == 1.0


def test_qat_keeps_a_block_it_cannot_copy_float_with_unsupported_float():
    """The block's config does not round-trip: QAT neither crashes nor rebuilds it; it stays float, named."""
    model = composite_model(filters=8)
    with pytest.warns(CoverageWarning) as caught:
        qat, report = kopt.quantization.quantize_model(model, unsupported="float", return_report=True)
    (message,) = coverage_warnings(caught)
    assert message.count("in layer 'block' UncopyableBlock") == 2 and "cannot be copied from its config" in message
    assert ("block", "UncopyableBlock") in report.float_layers and not report.in_place_blocks
    assert any("'block' cannot be copied from its config: the quantized model shares it" in n for n in report.notes)
    block = qat.get_layer("block")
    assert type(block) is UncopyableBlock  # float, not wrapped; the same weights (NumPy)
    for kept, original in zip(block.get_weights(), model.get_layer("block").get_weights()):
        np.testing.assert_array_equal(kept, original)
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    qat.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, np.arange(8), epochs=1, batch_size=8, verbose=0)  # trains


def test_no_warning_when_every_kernel_is_reached_or_left_out_on_purpose():
    model = plain_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        kopt.sparsity.prune_low_magnitude(model)
        kopt.clustering.cluster_weights(model, 8, layer_filter=lambda layer: layer.name != "head")  # chosen
        kopt.quantization.quantize_model(model)
    # A policy that leaves the depthwise kernel dense (its default) still reaches > 90 % of 50 %.
    plan = kopt.Policy.preset("prune").resolve(model)
    wrapped = kopt.stages.wrap_prune(model, plan, steps=10)
    coverage = kopt.coverage.warn_pruning(wrapped, excluded=kopt.stages.left_dense_by_plan(wrapped, plan))
    assert not coverage.short and coverage.reachable_sparsity == pytest.approx(0.5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="optimize's int8 stage needs TensorFlow")
def test_optimize_report_shows_the_coverage_warning():
    model = composite_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, 32)
    with pytest.warns(CoverageWarning, match="pruning reaches"):
        result = kopt.optimize(model, "prune", train_data=(x, y), epochs=1, batch_size=16, lower=False)
    (line,) = [w for w in result.report.warnings if w.startswith("Coverage:")]
    assert "'block' UncopyableBlock" in line
    assert "Coverage: pruning reaches" in result.report.to_markdown()
