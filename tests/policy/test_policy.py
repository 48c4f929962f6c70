"""kopt.policy: settings validation, rule matching and precedence, JSON round trip and fuzzing."""

import json

import keras
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import layers

from kopt.policy import ClusterSettings, LayerRule, Policy, PolicyError, PruneSettings, QuantizeSettings

pytestmark = pytest.mark.backends


def small_model():
    inner_in = keras.Input((6, 6, 4))
    inner = keras.Model(inner_in, layers.Conv2D(4, 3, padding="same", name="block_conv")(inner_in), name="block")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="stem")(inputs)
    x = inner(x)
    x = layers.Conv2D(8, 1, name="conv_last")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="classifier")(x), name="small")


def test_global_settings_apply_to_every_applicable_layer():
    plan = Policy(prune=PruneSettings(sparsity=0.6), quantize=QuantizeSettings()).resolve(small_model())
    assert list(plan.layers) == ["stem", "block_conv", "conv_last", "gap", "classifier"]
    assert plan.layers["stem"].prune.sparsity == 0.6
    assert plan.layers["gap"].prune is None  # nothing to prune in a pooling layer
    assert plan.layers["gap"].quantize is not None
    assert plan.layers["block_conv"].path == "block/block_conv"
    assert all(p.cluster is None for p in plan.layers.values())


def test_precedence_name_beats_path_beats_class():
    policy = Policy(
        cluster=ClusterSettings(number_of_clusters=16),
        rules=(
            LayerRule("class:Conv2D", cluster={"number_of_clusters": 8}),
            LayerRule("path:block/.*", cluster={"number_of_clusters": 4}),
            LayerRule("name:conv_last", cluster={"number_of_clusters": 2, "per_channel": True}),
        ),
    )
    plan = policy.resolve(small_model())
    clusters = {name: p.cluster.number_of_clusters for name, p in plan.layers.items() if p.cluster}
    assert clusters == {"stem": 8, "block_conv": 4, "conv_last": 2, "classifier": 16}
    assert plan.layers["conv_last"].cluster.per_channel
    assert plan.layers["conv_last"].rule == "name:conv_last"
    assert "| block/block_conv | Conv2D |" in plan.table()


def test_exclude_and_technique_off_keep_first_and_last_float():
    policy = Policy.preset(
        "pcqat", rules=[{"match": "stem", "exclude": True}, {"match": "classifier", "prune": False, "cluster": False}]
    )
    plan = policy.resolve(small_model())
    assert (plan.layers["stem"].prune, plan.layers["stem"].cluster, plan.layers["stem"].quantize) == (None, None, None)
    assert plan.layers["classifier"].prune is None and plan.layers["classifier"].quantize is not None
    assert plan.layers["conv_last"].cluster.preserve_sparsity


def test_rule_turning_a_technique_on_for_one_layer():
    plan = Policy(rules=(LayerRule("classifier", prune={"sparsity": 0.3}),)).resolve(small_model())
    assert plan.layers["classifier"].prune.sparsity == 0.3
    assert plan.layers["stem"].prune is None


def test_unmatched_rule_is_an_error_unless_validate_is_false():
    policy = Policy(prune=PruneSettings(), rules=(LayerRule("no_such_layer", prune=False),))
    with pytest.raises(PolicyError, match=r"\['no_such_layer'\] match no layer.*validate=False"):
        policy.resolve(small_model())
    relaxed = Policy(prune=PruneSettings(), rules=(LayerRule("no_such_layer", prune=False),), validate=False)
    assert relaxed.resolve(small_model()).layers["stem"].prune is not None


