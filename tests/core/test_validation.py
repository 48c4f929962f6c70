"""kopt.validation: every entry point refuses a model with NaN/Inf weights, names them, changes nothing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kopt
from kopt.core.errors import KoptError, NonFiniteWeightsError
from kopt.core.validation import check_finite_weights, non_finite_weights

pytestmark = pytest.mark.backends


def mlp(name: str = "mlp") -> keras.Model:
    inputs = keras.Input((6,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def poisoned(value: float, layer: str = "head", weight: str = "kernel", count: int = 2) -> keras.Model:
    model = mlp()
    variable = getattr(model.get_layer(layer), weight)
    values = np.array(keras.ops.convert_to_numpy(variable))
    values.flat[:count] = value
    variable.assign(values)
    return model


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def data(samples: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(samples, 6)).astype("float32"), rng.integers(0, 3, samples)


ENTRY_POINTS = {
    "kopt.optimize": lambda m: kopt.optimize(m, "prune", train_data=data(), epochs=1, lower=False, verbose=0),
    "kopt.prepare": lambda m: kopt.prepare(m, "qat"),
    "kopt.sparsity.prune_low_magnitude": lambda m: kopt.sparsity.prune_low_magnitude(m),
    "kopt.clustering.cluster_weights": lambda m: kopt.clustering.cluster_weights(m, 3, seed=0),
    "kopt.quantization.quantize_apply": lambda m: kopt.quantization.quantize_model(m),
    "kopt.export.to_tflite": lambda m: kopt.export.to_tflite(m, representative_data=data()[0]),
}


# Each entry point once, the three bad values spread over them (all share one check).
CASES = [(caller, [np.nan, np.inf, -np.inf][k % 3]) for k, caller in enumerate(sorted(ENTRY_POINTS))]


@pytest.mark.parametrize("caller, value", CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_entry_points_refuse_non_finite_weights_before_changing_anything(caller, value):
    model = poisoned(value)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = snapshot(model)
    layers_before = [layer.name for layer in model.layers]
    with pytest.raises(NonFiniteWeightsError) as info:
        ENTRY_POINTS[caller](model)
    message = str(info.value)
    kind = "NaN" if np.isnan(value) else "Inf"
    assert caller in message and "layer 'head' weight 'kernel'" in message and f"2 {kind}" in message
    assert "Nothing was changed" in message and "reload good weights" in message
    assert info.value.weights == [("head", "kernel", 2 * (kind == "NaN"), 2 * (kind == "Inf"))]
    assert isinstance(info.value, ValueError) and isinstance(info.value, KoptError)
    for old, new in zip(before, snapshot(model)):
        np.testing.assert_array_equal(old, new)  # NaN == NaN here
    assert [layer.name for layer in model.layers] == layers_before


def test_single_layers_are_checked_too():
    layer = keras.layers.Dense(4, name="lonely")
    layer.build((None, 3))
    layer.bias.assign(np.array([0.0, np.nan, 0.0, np.inf], "float32"))
    with pytest.raises(NonFiniteWeightsError, match="Layer 'lonely'.*weight 'bias' \\(1 NaN, 1 Inf\\)"):
        kopt.sparsity.prune_low_magnitude(layer)
    with pytest.raises(NonFiniteWeightsError, match="kopt.clustering.cluster_weights"):
        kopt.clustering.cluster_weights(layer, 2)
    kopt.sparsity.prune_low_magnitude(keras.layers.Dense(4))  # unbuilt: nothing to check yet


def test_non_trainable_and_nested_weights_are_named_by_path():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.BatchNormalization(name="bn")], name="block")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inner(inputs)))
    bn = inner.get_layer("bn")
    bn.moving_variance.assign(np.full((6,), np.inf, "float32"))
    assert non_finite_weights(model) == [("block/bn", "moving_variance", 0, 6)]
    with pytest.raises(NonFiniteWeightsError, match="'block/bn' weight 'moving_variance' \\(0 NaN, 6 Inf\\)"):
        check_finite_weights(model, "test")


def test_many_bad_weights_are_counted_and_the_first_listed():
    inputs = keras.Input((2,))
    x = inputs
    for k in range(8):
        x = keras.layers.Dense(2, name=f"d{k}")(x)
    model = keras.Model(inputs, x)
    for layer in model.layers[1:]:
        layer.bias.assign(np.array([np.nan, 0.0], "float32"))
    with pytest.raises(NonFiniteWeightsError) as info:
        check_finite_weights(model, "test")
    assert "8 weight(s)" in str(info.value) and "and 3 more" in str(info.value) and "'d0'" in str(info.value)
    assert len(info.value.weights) == 8


def test_finite_models_and_non_float_weights_pass():
    check_finite_weights(mlp(), "test")
    embedding = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(5, 2)])
    check_finite_weights(embedding, "test")
    check_finite_weights("not a layer", "test")  # other checks own wrong types
    assert non_finite_weights(mlp()) == []
