"""kopt.graph.analyze / ModelGraph.rebuild on hand-built models of every supported shape."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from kopt.core.errors import UnsupportedModelError
from kopt.graph import analyze

pytestmark = pytest.mark.backends


def predict(model, x):
    return keras.tree.map_structure(ops.convert_to_numpy, model(x, training=False))


def assert_same_predictions(a, b, x, atol=1e-5):
    pa, pb = predict(a, x), predict(b, x)
    for ya, yb in zip(keras.tree.flatten(pa), keras.tree.flatten(pb)):
        np.testing.assert_allclose(ya, yb, atol=atol)


def test_sequential_chain_nodes_edges_and_shapes():
    model = keras.Sequential(
        [keras.Input((6,)), layers.Dense(4, name="d1"), layers.ReLU(name="r"), layers.Dense(2, name="d2")]
    )
    graph = analyze(model)
    assert graph.topological_nodes()[1:] == ["d1", "r", "d2"]
    assert graph.layer_nodes() == ["d1", "r", "d2"]
    assert graph.outputs == [("d2", 0)]
    assert graph.dag.nodes[graph.inputs[0]]["kind"] == "input"
    (edge,) = graph.dag.get_edge_data("d1", "r").values()
    assert edge["shape"] == (None, 4)
    assert edge["dtype"] == "float32"
    assert nx_is_dag(graph)
    assert_same_predictions(model, graph.rebuild(), np.random.rand(3, 6).astype("float32"))


def nx_is_dag(graph):
    import networkx as nx

    return nx.is_directed_acyclic_graph(graph.dag)


def test_unbuilt_sequential_is_refused_with_advice():
    model = keras.Sequential([layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match=r"Sequential model .* has not been built.*keras.Input"):
        analyze(model)


def test_subclassed_model_is_refused_naming_the_class():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match=r"Tiny .* subclassed .*wrap its layers individually"):
        analyze(model)


def test_non_model_is_refused():
    with pytest.raises(UnsupportedModelError, match="Expected a keras.Model"):
        analyze(layers.Dense(3))


def test_add_of_the_same_tensor_gives_two_parallel_edges():
    inputs = keras.Input((5,))
    x = layers.Dense(5, name="d")(inputs)
    out = layers.Add(name="add")([x, x])
    model = keras.Model(inputs, out)
    graph = analyze(model)
    edges = graph.dag.get_edge_data("d", "add")
    assert sorted(e["dst_index"] for e in edges.values()) == [0, 1]
    assert graph.producers("add") == ["d", "d"]
    assert_same_predictions(model, graph.rebuild(), np.random.rand(2, 5).astype("float32"))


def build_nested_shared_multi_io():
    inner_in = keras.Input((8,))
    inner = keras.Model(inner_in, layers.Dense(8, activation="relu", name="idense")(inner_in), name="inner")
    seq = keras.Sequential([keras.Input((8,)), layers.Dense(8, name="sdense")], name="seq")
    a = keras.Input((8,), name="a")
    b = keras.Input((8,), name="b")
    shared = layers.Dense(8, name="shared")
    x, y = shared(a), shared(b)
    z = inner(layers.Add(name="add")([x, x]))
    w = inner(seq(y))
    c = layers.Concatenate(name="cat")([z, w, y])
    r = ops.relu(c) * 2.0
    outputs = {"o1": layers.Dense(3, name="o1")(r), "o2": layers.Dense(1, name="o2")(c)}
    return keras.Model({"a": a, "b": b}, outputs, name="multi")


def test_nested_models_are_flattened_and_shared_layers_kept():
    model = build_nested_shared_multi_io()
    graph = analyze(model)
    nodes = set(graph.dag)
    assert {"shared", "shared:1", "inner/idense", "inner:1/idense", "seq/sdense"} <= nodes
    assert graph.layer("shared") is graph.layer("shared:1")
    assert graph.layer("inner/idense") is graph.layer("inner:1/idense")
    assert graph.producers("cat") == ["inner/idense", "inner:1/idense", "shared:1"]
    assert graph.producers("inner:1/idense") == ["seq/sdense"]
    kinds = {graph.dag.nodes[n]["kind"] for n in graph.dag}
    assert kinds == {"input", "layer", "op"}  # ops.relu and * are raw operation nodes
    assert len(graph.layers()) == len({id(graph.layer(n)) for n in graph.layer_nodes()})


def test_nested_multi_io_rebuild_matches_and_keeps_structure():
    model = build_nested_shared_multi_io()
    rebuilt = analyze(model).rebuild()
    assert set(rebuilt.output_names if isinstance(rebuilt.output, list) else rebuilt.output) == {"o1", "o2"}
    rng = np.random.default_rng(0)
    x = {"a": rng.random((4, 8), dtype="float32"), "b": rng.random((4, 8), dtype="float32")}
    assert_same_predictions(model, rebuilt, x)


def test_rebuild_reuses_weights_by_default_and_clone_copies_them():
    model = build_nested_shared_multi_io()
    graph = analyze(model)
    shared_ids = {id(v) for v in model.weights}
    assert {id(v) for v in graph.rebuild().weights} <= shared_ids
    clone = graph.rebuild(clone=True)
    assert not ({id(v) for v in clone.weights} & shared_ids)
    assert len(clone.weights) == len(model.weights)
    rng = np.random.default_rng(1)
    x = {"a": rng.random((2, 8), dtype="float32"), "b": rng.random((2, 8), dtype="float32")}
    assert_same_predictions(model, clone, x)
    # The clone is independent: changing it leaves the original alone.
    before = predict(model, x)
    for v in clone.weights:
        v.assign(ops.zeros(v.shape, v.dtype))
    after = predict(model, x)
    for p, q in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        np.testing.assert_array_equal(p, q)


def test_shared_layer_stays_shared_after_clone():
    inputs = keras.Input((4,))
    dense = layers.Dense(4, name="twice")
    model = keras.Model(inputs, dense(dense(inputs)))
    clone = analyze(model).rebuild(clone=True)
    twice = [layer for layer in clone.layers if layer.name == "twice"]
    assert len(twice) == 1 and len(clone.weights) == 2


def test_rebuild_keeps_batchnorm_statistics_and_training_flag():
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    model.get_layer("bn").moving_mean.assign(np.arange(4, dtype="float32"))
    clone = analyze(model).rebuild(clone=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(clone.get_layer("bn").moving_mean), np.arange(4))
    assert_same_predictions(model, clone, np.random.rand(2, 4, 4, 3).astype("float32"))


def test_inline_splices_a_functional_in_place_of_a_call_and_checks_arity():
    from kopt.core.errors import GraphRewriteError

    inp = keras.Input((6,))
    hidden = layers.Dense(4, name="d1")(inp)
    middle = layers.Activation("tanh", name="act")(hidden)
    model = keras.Model(inp, [layers.Dense(2, name="d2")(middle), middle])  # the replaced call is also an output
    graph = analyze(model)

    x_in = keras.Input(batch_shape=(None, 4))
    replacement = keras.Model(x_in, layers.Dense(4, name="r2")(layers.Dense(4, name="r1")(x_in)))
    wrong = keras.Model([x_in, keras.Input((4,))], x_in)
    with pytest.raises(GraphRewriteError, match="takes 1 and gives 1.*takes 2"):
        graph.inline("act", wrong)

    new = graph.inline("act", replacement)
    assert new == ["act/r1", "act/r2"] and "act" not in graph.dag
    assert graph.producers("d2") == ["act/r2"] and graph.outputs[1] == ("act/r2", 0)
    rebuilt = graph.rebuild()
    x = np.random.rand(3, 6).astype("float32")
    h = predict(model.get_layer("d1"), x)
    want = predict(replacement, h)
    got_d2, got_mid = predict(rebuilt, x)
    np.testing.assert_allclose(got_mid, want, atol=1e-5)
    np.testing.assert_allclose(got_d2, predict(model.get_layer("d2"), want), atol=1e-5)


def test_views_follow_every_rewrite_and_a_direct_edit_after_changed():
    """Execution order and the layer -> nodes index are cached; a rewrite or ``changed()`` refreshes them."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    dropped = keras.layers.Dropout(0.5, name="drop")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(dropped))
    graph = analyze(model)
    drop = model.get_layer("drop")
    assert graph.nodes_of(drop) and "drop" in " ".join(graph.topological_nodes())
    graph.bypass(graph.nodes_of(drop)[0])
    assert graph.nodes_of(drop) == []
    assert all(graph.layer(n) is not drop for n in graph.topological_nodes())
    hidden_layer, other = model.get_layer("hidden"), keras.layers.Dense(3, name="other")
    (node,) = graph.nodes_of(hidden_layer)
    graph.dag.nodes[node]["layer"] = other
    graph.changed()
    assert graph.nodes_of(hidden_layer) == [] and graph.nodes_of(other) == [node]


