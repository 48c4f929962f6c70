"""kopt.pipeline.stages: the plan's stages in order, and each stage's wrapped model with per-layer settings."""

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
from kopt.pipeline.training import CompileSettings, Training
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
