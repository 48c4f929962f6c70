"""Blocks kopt cannot open: pruning and clustering wrap their sublayers in place (kopt.technique.inplace)."""

import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import kopt
from kopt.sparsity import ConstantSparsity, PruneWrapper
from kopt.technique.coverage import CoverageWarning
from kopt.technique.inplace import InPlaceWrapped

pytestmark = pytest.mark.backends


@keras.saving.register_keras_serializable(package="kopt_tests")
class ConvUnit(layers.Layer):
    """A composite sublayer (the walk must look inside it) that makes its Conv2D in ``build``, which its block's
    ``build`` does not call (like keras-hub's Swin attention): a reloaded block has it only once called."""

    def __init__(self, filters=8, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.fused = fused  # the ReLU inside the Conv2D, or applied by this layer's call (keras.ops)

    def build(self, input_shape):
        self.conv = layers.Conv2D(self.filters, 3, padding="same", activation="relu" if self.fused else None)
        self.conv.build(input_shape)

    def call(self, x):
        return self.conv(x) if self.fused else ops.relu(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "fused": self.fused}


@keras.saving.register_keras_serializable(package="kopt_tests")
class BatchReadingBlock(layers.Layer):
    """Its call reads the batch size to build a tensor (``None`` when traced symbolically), so kopt keeps it
    whole; its kernels sit in a nested composite (``unit.conv``) and in a list (``mix[0]``, ``mix[1]``)."""

    def __init__(self, filters=8, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.fused = fused
        self.unit = ConvUnit(filters, fused)
        self.mix = [layers.Dense(filters), layers.Dense(filters)]

    def build(self, input_shape):
        shape = (*input_shape[:-1], self.filters)
        for dense in self.mix:
            dense.build(shape)

    def call(self, x):
        ones = ops.ones((ops.shape(x)[0], 1, 1, 1))
        h = self.unit(x)
        for dense in self.mix:
            h = dense(h)
        return h * ones

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "fused": self.fused}


def block_model(fused=False):
    inputs = keras.Input((6, 6, 3))
    x = BatchReadingBlock(8, fused, name="block")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(5, name="head")(x))


def data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6, 6, 3)).astype("float32"), rng.integers(0, 5, n)


def kernels(model):
    """Every kernel (rank >= 2 trainable weight) by path, as NumPy, found through all sublayers."""
    return {v.path: np.asarray(ops.convert_to_numpy(v)) for v in model.trainable_weights if len(v.shape) >= 2}


def predict(model, x):
    return np.asarray(ops.convert_to_numpy(model(x, training=False)))


def nested_wrappers(model):
    return [w for layer in model.layers if isinstance(layer, InPlaceWrapped) for _, w in layer.wrappers()]


def fit(model, x, y, epochs=1, **kwargs):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, **kwargs)


def test_pruning_reaches_a_closed_block_strips_to_the_plain_block_and_round_trips(tmp_path):
    model = block_model()
    assert "block" in kopt.graph.analyze(model).closed_composites  # the case this is about
    before = [np.array(w) for w in model.get_weights()]
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        pruned, report = kopt.sparsity.prune_low_magnitude(
            model, ConstantSparsity(0.5, begin_step=0, frequency=1), return_report=True
        )
    assert {"block/unit/conv", "block/mix/0", "block/mix/1", "head"} <= set(report.wrapped)
    assert {type(w.layer).__name__ for w in nested_wrappers(pruned)} == {"Conv2D", "Dense"}
    callbacks = kopt.callbacks.for_model(pruned)  # finds the nested wrappers
    assert callbacks and len(list(kopt.sparsity.callbacks.prune_wrappers(pruned))) == 4
    fit(pruned, x, y, callbacks=callbacks)
    assert all(w.step == 2 for w in nested_wrappers(pruned))  # the step advanced inside the block

    stripped = kopt.strip(pruned)
    assert not any(getattr(layer, "kopt_internal", False) for layer in stripped._flatten_layers())
    assert isinstance(stripped.get_layer("block"), BatchReadingBlock)
    np.testing.assert_allclose(predict(stripped, x), predict(pruned, x), atol=1e-5)
    found = kernels(stripped)
    assert len(found) == 4
    zeros = sum(int(np.sum(k == 0)) for k in found.values()) / sum(k.size for k in found.values())
    assert abs(zeros - 0.5) <= 0.02, zeros
    for path, kernel in found.items():
        assert abs(np.mean(kernel == 0) - 0.5) <= 0.02, path

    # The user's model and block are untouched: plain sublayers, the same weights.
    block = model.get_layer("block")
    assert type(block.unit.conv) is layers.Conv2D and all(type(d) is layers.Dense for d in block.mix)
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)

    # .keras round trip: the wrappers come back into the block rebuilt from its config, training resumes.
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(predict(loaded, x), predict(pruned, x), atol=1e-5)
    reloaded = nested_wrappers(loaded)
    assert [type(w) for w in reloaded] == [PruneWrapper] * 3
    for a, b in zip(nested_wrappers(pruned), reloaded):
        np.testing.assert_array_equal(ops.convert_to_numpy(a.masks[0]), ops.convert_to_numpy(b.masks[0]))
        assert b.step == 2
    fit(loaded, x, y)
    assert all(w.step == 4 for w in nested_wrappers(loaded))
    zeros = [np.mean(k == 0) for k in kernels(kopt.strip(loaded)).values()]
    assert all(abs(z - 0.5) <= 0.02 for z in zeros), zeros