class _BlockWithoutBuild(layers.Layer):
    """Like keras-hub's SwinTransformerBlock: sublayers made in __init__, no build(); its call reads the
    batch size as a Python int, which tracing cannot give (so the analyzer keeps it closed and the
    rebuild must clone it)."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = layers.Dense(units)

    def call(self, x):
        batch = int(ops.shape(x)[0])
        return ops.reshape(self.dense(x), (batch, self.units))

    def compute_output_shape(self, input_shape):  # Keras builds the model from this, not from call
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class _NoConfigRoundTrip(_BlockWithoutBuild):
    def get_config(self):
        return {**super().get_config(), "unknown_argument": 1}  # from_config raises TypeError


@pytest.mark.parametrize("cls", [_BlockWithoutBuild, _NoConfigRoundTrip])
def test_clone_rebuild_copies_a_layer_whose_build_makes_no_weights_and_reuses_one_that_does_not_round_trip(cls):
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    block = cls(name="block")
    model = keras.Model(inp, block(layers.Dense(3)(inp)))
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    model(x)  # the block's Dense makes its weights on the first real call
    rebuilt = analyze(model).rebuild(clone=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    copy = rebuilt.get_layer("block")
    if cls is _BlockWithoutBuild:
        assert copy is not block and len(copy.weights) == 2  # a copy, run once to create the Dense's weights
    else:
        assert copy is block  # reused: a copy from its config cannot be made


def test_clone_layer_names_a_layer_that_does_not_round_trip():
    from kopt.core.errors import GraphRewriteError
    from kopt.graph import clone_layer

    block = _NoConfigRoundTrip(name="block")
    block(np.zeros((1, 3), "float32"))
    with pytest.raises(GraphRewriteError, match="'block' \\(_NoConfigRoundTrip\\) cannot be copied"):
        clone_layer(block)
