"""kopt.analysis.sensitivity: one layer at a time, checked against NumPy forward passes.

The hand-computed cases use a two-Dense-layer model with fixed weights: for every layer and
level the expected accuracy is a NumPy forward pass with the layer's weights changed by an
independent NumPy reference (magnitude mask, exact or closed-form 1-D k-means, symmetric
narrow-range rounding), and must equal the table's accuracy.
"""

from __future__ import annotations

import importlib
import json

import keras
import numpy as np
import pytest

from kopt.analysis import SensitivityTable, sensitivity, transformed_weights
from kopt.analysis.table import LayerSensitivity
from kopt.core.errors import InvalidArgumentError, NonFiniteWeightsError, UnsupportedLayerError, UnsupportedModelError
from kopt.policy import ClusterSettings, LayerRule, Policy, QuantizeSettings
from kopt.report.plots import png_size


@pytest.fixture(autouse=True)
def _seed():  # overrides tests/conftest.py's: no full garbage collection per test (small models)
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)


# ----------------------------------------------------------------- helpers
RNG = np.random.default_rng(7)
X = RNG.normal(size=(64, 4)).astype("float32")


def two_dense(w1, b1, w2, b2, name="two_dense") -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(w1.shape[1], activation="relu", name="d1"),
            keras.layers.Dense(w2.shape[1], activation="softmax", name="d2"),
        ],
        name=name,
    )
    model.set_weights([w1, b1, w2, b2])
    return model


def random_weights(seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(4, 6)).astype("float32"),
        rng.normal(scale=0.1, size=6).astype("float32"),
        rng.normal(size=(6, 3)).astype("float32"),
        rng.normal(scale=0.1, size=3).astype("float32"),
    ]


def numpy_accuracy(weights, x, y) -> float:
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    logits = np.maximum(x.astype(np.float64) @ w1 + b1, 0.0) @ w2 + b2
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def labels(weights, flip_every=4) -> np.ndarray:
    """The model's own predictions with every ``flip_every``-th label changed: baseline < 100%."""
    w1, b1, w2, b2 = weights
    y = np.argmax(np.maximum(X @ w1 + b1, 0) @ w2 + b2, axis=-1)
    y[::flip_every] = (y[::flip_every] + 1) % 3
    return y


def numpy_prune(w: np.ndarray, sparsity: float) -> np.ndarray:
    k = int(np.floor(sparsity * w.size + 0.5))
    order = np.argsort(np.abs(w).reshape(-1), kind="stable")
    out = w.reshape(-1).copy()
    out[order[:k]] = 0.0
    return out.reshape(w.shape)


def numpy_quantize(w: np.ndarray, bits: int, axis: int | None = None) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    magnitude = np.max(np.abs(w), axis=tuple(range(w.ndim - 1)) if axis == -1 else None)
    scale = np.asarray(magnitude, np.float64) / qmax
    return (np.clip(np.floor(w / scale + 0.5), -qmax, qmax) * scale).astype(w.dtype)


