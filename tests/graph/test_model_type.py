"""A Sequential model given to kopt's technique APIs comes back Sequential (``kopt.graph.model_type``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kopt
from kopt.graph.model_type import like_input, linear_layers


def sequential() -> keras.Sequential:
    return keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
         keras.layers.Flatten(name="flatten"), keras.layers.Dense(3, name="dense")],
        name="seq",
    )


@pytest.mark.backends
@pytest.mark.parametrize(
    "technique",
    [
        lambda m: kopt.sparsity.prune_low_magnitude(m),
        lambda m: kopt.clustering.cluster_weights(m, 4),
        lambda m: kopt.quantization.quantize_model(m),
        lambda m: kopt.strip(kopt.sparsity.prune_low_magnitude(m)),
    ],
    ids=["prune", "cluster", "quantize", "strip"],
)
def test_sequential_in_sequential_out(technique):
    model = sequential()
    out = technique(model)
    assert isinstance(out, keras.Sequential)
    assert out.name == "seq"
    assert out.layers == linear_layers(out)  # model.layers[i] is the i-th layer called
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 1)).astype("float32")
    reference = keras.Model(out.inputs, out.outputs)  # the same layers as a Functional model
    np.testing.assert_allclose(out.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)


def test_functional_stays_functional():
    model = sequential()
    functional = keras.Model(model.inputs, model.outputs, name="functional")
    assert not isinstance(kopt.sparsity.prune_low_magnitude(functional), keras.Sequential)
    assert not isinstance(kopt.strip(functional), keras.Sequential)


def test_a_branched_result_stays_functional_with_a_warning():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(2)(inputs)
    branched = keras.Model(inputs, keras.layers.Add()([a, keras.layers.Dense(2)(inputs)]))
    assert linear_layers(branched) is None
    with pytest.warns(UserWarning, match="non-linear graph"):
        assert like_input(sequential(), branched) is branched
