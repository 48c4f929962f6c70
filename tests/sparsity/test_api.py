"""prune_low_magnitude on models: graph handling, report, warnings, validation before any change."""

import keras
import numpy as np
import pytest

from kopt.core.errors import InvalidArgumentError, UnsupportedLayerError, UnsupportedModelError
from kopt.sparsity import ConstantSparsity, PruneWrapper, PruningReport, prune_low_magnitude
from kopt.technique.coverage import CoverageWarning
from tests.sparsity.sparsity_testing import MyDense, Scale


def small_model():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = Scale(name="scale")(x)
    x = MyDense(4, name="mine")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="d2")(x))


def test_report_lists_every_decision_and_warns_about_unknown_layers():
    model = small_model()
    with pytest.warns(UserWarning, match=r"scale \(Scale\)"):
        pruned, report = prune_low_magnitude(model, return_report=True)
    assert isinstance(report, PruningReport)
    assert report.wrapped == {"d1": ["kernel"], "mine": ["kernel"], "d2": ["kernel"]}
    assert set(report.skipped) == {"bn", "scale"}
    assert "get_prunable_weights" in report.skipped["scale"]
    assert "skipped  scale" in str(report)
    assert [type(layer).__name__ for layer in pruned.layers[1:]] == [
        "PruneWrapper", "BatchNormalization", "Scale", "PruneWrapper", "PruneWrapper"
    ]


def test_user_model_is_not_modified():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    weights = [w.copy() for w in model.get_weights()]
    pruned = prune_low_magnitude(model, schedule=ConstantSparsity(0.9, 0))
    pruned.compile("sgd", "mse")
    pruned.fit(np.ones((8, 8)), np.ones((8, 4)), verbose=0)
    assert not any(isinstance(layer, PruneWrapper) for layer in model.layers)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_nested_models_are_flattened_and_shared_layers_stay_shared():
    shared = keras.layers.Dense(8, name="shared")
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="inner_dense")], name="inner")
    a, b = keras.Input((8,)), keras.Input((8,))
    outputs = keras.layers.Add()([inner(shared(a)), shared(b)])
    pruned, report = prune_low_magnitude(keras.Model([a, b], outputs), return_report=True)
    assert set(report.wrapped) == {"shared", "inner_dense"}
    wrappers = {layer.layer.name: layer for layer in pruned.layers if isinstance(layer, PruneWrapper)}
    assert wrappers["shared"].calls_per_step == 2 and wrappers["inner_dense"].calls_per_step == 1
    assert len(wrappers["shared"]._inbound_nodes) == 2


def test_m_by_n_report_for_a_cnn():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)  # 3 input channels: cannot be 2:4
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    outputs = keras.layers.Dense(4, name="head")(keras.layers.Flatten()(x))
    with pytest.warns(CoverageWarning, match=r"(?s)576/864 kernel weights.*'stem'.*'sep'"):
        _, report = prune_low_magnitude(keras.Model(inputs, outputs), m_by_n=(2, 4), return_report=True)
    assert "input-channel count 3" in report.skipped["stem"]
    assert report.wrapped == {"sep": ["pointwise_kernel"], "head": ["kernel"]}
    assert "no input-channel" in report.dense_weights["sep"]["depthwise_kernel"]


def test_nothing_prunable_is_an_error():
    model = keras.Sequential([keras.Input((8,)), keras.layers.BatchNormalization()])
    with pytest.raises(UnsupportedLayerError, match="No layer of model"):
        prune_low_magnitude(model)


def test_already_pruned_layers_are_skipped():
    wrapper = prune_low_magnitude(keras.layers.Dense(4, name="d"))
    _, report = prune_low_magnitude(
        keras.Sequential([keras.Input((8,)), wrapper, keras.layers.Dense(2, name="e")]), return_report=True
    )
    assert "already wrapped" in report.skipped[wrapper.name]
    assert report.wrapped == {"e": ["kernel"]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": 0.5}, "schedule=0.5"),
        ({"m_by_n": (4, 2)}, "m_by_n=(4, 2)"),
        ({"block_size": (0, 2)}, "block_size=(0, 2)"),
        ({"block_size": (1, 4), "m_by_n": (2, 4)}, "cannot be combined"),
    ],
)
def test_bad_options_raise_before_anything_is_built(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prune_low_magnitude(small_model(), **kwargs)


def test_subclassed_model_and_non_layers_are_refused():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    model = Sub()
    model(np.ones((1, 3)))
    with pytest.raises(UnsupportedModelError, match="prune_low_magnitude\\(layer\\)"):
        prune_low_magnitude(model)
    with pytest.raises(TypeError, match="keras.Model or keras.layers.Layer"):
        prune_low_magnitude("model")
    with pytest.raises(TypeError, match="return_report"):
        prune_low_magnitude(keras.layers.Dense(2), return_report=True)