def weights_of(model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def assert_unchanged(model, before):
    after = weights_of(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------- hand-computed cases
@pytest.mark.backends
def test_prune_accuracy_matches_numpy_forward_pass():
    weights = random_weights()
    y = labels(weights)
    model = two_dense(*weights)
    table = sensitivity(model, (X, y), technique="prune", levels=(0.9, 0.25, 0.5), batch_size=24)

    assert table.levels == (0.25, 0.5, 0.9)  # ascending sparsity: mildest first
    assert table.layer_names == ["d1", "d2"]
    assert [r.parameters for r in table.rows] == [24, 18]  # kernels only, never biases
    baseline = numpy_accuracy(weights, X, y)
    assert table.baseline_accuracy == pytest.approx(baseline, abs=1e-12)
    assert table.samples == 64
    for index, layer in ((0, "d1"), (2, "d2")):
        for sparsity in table.levels:
            changed = list(weights)
            changed[index] = numpy_prune(weights[index], sparsity)
            expected = numpy_accuracy(changed, X, y)
            assert table.accuracy(layer, sparsity) == pytest.approx(expected, abs=1e-12), (layer, sparsity)
            assert table.drop(layer, sparsity) == pytest.approx(baseline - expected, abs=1e-12)
    pruned = transformed_weights("prune", model.get_layer("d1"), 0.5)["kernel"]
    np.testing.assert_array_equal(pruned, numpy_prune(weights[0], 0.5))


@pytest.mark.backends
def test_cluster_accuracy_matches_exact_and_closed_form_kmeans():
    # Each kernel takes 4 distinct values in two well-separated groups, equally often, so
    # k >= 4 is exact, k = 2 gives the two group means and k = 1 the overall mean.
    d1_values = np.array([-0.8, -0.6, 0.7, 0.9], "float32")
    d2_values = np.array([-1.1, -0.9, 1.0, 1.3], "float32")
    rng = np.random.default_rng(3)
    w1 = rng.permutation(np.repeat(d1_values, 6)).reshape(4, 6)
    w2 = rng.permutation(np.tile(np.repeat(d2_values, 1), 5)[:18]).reshape(6, 3)
    weights = [w1, np.full(6, 0.05, "float32"), w2, np.array([0.1, -0.1, 0.0], "float32")]
    y = labels(weights, flip_every=3)
    model = two_dense(*weights)
    table = sensitivity(model, (X, y), technique="cluster", levels=(1, 32, 2, 4))

    assert table.levels == (32, 4, 2, 1)  # descending cluster count
    baseline = numpy_accuracy(weights, X, y)

    def group_means(w):
        w64 = w.astype(np.float64)
        negative = w64 < 0
        return np.where(negative, w64[negative].mean(), w64[~negative].mean()).astype("float32")

    for index, layer in ((0, "d1"), (2, "d2")):
        assert np.isnan(table.drop(layer, 32)) and np.isnan(table.accuracy(layer, 32))  # 32 > its 24 / 18 values
        assert table.drop(layer, 4) == 0.0  # exact: 4 distinct values
        for k, reference in ((2, group_means), (1, lambda w: np.full_like(w, w.astype(np.float64).mean()))):
            changed = list(weights)
            changed[index] = reference(weights[index])
            np.testing.assert_allclose(
                transformed_weights("cluster", model.get_layer(layer), k)["kernel"], changed[index], rtol=1e-6
            )
            assert table.accuracy(layer, k) == pytest.approx(numpy_accuracy(changed, X, y), abs=1e-12), (layer, k)
            assert table.drop(layer, k) == pytest.approx(baseline - table.accuracy(layer, k), abs=1e-12)
    assert all(r.preserve_sparsity is False for r in table.rows)  # no zeros: automatic choice is off


def test_quantize_accuracy_matches_numpy_symmetric_rounding():
    weights = random_weights(seed=5)
    y = labels(weights)
    model = two_dense(*weights)
    table = sensitivity(model, (X, y), technique="quantize", levels=(2, 8, 4))
    assert table.levels == (8, 4, 2)  # descending bits
    baseline = numpy_accuracy(weights, X, y)
    for index, layer in ((0, "d1"), (2, "d2")):
        for bits in table.levels:
            reference = numpy_quantize(weights[index], bits)  # Dense: per tensor, as TFLite int8
            got = transformed_weights("quantize", model.get_layer(layer), bits)["kernel"]
            np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6 * np.abs(weights[index]).max())
            assert len(np.unique(got)) <= 2 ** bits - 1  # narrow range: [-(2^(b-1)-1), 2^(b-1)-1]
            changed = list(weights)
            changed[index] = reference
            assert table.accuracy(layer, bits) == pytest.approx(numpy_accuracy(changed, X, y), abs=1e-12)
            assert table.drop(layer, bits) == pytest.approx(baseline - table.accuracy(layer, bits), abs=1e-12)


def test_quantize_rounds_convolution_kernels_per_output_channel():
    inputs = keras.Input((12, 3))
    conv = keras.layers.Conv1D(5, 3, name="conv")
    keras.Model(inputs, conv(inputs))
    scales = np.array([1, 10, 0.1, 3, 0.5], "float32")
    kernel = np.random.default_rng(0).normal(size=(3, 3, 5)).astype("float32") * scales
    conv.kernel.assign(kernel)
    for bits in (8, 4):
        got = transformed_weights("quantize", conv, bits)["kernel"]
        np.testing.assert_allclose(got, numpy_quantize(kernel, bits, axis=-1), rtol=0, atol=1e-5)
        for channel in range(5):  # every channel uses its own grid, up to its own largest magnitude
            assert np.abs(got[..., channel]).max() == pytest.approx(np.abs(kernel[..., channel]).max(), rel=1e-6)


# ----------------------------------------------------------------- consistency with the pipeline
def test_cluster_values_are_those_of_a_fresh_cluster_wrapper():
    from kopt.clustering import ClusterWrapper
    from kopt.clustering.wrapper import derive_seed
    from kopt.graph import clone_layer

    model = two_dense(*random_weights(seed=2))
    layer = model.get_layer("d1")
    for k, seed in ((8, 3), (3, 11)):
        wrapper = ClusterWrapper(clone_layer(layer), k, seed=derive_seed(seed, layer.name))
        clusters = wrapper.clusters()
        expected = clusters.centroids[0][clusters.indices]
        np.testing.assert_array_equal(transformed_weights("cluster", layer, k, seed=seed)["kernel"], expected)


def test_preserve_sparsity_is_automatic_for_pruned_layers():
    weights = random_weights(seed=4)
    weights[0] = numpy_prune(weights[0], 0.5)  # d1 is pruned, d2 is not
    y = labels(weights)
    model = two_dense(*weights)
    table = sensitivity(model, (X, y), technique="cluster", levels=(4, 2))
    assert [r.preserve_sparsity for r in table.rows] == [True, False]
    kept = transformed_weights("cluster", model.get_layer("d1"), 4, preserve_sparsity=True)["kernel"]
    assert np.array_equal(kept == 0, weights[0] == 0)  # zeros stay, non-zeros never become zero
    assert len(np.unique(kept[kept != 0])) == 3  # one of the 4 clusters is the exact zero
    forced = sensitivity(model, (X, y), technique="cluster", levels=(4, 2), preserve_sparsity=False)
    assert [r.preserve_sparsity for r in forced.rows] == [False, False]

    policy = table.to_policy(1.0)
    assert policy.cluster == ClusterSettings(preserve_sparsity=True)  # "as used": the model was pruned
    plan = policy.resolve(model)
    assert plan.for_layer("d1").cluster.preserve_sparsity is True
    assert plan.for_layer("d2").cluster.preserve_sparsity is False  # its rule says what it used
    assert plan.for_layer("d1").cluster.number_of_clusters == 2


# ----------------------------------------------------------------- the model is never changed
@pytest.mark.backends
def test_the_model_is_not_mutated_even_when_interrupted(monkeypatch):
    module = importlib.import_module("kopt.analysis.sensitivity")  # the attribute is the function

    weights = random_weights(seed=1)
    y = labels(weights)
    model = two_dense(*weights)
    before = weights_of(model)
    for technique in ("prune", "cluster", "quantize"):
        sensitivity(model, (X, y), technique=technique)
        assert_unchanged(model, before)

    calls = {"n": 0}
    original = module._Evaluator.correct

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 4:  # baseline, d1 at two levels, then d1 at the third: d1 is changed right now
            raise RuntimeError("interrupted")
        return original(self)

    monkeypatch.setattr(module._Evaluator, "correct", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        sensitivity(model, (X, y), technique="prune")
    assert calls["n"] == 4
    assert_unchanged(model, before)


def test_same_seed_gives_the_same_table():
    weights = random_weights(seed=6)
    model = two_dense(*weights)
    y = labels(weights)
    first = sensitivity(model, (X, y), technique="cluster", levels=(8, 3), seed=5)
    again = sensitivity(model, (X, y), technique="cluster", levels=(8, 3), seed=5)
    assert first.to_dict() == again.to_dict()
    layer = model.get_layer("d1")
    a = transformed_weights("cluster", layer, 3, seed=5)["kernel"]
    assert np.array_equal(a, transformed_weights("cluster", layer, 3, seed=5)["kernel"])
    assert len(np.unique(a)) == 3


# ----------------------------------------------------------------- data forms
def test_datasets_one_hot_labels_and_limit_give_the_same_table():
    import tensorflow as tf

    weights = random_weights(seed=8)
    y = labels(weights)
    model = two_dense(*weights)
    reference = sensitivity(model, (X, y), levels=(0.5,)).to_dict()
    one_hot = np.eye(3, dtype="float32")[y]
    assert sensitivity(model, (X, one_hot), levels=(0.5,)).to_dict() == reference
    assert sensitivity(model, (X, y[:, None]), levels=(0.5,)).to_dict() == reference
    batched = tf.data.Dataset.from_tensor_slices((X, y)).batch(10)
    assert sensitivity(model, batched, levels=(0.5,)).to_dict() == reference
    unbatched = tf.data.Dataset.from_tensor_slices((X, y))
    assert sensitivity(model, unbatched, levels=(0.5,)).to_dict() == reference

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return X[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]

    assert sensitivity(model, Batches(), levels=(0.5,)).to_dict() == reference
    limited = sensitivity(model, (X, y), levels=(0.5,), limit=20)
    assert limited.samples == 20
    w = weights
    assert limited.baseline_accuracy == pytest.approx(numpy_accuracy(w, X[:20], y[:20]), abs=1e-12)


def test_sigmoid_output_is_thresholded_at_one_half():
    rng = np.random.default_rng(9)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid", name="out")])
    kernel, bias = rng.normal(size=(4, 1)).astype("float32"), np.array([0.2], "float32")
    model.set_weights([kernel, bias])
    y = (X @ kernel + bias > 0).astype("int32")[:, 0]
    y[::5] = 1 - y[::5]
    table = sensitivity(model, (X, y), technique="prune", levels=(0.5, 0.75))
    expected = np.mean(((X @ kernel + bias)[:, 0] > 0) == y)  # sigmoid(z) > 0.5  <=>  z > 0
    assert table.baseline_accuracy == pytest.approx(expected, abs=1e-12)
    pruned = numpy_prune(kernel, 0.75)
    assert table.accuracy("out", 0.75) == pytest.approx(np.mean(((X @ pruned + bias)[:, 0] > 0) == y), abs=1e-12)


def test_nested_models_and_shared_layers():
    shared = keras.layers.Dense(4, activation="relu", name="shared")
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="inner_dense")(inner_in), name="block")
    inputs = keras.Input((4,))
    x = shared(inner(inputs))
    x = shared(x)  # called twice: one row, its weights changed for both calls
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    y = np.random.default_rng(0).integers(0, 3, len(X))
    before = weights_of(model)
    table = sensitivity(model, (X, y), technique="prune", levels=(0.5,))
    assert table.layer_names == ["inner_dense", "shared", "head"]
    assert table.rows[0].path == "block/inner_dense"
    assert_unchanged(model, before)
    plan = table.to_policy(1.0).resolve(model)
    assert [plan.for_layer(n).prune.sparsity for n in table.layer_names] == [0.5, 0.5, 0.5]


