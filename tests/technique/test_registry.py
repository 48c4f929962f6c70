"""The technique registry: one entry per technique, read by policies, stages and the sensitivity analysis."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kopt
from kopt.core.errors import InvalidArgumentError
from kopt.pipeline.stages import stage_names
from kopt.policy import settings_types
from kopt.technique.registry import NotEligible, get_technique, technique_names


def test_techniques_come_in_stage_order_with_their_settings():
    assert technique_names() == ("prune", "cluster", "quantize")
    assert settings_types() == {
        "prune": kopt.sparsity.PruneSettings,
        "cluster": kopt.clustering.ClusterSettings,
        "quantize": kopt.quantization.QuantizeSettings,
    }


def test_an_unknown_technique_is_named_with_the_valid_ones():
    with pytest.raises(InvalidArgumentError, match=r"'distill'.*\['prune', 'cluster', 'quantize'\]"):
        get_technique("distill")


def test_entries_say_which_layers_they_reach_and_which_weights():
    dense, flatten = keras.layers.Dense(4), keras.layers.Flatten()
    dense.build((None, 3))
    flatten.build((None, 3, 2))
    prune, cluster = get_technique("prune"), get_technique("cluster")
    assert prune.applies(dense) and cluster.applies(dense)
    assert not prune.applies(flatten) and not cluster.applies(flatten)
    assert [w.name for w in prune.weights(dense)] == ["kernel"]
    with pytest.raises(NotEligible):
        prune.weights(flatten)
    depthwise = keras.layers.DepthwiseConv2D(3)
    depthwise.build((None, 8, 8, 2))
    assert prune.applies(depthwise) and not prune.on_by_default(depthwise)  # opt-in only


def test_a_stage_runs_only_when_its_settings_train():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Dense(8, name="hidden")(inputs)))
    assert stage_names(kopt.Policy.preset("pcqat").resolve(model)) == ["prune", "cluster", "quantize"]
    assert stage_names(kopt.Policy.preset("ptq").resolve(model)) == []  # post-training: no fine-tuning stage


def test_one_shot_pruning_matches_a_numpy_magnitude_cut():
    values = np.array([[0.1, -0.5, 0.05], [2.0, -0.01, 0.3]], np.float32)
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    dense.kernel.assign(values)
    prune = get_technique("prune")
    (pruned,) = prune.one_shot(dense, prune.weights(dense), [values], 0.5)
    keep = np.abs(values) > np.median(np.abs(values))
    np.testing.assert_array_equal(pruned, np.where(keep, values, 0))
