"""Pattern matching and graph rewrites (fuse, bypass, insert_after, replace_layer)."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from kopt.core.errors import GraphRewriteError
from kopt.graph import Pattern, analyze, find_fan_ins, find_matches, find_nodes, map_layers, replace_matches

pytestmark = pytest.mark.backends


def conv_bn_relu_model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="r1")(x)
    # c2 -> bn2 -> r2, but bn2's output is also used by the Add: not a private chain.
    y = layers.Conv2D(4, 3, padding="same", name="c2")(x)
    y = layers.BatchNormalization(name="bn2")(y)
    z = layers.ReLU(name="r2")(y)
    out = layers.Add(name="add")([y, z])
    # c3 -> bn3 -> r3 again private.
    w = layers.Conv2D(4, 1, name="c3")(out)
    w = layers.BatchNormalization(name="bn3")(w)
    w = layers.ReLU(max_value=6.0, name="r3")(w)
    return keras.Model(inputs, w)


def test_chain_pattern_finds_private_chains_only():
    graph = analyze(conv_bn_relu_model())
    pattern = Pattern.chain(layers.Conv2D, layers.BatchNormalization, layers.ReLU)
    matches = find_matches(graph, pattern)
    assert [m["p0"] for m in matches] == ["c1", "c3"]
    assert matches[0] == {"p0": "c1", "p1": "bn1", "p2": "r1"}
    shared = Pattern.chain(layers.Conv2D, layers.BatchNormalization, layers.ReLU, private_intermediates=False)
    assert [m["p0"] for m in find_matches(graph, shared)] == ["c1", "c2", "c3"]


def test_callable_predicate():
    graph = analyze(conv_bn_relu_model())
    relu6 = lambda layer: isinstance(layer, layers.ReLU) and layer.max_value == 6.0  # noqa: E731
    matches = find_matches(graph, Pattern.chain(layers.BatchNormalization, relu6))
    assert [m["p1"] for m in matches] == ["r3"]


def test_fan_ins_of_any_arity():
    inputs = keras.Input((4,))
    parts = [layers.Dense(2, name=f"d{i}")(inputs) for i in range(5)]
    a = layers.Concatenate(name="cat2")(parts[:2])
    b = layers.Concatenate(name="cat4")([a] + parts[2:4])
    model = keras.Model(inputs, layers.Concatenate(name="cat_end")([b, parts[4], inputs]))
    graph = analyze(model)
    found = dict(find_fan_ins(graph, layers.Concatenate))
    assert found == {
        "cat2": ["d0", "d1"],
        "cat4": ["cat2", "d2", "d3"],
        "cat_end": ["cat4", "d4", graph.inputs[0]],
    }


def test_fuse_replaces_a_match_and_rebuild_runs_the_new_layer():
    model = conv_bn_relu_model()
    graph = analyze(model)

    def build(graph, match):
        conv = graph.layer(match["p0"])
        return layers.Conv2D(conv.filters, conv.kernel_size, padding=conv.padding, name=f"{conv.name}_fused")

    new_nodes = replace_matches(graph, Pattern.chain(layers.Conv2D, layers.BatchNormalization, layers.ReLU), build)
    assert new_nodes == ["c1_fused", "c3_fused"]
    assert "bn1" not in graph.dag and "r1" not in graph.dag
    assert graph.producers("c2") == ["c1_fused"]
    rebuilt = graph.rebuild()
    names = [layer.name for layer in rebuilt.layers]
    assert "c1_fused" in names and "bn1" not in names and "bn2" in names
    assert rebuilt.output_shape == model.output_shape


def test_fuse_refuses_a_subgraph_with_two_exits():
    graph = analyze(conv_bn_relu_model())
    with pytest.raises(GraphRewriteError, match="exactly one node whose outputs leave"):
        graph.fuse(["bn2", "r2"], layers.Identity())


def test_bypass_and_insert_after_keep_the_model_computing_the_same():
    inputs = keras.Input((6,))
    x = layers.Dense(6, name="d1")(inputs)
    x = layers.Dropout(0.3, name="drop")(x)
    out = layers.Dense(2, name="d2")(x)
    model = keras.Model(inputs, out)
    graph = analyze(model)
    graph.bypass("drop")
    assert graph.producers("d2") == ["d1"]
    node = graph.insert_after("d1", layers.Identity(name="probe"))
    assert graph.producers("d2") == [node] and graph.producers(node) == ["d1"]
    graph.insert_after("d2", layers.Identity(name="after_out"))
    assert graph.outputs == [("after_out", 0)]
    rebuilt = graph.rebuild()
    x = np.random.rand(3, 6).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(rebuilt(x)), ops.convert_to_numpy(model(x)), atol=1e-6)
    with pytest.raises(GraphRewriteError, match="exactly one input"):
        analyze(keras.Model(inputs, layers.Add()([inputs, inputs]))).bypass("add")


def test_map_layers_replaces_every_call_of_a_shared_layer_and_leaves_the_original_alone():
    inputs = keras.Input((4,))
    shared = layers.Dense(4, name="shared")
    model = keras.Model(inputs, layers.Dense(1, name="head")(shared(shared(inputs))))
    seen = []

    def double_units(layer):
        seen.append(layer.name)
        if isinstance(layer, layers.Dense) and layer.name == "shared":
            return layers.Dense(4, name="shared_new")
        return None

    new = map_layers(model, double_units)
    assert seen.count("shared") == 1
    new_graph = analyze(new)
    assert new_graph.layer("shared_new") is new_graph.layer("shared_new:1")
    assert model.get_layer("shared") is shared and len(model.layers) == 3
    assert {id(v) for v in new.weights}.isdisjoint({id(v) for v in model.weights})


def test_find_nodes_and_raw_ops():
    inputs = keras.Input((4,))
    x = ops.relu(layers.Dense(4, name="d")(inputs))
    model = keras.Model(inputs, ops.reshape(x, (-1, 2, 2)))
    graph = analyze(model)
    raw = [n for n in graph.topological_nodes() if graph.dag.nodes[n]["kind"] == "op"]
    assert len(raw) == 2
    assert find_nodes(graph, layers.Dense) == ["d"]
    np.testing.assert_allclose(
        ops.convert_to_numpy(graph.rebuild()(np.ones((1, 4), "float32"))),
        ops.convert_to_numpy(model(np.ones((1, 4), "float32"))),
    )