# ----------------------------------------------------------------- decisions
def handmade(technique="prune") -> SensitivityTable:
    levels = {"prune": (0.5, 0.75, 0.9), "cluster": (32, 16, 8), "quantize": (8, 4)}[technique]
    drops = {
        "d1": (0.0, 0.004, 0.02),
        "d2": (0.03, 0.0, 0.0),  # the mildest already costs too much: None, however good the rest looks
    }
    rows = [
        LayerSensitivity(n, "Dense", 24, tuple(0.9 - d for d in drop[: len(levels)]), drop[: len(levels)], path=n)
        for n, drop in drops.items()
    ]
    return SensitivityTable(technique, levels, 0.9, rows, samples=100)


def test_levels_within_scans_from_the_mildest_level():
    table = handmade()
    assert table.levels_within(0.01) == {"d1": 0.75, "d2": None}
    assert table.levels_within(0.05) == {"d1": 0.9, "d2": 0.9}
    assert table.levels_within(0.004) == {"d1": 0.75, "d2": None}  # a drop equal to max_drop is within
    assert table.levels_within(-0.1) == {"d1": None, "d2": None}
    nan_row = LayerSensitivity("d3", "Dense", 10, (float("nan"), 0.9, 0.8), (float("nan"), 0.0, 0.1))
    table.rows.append(nan_row)
    assert table.levels_within(0.01)["d3"] == 0.75  # a level the layer cannot take is skipped, not chosen