def test_clustering_reaches_a_closed_block_and_round_trips(tmp_path):
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        clustered = kopt.clustering.cluster_weights(block_model(), 8, seed=0)
    assert len(nested_wrappers(clustered)) == 3
    fit(clustered, x, y)
    stripped = kopt.strip(clustered)
    np.testing.assert_allclose(predict(stripped, x), predict(clustered, x), atol=1e-5)
    found = kernels(stripped)
    assert len(found) == 4 and all(len(np.unique(k)) <= 8 for k in found.values())
    clustered.save(tmp_path / "clustered.keras")
    loaded = keras.saving.load_model(tmp_path / "clustered.keras")
    np.testing.assert_allclose(predict(loaded, x), predict(clustered, x), atol=1e-5)


def test_a_policy_plans_the_sublayers_of_a_closed_block():
    model = block_model()
    plan = kopt.Policy.preset("pcqat").resolve(model)
    assert list(plan.layers)[1:4] == ["block/unit/conv", "block/mix/0", "block/mix/1"]  # right after the block
    nested = plan.layers["block/mix/0"]
    assert nested.prune is not None and nested.cluster is not None and nested.quantize is not None
    assert plan.layers["block/unit/conv"].path == "block/unit/conv"

    rule = kopt.policy.LayerRule("class:Dense", prune=False)
    plan = kopt.Policy.preset("prune", rules=[rule]).resolve(model)
    assert plan.layers["block/mix/1"].prune is None and plan.layers["block/unit/conv"].prune is not None
    wrapped = kopt.prepare(model, kopt.Policy.preset("prune", rules=[rule]), stage="prune", steps=4, compile=False)
    assert [type(w.layer).__name__ for w in nested_wrappers(wrapped)] == ["Conv2D"]


