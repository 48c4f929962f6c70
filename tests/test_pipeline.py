"""kopt.stages / kopt.pipeline / kopt.training: per-layer wrapping, schedules, stage order, data kinds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kopt.clustering import ClusterWrapper
from kopt.pipeline import run_stages
from kopt.pipeline.stages import (
    check_plan,
    prune_schedule,
    quantization_scheme,
    stage_names,
    wrap_cluster,
    wrap_prune,
    wrap_quantize,
)
from kopt.pipeline.training import CompileSettings, CompileSettingsError, Training, as_arrays, steps_per_epoch_of
from kopt.policy import ClusterSettings, LayerRule, Policy, PolicyError, PruneSettings, QuantizeSettings
from kopt.sparsity import ConstantSparsity, PolynomialDecay, PruneWrapper
from tests.optimize_testing import compile_model, digits, kernel, tiny_dense


def _wrappers(model, cls):
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, cls)}


# --------------------------------------------------------------- plan -> stages
@pytest.mark.backends
def test_stage_names_follow_the_plan():
    model = tiny_dense()
    assert stage_names(Policy.preset("pcqat").resolve(model)) == ["prune", "cluster", "quantize"]
    assert stage_names(Policy.preset("ptq").resolve(model)) == []
    assert stage_names(Policy.preset("prune").resolve(model)) == ["prune"]
    # a rule can turn a technique on for one layer only
    policy = Policy(quantize=QuantizeSettings(), rules=(LayerRule("out", cluster={"number_of_clusters": 4}),))
    assert stage_names(policy.resolve(model)) == ["cluster", "quantize"]


@pytest.mark.backends
def test_mixed_quantize_modes_are_rejected():
    policy = Policy(quantize=QuantizeSettings(), rules=(LayerRule("out", quantize={"mode": "ptq"}),))
    with pytest.raises(PolicyError, match=r"quantize.mode must be the same for every layer.*\['ptq', 'qat'\]"):
        check_plan(policy.resolve(tiny_dense()))


@pytest.mark.backends
def test_prune_schedule_end_step_defaults_to_two_thirds_of_the_steps():
    schedule = prune_schedule(PruneSettings(sparsity=0.6, frequency=10), steps=90)
    assert isinstance(schedule, PolynomialDecay)
    assert (schedule.begin_step, schedule.end_step, schedule.final_sparsity, schedule.frequency) == (0, 60, 0.6, 10)
    assert prune_schedule(PruneSettings(end_step=7), steps=None).end_step == 7
    constant = prune_schedule(PruneSettings(schedule="constant", sparsity=0.3), steps=None)
    assert isinstance(constant, ConstantSparsity) and constant.end_step == -1
    with pytest.raises(PolicyError, match="number of training steps is unknown"):
        prune_schedule(PruneSettings(), steps=None, layer="conv")


@pytest.mark.backends
def test_wrap_prune_gives_each_layer_its_own_schedule():
    policy = Policy(
        prune=PruneSettings(sparsity=0.5),
        rules=(LayerRule("out", prune={"sparsity": 0.8, "begin_step": 5}), LayerRule("flat", exclude=True)),
    )
    model = tiny_dense()
    wrapped = wrap_prune(model, policy.resolve(model), steps=30)
    wrappers = _wrappers(wrapped, PruneWrapper)
    assert set(wrappers) == {"hidden", "out"}
    assert wrappers["hidden"].schedule.final_sparsity == 0.5 and wrappers["hidden"].schedule.end_step == 20
    assert wrappers["out"].schedule.final_sparsity == 0.8 and wrappers["out"].schedule.begin_step == 5
    excluded = Policy(prune=PruneSettings(), rules=(LayerRule("class:Dense", prune=False),))
    with pytest.raises(PolicyError, match="prunes no layer"):
        wrap_prune(model, excluded.resolve(model), steps=30)


@pytest.mark.backends
def test_wrap_prune_m_by_n_leaves_incompatible_layers_dense_with_a_note():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="narrow_in")(inputs)  # 6 inputs: not a multiple of 4
    model = keras.Model(inputs, keras.layers.Dense(4, name="ok")(x))
    notes: list[str] = []
    wrapped = wrap_prune(model, Policy.preset("prune_2x4").resolve(model), steps=10, notes=notes)
    assert set(_wrappers(wrapped, PruneWrapper)) == {"ok"}
    assert notes and notes[0].startswith("narrow_in: not pruned")


@pytest.mark.backends
def test_wrap_cluster_uses_per_layer_settings():
    policy = Policy.preset("cluster", number_of_clusters=8, rules=[{"match": "out", "cluster": {"number_of_clusters": 4, "per_channel": True}}])
    model = tiny_dense()
    wrapped = wrap_cluster(model, policy.resolve(model), seed=3)
    wrappers = _wrappers(wrapped, ClusterWrapper)
    assert wrappers["hidden"].number_of_clusters == 8 and not wrappers["hidden"].per_channel
    assert wrappers["out"].number_of_clusters == 4 and wrappers["out"].per_channel


def test_wrap_quantize_per_layer_bits_and_float_layers():
    from kopt.quantization import QuantizeWrapper

    model = tiny_dense()
    policy = Policy.preset("qat", rules=[{"match": "hidden", "quantize": {"bits": 4}}])
    scheme = quantization_scheme(policy.resolve(model))
    assert not isinstance(scheme, str)
    quantized = wrap_quantize(model, policy.resolve(model))
    bits = {w.layer.name: w.quantize_config.weights["kernel"].num_bits for w in _wrappers(quantized, QuantizeWrapper).values()}
    assert bits == {"hidden": 4, "out": 8}
    assert quantization_scheme(Policy.preset("qat").resolve(model)) == "default_8bit"

    notes: list[str] = []
    partial = wrap_quantize(model, Policy.preset("qat", rules=[{"match": "out", "quantize": False}]).resolve(model), notes=notes)
    assert set(_wrappers(partial, QuantizeWrapper)) == {"hidden"}
    assert "left in float by the policy: out" in notes


# ----------------------------------------------------------------- training
@pytest.mark.backends
def test_compile_settings_are_reused_with_a_fresh_optimizer():
    model = compile_model(tiny_dense(), lr=0.01)
    settings = CompileSettings.from_model(model)
    other = settings.compile(tiny_dense("other"))
    assert other.optimizer is not model.optimizer
    assert float(keras.ops.convert_to_numpy(other.optimizer.learning_rate)) == pytest.approx(0.01)
    assert other.loss == "sparse_categorical_crossentropy"
    with pytest.raises(CompileSettingsError, match=r"pass loss= and optimizer="):
        CompileSettings.from_model(tiny_dense())
    assert CompileSettings.from_model(tiny_dense(), loss="mse", optimizer="sgd").loss == "mse"


@pytest.mark.backends
def test_data_kinds_steps_and_arrays():
    x, y, _, _ = digits(train=100)
    assert steps_per_epoch_of((x, y), 32) == 4

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return x[index * 20 : (index + 1) * 20], y[index * 20 : (index + 1) * 20]

    assert steps_per_epoch_of(Batches(), None) == 5
    xs, ys = as_arrays(Batches(), limit=30)
    np.testing.assert_array_equal(xs, x[:30])
    np.testing.assert_array_equal(ys, y[:30])
    with pytest.raises(ValueError, match=r"pass the labels too, as \(x, y\)"):
        Training(train_data=x, compile=CompileSettings("adam", "mse"))
    with pytest.raises(ValueError, match="unknown stage"):
        Training(train_data=(x, y), compile=CompileSettings("adam", "mse"), epochs={"prun": 1})


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, index):
        part = slice(index * self.batch, (index + 1) * self.batch)
        return self.x[part], self.y[part]


def test_tf_data_dataset_and_pydataset_are_accepted():
    import tensorflow as tf

    x, y, xv, yv = digits(train=160, val=64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    assert steps_per_epoch_of(dataset, None) == 5
    xs, ys = as_arrays(tf.data.Dataset.from_tensor_slices((x, y)), limit=7, sample_rank=3)  # unbatched
    assert xs.shape == (7, 8, 8, 1) and ys.shape == (7,)
    for train, validation in ((dataset, (xv, yv)), (_Batches(x, y, 32), _Batches(xv, yv, 16))):
        model = compile_model(tiny_dense())
        training = Training(
            train_data=train, validation_data=validation, compile=CompileSettings.from_model(model), epochs=2, verbose=0
        )
        assert training.steps_for("prune") == 10
        result = run_stages(model, Policy.preset("prune").resolve(model), training, lower=False)
        assert np.mean(kernel(result.model, "hidden") == 0) == pytest.approx(0.5, abs=0.01)
        assert "val_loss" in result.stage("prune").history
        eval_x, eval_y = training.eval_arrays(model)
        np.testing.assert_array_equal(eval_y, yv)
        assert not result.stage("prune").report.notes  # no warning from Keras about the data


# ----------------------------------------------------------------- pipeline
@pytest.mark.backends
def test_run_stages_prune_then_cluster_keeps_zeros_and_clusters():
    """Prune -> strip -> sparsity-preserving cluster -> strip, trained under the current backend."""
    keras.utils.set_random_seed(0)
    x, y, xv, yv = digits(train=320)
    model = compile_model(tiny_dense())
    model.fit(x, y, epochs=2, verbose=0)
    policy = Policy(
        prune=PruneSettings(sparsity=0.5, frequency=5),
        cluster=ClusterSettings(number_of_clusters=8, preserve_sparsity=True),
    )
    training = Training(
        train_data=(x, y), validation_data=(xv, yv), compile=CompileSettings.from_model(model), epochs=2, verbose=0
    )
    lines: list[str] = []
    result = run_stages(model, policy.resolve(model), training, lower=False, seed=1, log=lines.append)
    assert [s.name for s in result.stages] == ["baseline", "prune", "cluster"]
    for layer in ("hidden", "out"):
        pruned, clustered = kernel(result.stage("prune").model, layer), kernel(result.model, layer)
        assert np.mean(pruned == 0) == pytest.approx(0.5, abs=0.01)
        assert np.all(clustered[pruned == 0] == 0)  # zeros preserved
        assert len(np.unique(clustered)) <= 8
    report = result.stage("cluster").report
    assert report.max_unique_values <= 8 and report.sparsity >= 0.49
    assert report.keras_accuracy > 0.5
    assert report.zipped_bytes < result.stage("baseline").report.zipped_bytes / 2
    assert any(line.startswith("[kopt] == stage prune") for line in lines)
    assert sum(line.startswith("[kopt] ") and "keras acc" in line for line in lines) == 3
    # the user's model is untouched and the stages' kernels are there for plots
    assert np.mean(kernel(model, "hidden") == 0) == 0
    assert set(result.stage("cluster").kernels) == {"hidden", "out"}


@pytest.mark.backends
def test_run_stages_validates_the_stage_list():
    model = compile_model(tiny_dense())
    x, y, _, _ = digits(train=32)
    training = Training(train_data=(x, y), compile=CompileSettings.from_model(model), verbose=0)
    plan = Policy.preset("prune").resolve(model)
    with pytest.raises(ValueError, match=r"Unknown stage\(s\) \['finetune'\]"):
        run_stages(model, plan, training, stages=["finetune"], lower=False)
    with pytest.raises(ValueError, match="must run in the order"):
        run_stages(model, Policy.preset("prune").resolve(model), training, stages=["cluster", "prune"], lower=False)


@pytest.mark.backends
def test_plan_asks_the_technique_packages_what_applies():
    class Custom(keras.layers.Layer):
        """A layer with a 2-D weight that neither pruning nor clustering knows."""

        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3), name="w")

        def call(self, x):
            return keras.ops.matmul(x, self.w)

    class OptIn(Custom):
        def get_prunable_weights(self):
            return [self.w]

    inputs = keras.Input((4,))
    x = Custom(name="custom")(inputs)
    x = OptIn(name="opt_in")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.Embedding(10, 2, name="emb")(keras.ops.cast(x, "int32")))
    plan = Policy.preset("pcqat").resolve(model)
    assert plan.layers["custom"].prune is None and plan.layers["custom"].cluster is None
    assert plan.layers["opt_in"].prune is not None and plan.layers["opt_in"].cluster is None
    assert plan.layers["bn"].prune is None and plan.layers["bn"].cluster is None
    assert plan.layers["emb"].prune is not None and plan.layers["emb"].cluster is not None


@pytest.mark.backends
def test_a_pruned_layer_left_out_of_clustering_keeps_its_zeros():
    # prune both Dense layers, cluster only "out": "hidden" must not regrow its pruned weights
    # while the clustering stage fine-tunes the whole model.
    x, y, x_val, y_val = digits()
    model = compile_model(tiny_dense())
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    policy = Policy(
        prune=PruneSettings(sparsity=0.6, schedule="constant"),
        cluster=ClusterSettings(number_of_clusters=8, preserve_sparsity=True),
        rules=(LayerRule("hidden", cluster=False),),
    )
    training = Training(train_data=(x, y), compile=CompileSettings.from_model(model), epochs=1, verbose=0)
    result = run_stages(model, policy.resolve(model), training, lower=False, baseline=False)
    pruned, clustered = result.stage("prune").model, result.stage("cluster").model
    zeros = kernel(pruned, "hidden") == 0
    assert zeros.mean() == pytest.approx(0.6, abs=0.01)
    after = kernel(clustered, "hidden")
    assert np.all(after[zeros] == 0)  # every pruned weight still zero
    assert not np.array_equal(after[~zeros], kernel(pruned, "hidden")[~zeros])  # the others trained
    assert np.unique(kernel(clustered, "out")).size <= 8


@pytest.mark.backends
def test_learning_rate_scale_for_fine_tuning():
    settings = CompileSettings(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    scaled, note = settings.with_learning_rate_scale(0.1)
    assert scaled.optimizer.get_config()["learning_rate"] == pytest.approx(2e-4)
    assert settings.optimizer.get_config()["learning_rate"] == pytest.approx(2e-3)  # the original is untouched
    assert "2e-04" in note or "0.0002" in note
    by_name, _ = CompileSettings(optimizer="sgd", loss="mse").with_learning_rate_scale(0.5)
    assert isinstance(by_name.optimizer, keras.optimizers.SGD)
    assert by_name.optimizer.get_config()["learning_rate"] == pytest.approx(0.005)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
    with_schedule = CompileSettings(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    kept, note = with_schedule.with_learning_rate_scale(0.1)
    assert kept.optimizer is with_schedule.optimizer and "schedule kept" in note