@pytest.mark.parametrize("technique", ["prune", "cluster", "quantize"])
def test_to_policy_resolves_to_each_layers_level(technique):
    model = two_dense(*random_weights())
    table = handmade(technique)
    policy = table.to_policy(0.01)
    plan = policy.resolve(model)
    d1, d2 = plan.for_layer("d1"), plan.for_layer("d2")
    if technique == "prune":
        assert d1.prune.sparsity == 0.75 and d2.prune is None
        assert LayerRule(match="name:d2", prune=False) in policy.rules
    elif technique == "cluster":
        assert d1.cluster.number_of_clusters == 16 and d2.cluster is None
        assert LayerRule(match="name:d1", cluster={"number_of_clusters": 16}) in policy.rules
    else:
        assert (d1.quantize.bits, d2.quantize.bits) == (4, 8)  # d2 cannot be quantized further: keeps 8
        assert LayerRule(match="name:d2", quantize={"bits": 8}) in policy.rules
        assert table.to_policy(0.05).resolve(model).for_layer("d2").quantize.bits == 4
    assert Policy.from_json(policy.to_json()) == policy  # plain data


def test_to_policy_keeps_a_base_policy():
    model = two_dense(*random_weights())
    base = Policy(
        name="mine",
        quantize=QuantizeSettings(),
        rules=(LayerRule(match="class:Dense", quantize={"bits": 4}), LayerRule(match="name:d2", quantize=False)),
    )
    policy = handmade("prune").to_policy(0.01, base=base)
    assert policy.name == "mine" and policy.quantize == QuantizeSettings()
    plan = policy.resolve(model)
    assert plan.for_layer("d1").prune.sparsity == 0.75
    assert plan.for_layer("d1").quantize.bits == 4  # the class rule still applies to d1
    assert plan.for_layer("d2").prune is None and plan.for_layer("d2").quantize is None
    assert sum(r.match == "name:d2" for r in policy.rules) == 1  # merged, not duplicated
    assert handmade().to_policy(0.01, name="custom-name").name == "custom-name"
    with pytest.raises(InvalidArgumentError, match="base must be a kopt.Policy"):
        handmade().to_policy(0.01, base={"name": "x"})
    with pytest.raises(InvalidArgumentError, match="max_drop"):
        handmade().to_policy(float("nan"))