def test_ambiguous_rules_of_the_same_kind_are_an_error():
    policy = Policy(rules=(LayerRule("path:.*conv.*", prune={}), LayerRule("path:block/.*", prune=False)))
    with pytest.raises(PolicyError, match=r"'block_conv' matches several 'path' rules"):
        policy.resolve(small_model())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PruneSettings(sparsity=1.0), r"prune.sparsity must be a number in \[0, 1\), got 1.0"),
        (lambda: PruneSettings(sparsity=-0.1), r"prune.sparsity"),
        (lambda: PruneSettings(frequency=0), r"prune.frequency must be >= 1, got 0"),
        (lambda: PruneSettings(begin_step=10, end_step=5), r"end_step=5 is before prune.begin_step=10"),
        (lambda: PruneSettings(m_by_n=(4, 2)), r"0 < M < N"),
        (lambda: ClusterSettings(number_of_clusters=0), r"number_of_clusters must be >= 1, got 0"),
        (lambda: ClusterSettings(init="kmeans"), r"Unknown cluster.init 'kmeans'; valid: \['linear', 'random', 'density', 'kmeans\+\+'\]"),
        (lambda: QuantizeSettings(bits=16), r"quantize.bits must be in \[2, 8\], got 16"),
        (lambda: QuantizeSettings(scheme="int4"), r"Unknown quantize.scheme 'int4'"),
        (lambda: Policy(target="gpu"), r"Unknown target 'gpu'; valid: \['int8', 'edgetpu', 'micro'\]"),
        (lambda: LayerRule("path:(", prune=False), r"invalid regular expression"),
        (lambda: LayerRule("x", prune={"sparsty": 0.5}), r"unknown prune setting\(s\) \['sparsty'\]"),
    ],
)
def test_bad_values_are_rejected_with_the_key_and_value(make, message):
    with pytest.raises(PolicyError, match=message):
        make()


def test_json_round_trip_is_lossless(tmp_path):
    policy = Policy.preset(
        "pcqat",
        sparsity=0.75,
        number_of_clusters=8,
        per_channel=True,
        rules=[{"match": "class:Dense", "cluster": {"number_of_clusters": 4}}, {"match": "stem", "exclude": True}],
    )
    assert Policy.from_json(policy.to_json()) == policy
    path = tmp_path / "policy.json"
    policy.dump(path)
    assert Policy.load(path) == policy
    assert json.loads(path.read_text())["prune"]["sparsity"] == 0.75


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"prune": {"sparsity": 0.5}, "colour": 1}', r"Unknown policy field\(s\) \['colour'\]"),
        ('{"rules": [{"match": "a", "what": 1}]}', r"Unknown rule field\(s\) \['what'\]"),
        ('{"rules": [{"prune": false}]}', "has no 'match'"),
        ('{"prune": {"sparsity": "0.5"}}', "prune.sparsity must be a number"),
        ('{"quantize": 8}', "must be an object of settings"),
        ('{"validate": "no"}', "validate must be true or false"),
    ],
)
def test_bad_policy_files_give_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


def test_missing_policy_file():
    with pytest.raises(PolicyError, match="Cannot read policy file"):
        Policy.load("/nonexistent/policy.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
policy_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "target": st.sampled_from(["int8", "edgetpu", "x"]) | json_values,
        "prune": st.none() | st.dictionaries(st.sampled_from(["sparsity", "frequency", "m_by_n", "zz"]), json_values),
        "cluster": st.none() | st.dictionaries(st.sampled_from(["number_of_clusters", "init", "per_channel"]), json_values),
        "quantize": st.none() | st.dictionaries(st.sampled_from(["bits", "scheme", "mode"]), json_values),
        "rules": st.lists(st.dictionaries(st.sampled_from(["match", "prune", "exclude", "q"]), json_values), max_size=3)
        | json_values,
        "validate": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(policy_like, json_values))
def test_fuzzed_policy_json_only_raises_policy_errors(data):
    try:
        policy = Policy.from_json(json.dumps(data))
    except PolicyError:
        return
    assert Policy.from_json(policy.to_json()) == policy


def test_depthwise_kernels_stay_dense_unless_a_rule_asks():
    inputs = keras.Input((8, 8, 4))
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    x = layers.Conv2D(8, 1, name="pw")(x)
    model = keras.Model(inputs, layers.Dense(3, name="fc")(layers.GlobalAveragePooling2D()(x)))
    plan = Policy.preset("pcqat").resolve(model)
    assert plan.layers["dw"].prune is None and plan.layers["pw"].prune is not None
    assert plan.layers["dw"].cluster is not None  # only pruning skips it
    for rule in (LayerRule("class:DepthwiseConv2D", prune={}), LayerRule("dw", prune={"sparsity": 0.3}),
                 LayerRule("dw", prune=True)):
        opted = Policy.preset("prune", rules=[rule]).resolve(model)
        assert opted.layers["dw"].prune is not None
    assert Policy.preset("prune", rules=[LayerRule("dw", cluster=False)]).resolve(model).layers["dw"].prune is None