class OwnKernel(layers.Layer):
    """A sublayer with a raw 2-D weight: no technique knows it."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        return ops.matmul(x, self.w)


class MixedBlock(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4)
        self.own = OwnKernel()

    def call(self, x):
        return self.own(self.dense(x)) * ops.ones((ops.shape(x)[0], 1))


def test_the_coverage_warning_names_what_in_place_wrapping_leaves_out():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, MixedBlock(name="mixed")(inputs))
    assert "mixed" in kopt.graph.analyze(model).closed_composites
    with pytest.warns(CoverageWarning) as caught:
        clustered = kopt.clustering.cluster_weights(model, 4, seed=0)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, CoverageWarning)]
    assert "reaches 24/40 kernel weights" in message and "1 kernel(s) left out" in message
    assert "- mixed/own_kernel" in message
    assert "kept whole: kopt wraps its sublayers in place" in message and "its OwnKernel" in message
    assert [path for path, _ in clustered.get_layer("cluster_mixed").wrappers()] == ["dense"]


def test_later_stages_freeze_the_sublayers_earlier_stages_changed():
    """A stage that does not wrap a sublayer an earlier stage pruned would fine-tune it and regrow its zeros."""
    model = block_model()
    keep_float = kopt.policy.LayerRule("block", quantize=False)  # QAT keeps a closed block in float
    wrapped = kopt.stages.wrap(model, kopt.Policy.preset("pqat", rules=[keep_float]).resolve(model), "quantize")
    trainable = {id(v) for v in wrapped.trainable_weights}
    block = next(layer for layer in wrapped.layers if layer.name == "block")
    assert not any(id(sub.kernel) in trainable for sub in [block.unit.conv, *block.mix])
    assert any("head" in v.path for v in wrapped.trainable_weights)

    mix_not_clustered = kopt.policy.LayerRule("path:block/mix/.*", cluster=False)
    plan = kopt.Policy.preset("pcqat", rules=[keep_float, mix_not_clustered]).resolve(model)
    wrapped = kopt.stages.wrap(model, plan, "cluster", seed=0)
    block = next(layer for layer in wrapped.layers if isinstance(layer, InPlaceWrapped)).layer
    trainable = {id(v) for v in wrapped.trainable_weights}
    assert not any(id(dense.kernel) in trainable for dense in block.mix)  # pruned only: frozen
    assert id(block.unit.conv.layer.kernel) in trainable  # clustered in this stage: trains
    assert all(sub.trainable for sub in [model.get_layer("block").unit.conv, *model.get_layer("block").mix])


# ----------------------------------------------------------------- QAT in place (kopt.quantization.inplace)
def quant_wrappers(model):
    return [w for w in nested_wrappers(model) if isinstance(w, kopt.quantization.QuantizeWrapper)]


def block_kernels(model):
    """The block's weight sublayers by path, each with the kernel it deploys (Keras layout, NumPy): a
    quantization wrapper's fake-quantized kernel, a plain sublayer's own."""
    block = next(layer for layer in model.layers if layer.name in ("block", "quant_block"))
    block = block.layer if isinstance(block, InPlaceWrapped) else block
    found = {}
    for path, sub in {"unit/conv": block.unit.conv, "mix/0": block.mix[0], "mix/1": block.mix[1]}.items():
        if isinstance(sub, kopt.quantization.QuantizeWrapper):
            sub, kernel = sub.layer, dict((id(v), t) for v, t in sub.transformed_weights())[id(sub.layer.kernel)]
        else:
            kernel = sub.kernel
        found[path] = (sub, np.asarray(ops.convert_to_numpy(kernel)))
    return found


def test_qat_fake_quantizes_a_closed_block_in_place_trains_strips_and_round_trips(tmp_path):
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)  # every kernel reached: no warning
        qat, report = kopt.quantization.quantize_model(block_model(), return_report=True)
    assert report.in_place_blocks == ["block"]
    assert set(report.in_place_sublayers) == {"block/unit/conv", "block/mix/0", "block/mix/1"}
    assert report.coverage.fraction == 1.0
    wrappers = quant_wrappers(qat)
    assert [type(w.layer).__name__ for w in wrappers] == ["Conv2D", "Dense", "Dense"]
    before = [np.array(ops.convert_to_numpy(w.layer.kernel)) for w in wrappers]
    fit(qat, x, y)
    assert all(not np.array_equal(b, ops.convert_to_numpy(w.layer.kernel)) for b, w in zip(before, wrappers))

    stripped = kopt.strip(qat)  # keeps the fake-quant ops the converter reads, as for any QAT layer
    assert len(quant_wrappers(stripped)) == 3
    np.testing.assert_allclose(predict(stripped, x), predict(qat, x), atol=1e-5)
    for path, (sub, kernel) in block_kernels(stripped).items():  # the trained int8 grid, checked with NumPy
        per_channel = isinstance(sub, layers.Conv2D)  # the default scheme: Conv per channel, Dense per tensor
        axes = tuple(range(kernel.ndim - 1)) if per_channel else None
        scale = np.max(np.abs(kernel), axis=axes) / 127
        steps = kernel / scale
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3, err_msg=path)

    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    assert len(quant_wrappers(loaded)) == 3
    np.testing.assert_allclose(predict(loaded, x), predict(qat, x), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="optimize's int8 stage needs TensorFlow")
def test_pcqat_of_a_closed_block_lowers_fully_int8_on_its_trained_grid_keeping_zeros_and_clusters():
    from kopt.export import inspection, run
    from kopt.export.flatbuffer import load

    # The ReLU inside the Conv2D: TFLite fuses it, so the wrapper's output range is the op's. Applied by the
    # block's call instead, it runs as a RELU op whose range is calibrated (up to 4 output steps off here).
    model = block_model(fused=True)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = data(64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)  # no weight layer of the block left float
        result = kopt.optimize(model, kopt.Policy.preset("pcqat", number_of_clusters=4), train_data=(x, y),
                               epochs=1, batch_size=32, verbose=0)
    assert not [w for w in result.report.warnings if w.startswith("Coverage:")]
    assert any("the activations inside block (weights trained in place)" in note
               for note in result.stages[-1].report.notes)
    with pytest.raises(kopt.errors.PolicyError, match=r"block\(s\) \['block'\] are kept whole"):
        kopt.stages.lower_stage(result.model, result.plan)  # the block's inner ranges need calibration data

    graph = load(result.tflite).main
    touched = {i for op in graph.operators for i in op.inputs + op.outputs if i >= 0}
    assert {graph.tensors[i].dtype for i in touched} == {"INT8", "INT32"}  # every op integer, int8 I/O
    assert {"DEQUANTIZE", "QUANTIZE"}.isdisjoint(op.name for op in graph.operators)

    pruned = block_kernels(next(s for s in result.stages if s.name == "prune").model)  # the prune stage's zeros
    stored = {t.name: t for t in inspection.weight_tensors(result.tflite)}
    for path, (sub, kernel) in block_kernels(result.model).items():
        tensor = stored[f"{sub.name}/kernel"]
        zeros = np.moveaxis(pruned[path][1], -1, 0) == 0
        assert abs(zeros.mean() - 0.5) <= 0.05 and np.all(tensor.values[zeros] == 0), path
        assert tensor.max_unique_per_channel <= 4 + 1, path  # 4 clusters and the zeros
        # The trained grid is the stored one: per channel for the Conv2D, per tensor for the Dense (NumPy).
        scales = np.asarray(tensor.quantization.scales)
        assert len(scales) == (kernel.shape[-1] if isinstance(sub, layers.Conv2D) else 1), path
        layout = np.moveaxis(kernel, -1, 0)  # TFLite's (out, ...) layout
        np.testing.assert_allclose(tensor.values * scales.reshape((-1,) + (1,) * (layout.ndim - 1)), layout,
                                   rtol=1e-5, atol=1e-7, err_msg=path)
        magnitude = np.max(np.abs(layout), axis=tuple(range(1, layout.ndim)) if len(scales) > 1 else None)
        np.testing.assert_allclose(scales, magnitude / 127, rtol=1e-5, err_msg=path)

    step = graph.tensor(graph.outputs[0]).quantization.scales[0]
    difference = np.abs(run(result.tflite, x) - predict(result.model, x)) / step
    assert np.mean(difference <= 2 + 1e-3) >= 0.99, np.max(difference)


def test_a_rule_on_a_closed_block_reaches_its_sublayers_unless_a_rule_names_them():
    """The plan says what happens: ``LayerRule("block", ...)`` turns techniques off for the block's sublayer
    entries too, a rule naming a sublayer (name / path) overrides the settings it names, and the stages do that."""
    block_off = kopt.policy.LayerRule("block", prune=False, quantize=False)
    mix_pruned = kopt.policy.LayerRule("path:block/mix/.*", prune={"sparsity": 0.5})
    policy = kopt.Policy.preset("pqat", rules=[block_off, mix_pruned])
    plan = policy.resolve(block_model())
    conv, mix = plan.layers["block/unit/conv"], plan.layers["block/mix/0"]
    assert conv.prune is None and conv.quantize is None and "block" in conv.rule
    assert mix.prune is not None and mix.quantize is None  # its own rule prunes it; the block's keeps it float
    assert "| block/unit/conv | Conv2D | - | - | - |" in plan.table()
    assert kopt.stages.excluded_from_qat(plan) == ["block"]  # lowering calibrates the block, named once

    x, y = data()
    model = block_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    result = kopt.optimize(model, policy, train_data=(x, y), epochs=1, batch_size=8, lower=False, verbose=0)
    pruned = block_kernels(next(s for s in result.stages if s.name == "prune").model)
    assert np.mean(pruned["unit/conv"][1] == 0) == 0  # kept dense, as planned
    assert all(abs(np.mean(pruned[p][1] == 0) - 0.5) <= 0.02 for p in ("mix/0", "mix/1"))
    assert not quant_wrappers(result.model)  # the block stays float in QAT

    # A rule naming one sublayer fake-quantizes it in place although its block is kept float.
    one = kopt.policy.LayerRule("block/mix/0", quantize={})
    plan = kopt.Policy.preset("qat", rules=[kopt.policy.LayerRule("block", quantize=False), one]).resolve(model)
    assert plan.layers["block/mix/0"].quantize is not None and plan.layers["block/mix/1"].quantize is None
    qat = kopt.stages.wrap(model, plan, "quantize")
    assert [path for layer in qat.layers if isinstance(layer, InPlaceWrapped) for path, _ in layer.wrappers()] == [
        "mix/0"
    ]


@keras.saving.register_keras_serializable(package="kopt_tests")
class TwiceCallingBlock(layers.Layer):
    """Applies one Dense to two inputs in each call (and reads the batch size: kept whole)."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.shared = layers.Dense(units)

    def build(self, input_shape):
        self.shared.build(input_shape)

    def call(self, x):
        return (self.shared(x) + self.shared(2.0 * x)) * ops.ones((ops.shape(x)[0], 1))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_sublayer_a_closed_block_calls_twice_advances_its_pruning_step_once_per_training_step(tmp_path):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(5, name="head")(TwiceCallingBlock(name="block")(inputs)))
    assert "block" in kopt.graph.analyze(model).closed_composites
    schedule = ConstantSparsity(0.5, begin_step=2, frequency=1)  # no mask before the third training step
    pruned = kopt.sparsity.prune_low_magnitude(model, schedule)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 5, 16)
    fit(pruned, x, y)  # two training steps
    (inner,) = nested_wrappers(pruned)
    head = pruned.get_layer("prune_head")
    assert inner.step == head.step == 2  # as the top-level wrapper counts
    kernel = np.asarray(ops.convert_to_numpy(inner.layer.kernel))
    assert np.all(ops.convert_to_numpy(inner.masks[0]) == 1) and np.all(kernel != 0)  # not pruned yet
    fit(pruned, x, y)  # steps 3 and 4: pruned now
    assert inner.step == 4 and np.mean(ops.convert_to_numpy(inner.masks[0]) == 0) == pytest.approx(0.5)
    pruned.save(tmp_path / "pruned.keras")  # the count per step survives the round trip
    (reloaded,) = nested_wrappers(keras.saving.load_model(tmp_path / "pruned.keras"))
    assert reloaded.step == 4 and reloaded.calls_per_step == inner.calls_per_step
    staged = kopt.prepare(model, "prune", stage="prune", steps=4, compile=False)  # a policy's stage counts too
    assert [w.calls_per_step for w in nested_wrappers(staged)] == [inner.calls_per_step]


