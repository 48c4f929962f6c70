"""Plans through the pipeline: keyed by flattened names across nested models, carried to the QAT stage's checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kopt
from kopt.core.errors import GraphRewriteError
from kopt.graph import analyze, map_layers
from kopt.pipeline import run_stages
from kopt.pipeline.training import CompileSettings, Training
from kopt.policy import ClusterSettings, Policy, PolicyError, QuantizeSettings
from kopt.quantization import NotClusteredError
from tests.optimize_testing import compile_model, digits, kernel, tiny_dense


def twin_towers() -> keras.Model:
    """Two sub-models ``a`` and ``b`` that each hold a Dense named ``dense``, joined by a head."""

    def tower(name: str) -> keras.Model:
        inputs = keras.Input((64,))
        return keras.Model(inputs, layers.Dense(24, activation="relu", name="dense")(inputs), name=name)

    inputs = keras.Input((8, 8, 1))
    flat = layers.Flatten(name="flat")(inputs)
    joined = layers.Concatenate(name="join")([tower("a")(flat), tower("b")(flat)])
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="head")(joined), name="twins")


def test_flat_names_tell_same_named_nested_layers_apart_and_map_layers_uses_them():
    model = twin_towers()
    graph = analyze(model)
    names = {graph.nodes_of(layer)[0]: name for layer in graph.layers() for name in [graph.flat_names()[id(layer)]]}
    assert names == {"flat": "flat", "a/dense": "a_dense", "b/dense": "b_dense", "join": "join", "head": "head"}
    with pytest.raises(GraphRewriteError, match=r"share their names.*clone=True"):
        graph.rebuild()
    flat = map_layers(model, lambda layer: None)
    assert [layer.name for layer in flat.layers if isinstance(layer, layers.Dense)] == ["a_dense", "b_dense", "head"]
    x = digits(train=16)[0]
    np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    assert [layer.name for layer in model.get_layer("a").layers][-1] == "dense"  # the user's model is untouched


@pytest.mark.backends
def test_same_named_layers_in_two_sub_models_get_independent_plans():
    keras.utils.set_random_seed(0)
    model = compile_model(twin_towers())
    x, y, xv, yv = digits(train=256, val=64)
    policy = Policy(
        cluster=ClusterSettings(number_of_clusters=16),
        rules=(
            kopt.policy.LayerRule("path:a/dense", cluster={"number_of_clusters": 3}),
            kopt.policy.LayerRule("path:b/dense", cluster=False),
        ),
    )
    plan = policy.resolve(model)
    assert plan.layers["a_dense"].cluster.number_of_clusters == 3 and plan.layers["a_dense"].path == "a/dense"
    assert plan.layers["b_dense"].cluster is None and plan.layers["head"].cluster.number_of_clusters == 16
    training = Training(train_data=(x, y), validation_data=(xv, yv), compile=CompileSettings.from_model(model),
                        epochs=1, verbose=0)
    result = run_stages(model, plan, training, lower=False, seed=1)
    assert len(np.unique(kernel(result.model, "a_dense"))) <= 3
    assert len(np.unique(kernel(result.model, "b_dense"))) > 1000  # left alone
    assert len(np.unique(kernel(result.model, "head"))) <= 16


@pytest.mark.backends
def test_cluster_preserving_qat_checks_each_layer_against_its_planned_clusters():
    """A layer reaching the CQAT stage with more distinct values than its plan allows is refused, by name."""
    keras.utils.set_random_seed(0)
    model = compile_model(tiny_dense())
    x, y, xv, yv = digits(train=128, val=64)
    training = Training(train_data=(x, y), validation_data=(xv, yv), compile=CompileSettings.from_model(model),
                        epochs=1, verbose=0)
    plan = Policy.preset("pcqat", number_of_clusters=8).resolve(model)
    assert kopt.stages.planned_clusters(plan) == {"hidden": (9, False), "out": (9, False)}  # 8 + the zeros
    with pytest.raises(NotClusteredError, match=r"'hidden'.*more than max_clusters=9"):
        run_stages(model, plan, training, stages=["quantize"], lower=False, baseline=False)
    # Clustered as planned, the same stage trains (the cluster stage first).
    result = run_stages(model, plan, training, stages=["cluster", "quantize"], lower=False, baseline=False, seed=1)
    assert [s.name for s in result.stages] == ["cluster", "quantize"]


def test_a_registered_scheme_can_be_named_in_a_policy(tmp_path):
    from kopt.quantization import default_8bit_scheme, register_scheme, unregister_scheme

    with pytest.raises(PolicyError, match=r"Unknown quantize.scheme 'per_channel_dense'.*register_scheme"):
        QuantizeSettings(scheme="per_channel_dense")
    register_scheme("per_channel_dense", lambda: default_8bit_scheme(dense_per_channel=True))
    try:
        policy = Policy.from_dict({"quantize": {"scheme": "per_channel_dense"}})
        model = tiny_dense()
        quantized = kopt.stages.wrap_quantize(model, policy.resolve(model))
        quantizers = [q for layer in quantized.layers if hasattr(layer, "quantize_config")
                      for q in layer.quantize_config.weights.values()]
        assert len(quantizers) == 2 and all(q.per_channel for q in quantizers)  # default_8bit: Dense per tensor
        assert not any(q.per_channel for layer in kopt.quantization.quantize_model(model).layers
                       if hasattr(layer, "quantize_config") for q in layer.quantize_config.weights.values())
    finally:
        unregister_scheme("per_channel_dense")