# ----------------------------------------------------------------- output
def test_json_markdown_and_plot(tmp_path):
    weights = random_weights()
    model = two_dense(*weights)
    table = sensitivity(model, (X, labels(weights)), technique="cluster", levels=(32, 4))
    data = json.loads(table.to_json())
    assert data["technique"] == "cluster" and data["levels"] == [32, 4]
    assert data["rows"][0]["drop"][0] is None  # 32 clusters > 24 values: n/a, not NaN in JSON
    restored = SensitivityTable.from_dict(data)
    assert restored.to_dict() == table.to_dict()

    text = str(table)
    assert text == table.to_markdown()
    lines = text.splitlines()
    assert "| layer | class | parameters | 32 clusters | 4 clusters |" in lines
    d1 = next(line for line in lines if line.startswith("| d1 |"))
    assert d1 == f"| d1 | Dense | 24 | n/a | {table.drop('d1', 4) * 100:+.2f} |"

    path = table.plot(tmp_path / "charts" / "sensitivity.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_size(path) == (800, 400)
    many = handmade()
    many.rows = [LayerSensitivity(f"l{i}", "Dense", 10, (0.9,) * 3, (i / 100, i / 50, i / 20)) for i in range(15)]
    assert png_size(many.plot(tmp_path / "many.png")) == (800, 400)


# ----------------------------------------------------------------- errors
def test_errors_name_the_bad_value_and_the_valid_ones():
    weights = random_weights()
    model = two_dense(*weights)
    data = (X, labels(weights))
    cases = [
        (dict(technique="distill"), r"'distill'.*'prune', 'cluster', 'quantize'"),
        (dict(levels=()), "levels is empty"),
        (dict(levels=(0.5, 1.0)), r"Level 1\.0 .*strictly between 0 and 1"),
        (dict(levels=(0.5, True)), "Level True"),
        (dict(levels=0.5), "must be a sequence"),
        (dict(technique="cluster", levels=(8, 0)), r"Level 0 .*integers >= 1"),
        (dict(technique="cluster", levels=(8.0,)), r"Level 8\.0 .*integers >= 1"),
        (dict(technique="quantize", levels=(16,)), r"Level 16 .*from 2 to 8"),
        (dict(technique="cluster", levels=(4, 1), preserve_sparsity=True), "preserve_sparsity=True.*>= 2"),
        (dict(layers=["d1", "nope"]), r"no layer 'nope'; eligible layers .*\['d1', 'd2'\]"),
        (dict(layers=[]), "layers is empty"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(limit=-1), "limit must be a positive integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidArgumentError, match=message):
            sensitivity(model, data, **kwargs)
    for bad_data in (X, (X,), (X, None)):
        with pytest.raises(InvalidArgumentError, match="labels|\\(x, y\\)"):
            sensitivity(model, bad_data)
    with pytest.raises(InvalidArgumentError, match="do not match predictions"):
        sensitivity(model, (X, np.zeros((len(X), 5))))
    with pytest.raises(InvalidArgumentError, match="table has no layer 'd9'.*'d1', 'd2'"):
        handmade().drop("d9", 0.5)
    with pytest.raises(InvalidArgumentError, match=r"no level 0\.6.*0\.5, 0\.75, 0\.9"):
        handmade().drop("d1", 0.6)


def test_models_it_cannot_analyse():
    inputs = keras.Input((4,))
    x = keras.layers.Flatten(name="flat")(keras.layers.ReLU(name="act")(inputs))
    no_weights = keras.Model(inputs, x)
    with pytest.raises(UnsupportedLayerError, match="no layer that 'prune' can change"):
        sensitivity(no_weights, (X, np.zeros(len(X), "int32")))

    weights = random_weights()
    model = two_dense(*weights)
    bad = [w.copy() for w in weights]
    bad[2][0, 0] = np.nan
    model.set_weights(bad)
    with pytest.raises(NonFiniteWeightsError, match="d2' weight 'kernel'"):
        sensitivity(model, (X, labels(weights)))

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="h")(inputs)
    two_outputs = keras.Model(inputs, [hidden, keras.layers.Dense(2, name="o")(hidden)])
    with pytest.raises(InvalidArgumentError, match="2 outputs"):
        sensitivity(two_outputs, (X, np.zeros(len(X), "int32")))

    layered = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"), keras.layers.ReLU(name="r")])
    with pytest.raises(InvalidArgumentError, match=r"'r' cannot be changed by 'prune'.*eligible layers: \['d'\]"):
        sensitivity(layered, (X, np.zeros(len(X), "int32")), layers="r")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedModelError):
        sensitivity(Subclassed(), (X, np.zeros(len(X), "int32")))