@keras.saving.register_keras_serializable(package="kopt_tests")
class PairingBlock(layers.Layer):
    """Mixes the samples of a batch in pairs, so a batch of one does not run, and reads the batch size (kept whole)."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        pairs = ops.reshape(self.dense(x), (-1, 2, self.units))
        return ops.reshape(ops.flip(pairs, axis=1), (-1, self.units)) * ops.ones((ops.shape(x)[0], 1))

    def compute_output_shape(self, input_shape):  # PyTorch's symbolic run cannot follow the pairing reshape
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_block_that_cannot_be_counted_on_zeros_is_named_and_its_sublayers_still_pruned():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(5, name="head")(PairingBlock(name="pairing")(inputs)))
    assert "pairing" in kopt.graph.analyze(model).closed_composites
    with pytest.warns(kopt.errors.KoptRuntimeWarning, match="'pairing' once on a batch of zeros"):
        pruned = kopt.sparsity.prune_low_magnitude(model, ConstantSparsity(0.5, begin_step=0, frequency=1))
    (inner,) = nested_wrappers(pruned)
    assert inner.calls_per_step == 1
    rng = np.random.default_rng(0)
    fit(pruned, rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 5, 16))
    assert inner.step == 2 and np.mean(ops.convert_to_numpy(inner.masks[0]) == 0) == pytest.approx(0.5)
