"""Every error kopt raises on purpose is a KoptError *and* the documented built-in, with a short message.

Walks the public API with the bad arguments of issue #23 (and more), and checks each row of the README's
"Errors you can expect" table: the class named there is raised as stated.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

import kopt
from kopt.clustering import ClusteringConfigError, NotClusterableError, cluster_weights
from kopt.core.errors import (
    GraphRewriteError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    KoptError,
    NonFiniteWeightsError,
    UnknownNameError,
    UnsupportedLayerError,
    UnsupportedModelError,
)
from kopt.export import CorruptTFLiteError, MissingRangesError, check_edgetpu, evaluate, to_tflite
from kopt.pipeline.training import CompileSettingsError
from kopt.policy import Policy, PolicyError
from kopt.quantization import NotClusteredError, quantize_model
from kopt.sparsity import prune_low_magnitude
from tests.optimize_testing import compile_model, digits, tiny_dense

ROOT = Path(__file__).resolve().parents[1]
X, Y, _, _ = digits(train=64, val=8)


def _model() -> keras.Model:
    return compile_model(tiny_dense())


def _unbuilt() -> keras.Model:
    return keras.Sequential([layers.Dense(2)])


def _string_model() -> keras.Model:
    inputs = keras.Input((1,), dtype="string", name="text")
    lookup = layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")(inputs)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(lookup)))


def _pruned() -> keras.Model:
    return prune_low_magnitude(_model())


def _nan_model() -> keras.Model:
    model = _model()
    kernel = model.get_layer("hidden").kernel
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0] = np.nan
    kernel.assign(value)
    return model


def _report() -> kopt.report.StageReport:
    return kopt.report.compression(_model())


# (what, call, class, built-in). The class must be raised exactly (or a subclass), be a KoptError and the built-in.
BAD_CALLS = [
    ("optimize a string", lambda: kopt.optimize("m", "qat", train_data=(X, Y)), UnsupportedModelError, TypeError),
    ("optimize an unbuilt model", lambda: kopt.optimize(_unbuilt(), "qat", train_data=(X, Y)), UnsupportedModelError, TypeError),
    ("optimize a layer", lambda: kopt.optimize(layers.Dense(2), "qat", train_data=(X, Y)), UnsupportedModelError, TypeError),
    ("optimize a string-input model", lambda: kopt.optimize(_string_model(), "qat", train_data=(np.array([["a"]]), np.array([0]))),
     UnsupportedModelError, TypeError),
    ("to_tflite a string-input model", lambda: to_tflite(_string_model()), UnsupportedModelError, TypeError),
    ("prepare an unbuilt model", lambda: kopt.prepare(_unbuilt(), "qat"), UnsupportedModelError, TypeError),
    ("quantize an already-quantized model", lambda: quantize_model(quantize_model(_model())), InvalidArgumentError, ValueError),
    ("quantize with scheme='foo'", lambda: quantize_model(_model(), "foo"), InvalidArgumentError, ValueError),
    ("quantize_apply unsupported='skip'", lambda: kopt.quantization.quantize_apply(_model(), unsupported="skip"),
     InvalidArgumentError, ValueError),
    ("quantize a layer", lambda: quantize_model(layers.Dense(2)), UnsupportedModelError, TypeError),
    ("to_tflite mode='foo'", lambda: to_tflite(_model(), mode="foo"), InvalidArgumentError, ValueError),
    ("to_tflite int8_io='int16'", lambda: to_tflite(_model(), int8_io="int16", representative_data=X), InvalidArgumentError, ValueError),
    ("to_tflite calibration_samples=0", lambda: to_tflite(_model(), representative_data=X, calibration_samples=0),
     InvalidArgumentError, ValueError),
    ("to_tflite sparse='yes'", lambda: to_tflite(_model(), representative_data=X, sparse="yes"), InvalidArgumentTypeError, TypeError),
    ("to_tflite empty representative data", lambda: to_tflite(_model(), representative_data=X[:0]), InvalidArgumentError, ValueError),
    ("to_tflite without ranges", lambda: to_tflite(_model()), MissingRangesError, ValueError),
    ("to_tflite a layer", lambda: to_tflite(layers.Dense(2)), UnsupportedModelError, TypeError),
    ("check_edgetpu(b'')", lambda: check_edgetpu(b""), CorruptTFLiteError, ValueError),
    ("check_edgetpu(random bytes)", lambda: check_edgetpu(np.random.default_rng(0).bytes(512)), CorruptTFLiteError, ValueError),
    ("check_edgetpu(random bytes, TFL3 tag)", lambda: check_edgetpu(b"\0\0\0\0TFL3" + np.random.default_rng(1).bytes(64)),
     CorruptTFLiteError, ValueError),
    ("check_edgetpu(a number)", lambda: check_edgetpu(3), InvalidArgumentTypeError, TypeError),
    ("evaluate 1 label for 64 samples", lambda: evaluate(b"\0\0\0\0TFL3", X, Y[:1]), InvalidArgumentError, ValueError),
    ("evaluate NaN inputs", lambda: evaluate(b"\0\0\0\0TFL3", np.full((2, 8, 8, 1), np.nan, "float32"), Y[:2]),
     InvalidArgumentError, ValueError),
    ("compression with 1 label", lambda: kopt.report.compression(_model(), data=(X, Y[:1])), InvalidArgumentError, ValueError),
    ("compression with labels out of range", lambda: kopt.report.compression(_model(), data=(X, Y + 10)), InvalidArgumentError, ValueError),
    ("sensitivity on empty data", lambda: kopt.analysis.sensitivity(_model(), (X[:0], Y[:0])), InvalidArgumentError, ValueError),
    ("sensitivity with NaN inputs", lambda: kopt.analysis.sensitivity(_model(), (X * np.nan, Y)), InvalidArgumentError, ValueError),
    ("a report's unknown stage", lambda: _report_stage("nope"), UnknownNameError, KeyError),
    ("prune a pruned model", lambda: prune_low_magnitude(_pruned()), UnsupportedLayerError, ValueError),
    ("prune a weightless model", lambda: prune_low_magnitude(keras.Sequential([keras.Input((4,)), layers.Flatten()])),
     UnsupportedLayerError, ValueError),
    ("prune with a bad layer_filter", lambda: prune_low_magnitude(_model(), layer_filter=3), InvalidArgumentTypeError, TypeError),
    ("cluster into 0 clusters", lambda: cluster_weights(_model(), number_of_clusters=0), ClusteringConfigError, ValueError),
    ("cluster init='foo'", lambda: cluster_weights(_model(), number_of_clusters=4, init="foo"), ClusteringConfigError, ValueError),
    ("cluster a clustered model", lambda: cluster_weights(cluster_weights(_model(), number_of_clusters=4), number_of_clusters=4),
     NotClusterableError, TypeError),
    ("unknown preset", lambda: Policy.preset("nope"), PolicyError, ValueError),
    ("policy of a list", lambda: kopt.optimize(_model(), ["qat"], train_data=(X, Y)), PolicyError, ValueError),
    ("Budget out of range", lambda: kopt.Budget(max_accuracy_drop=2), InvalidArgumentError, ValueError),
    ("optimize an uncompiled model", lambda: kopt.optimize(tiny_dense(), "qat", train_data=(X, Y)), CompileSettingsError, ValueError),
    ("optimize with NaN weights", lambda: kopt.optimize(_nan_model(), "qat", train_data=(X, Y)), NonFiniteWeightsError, ValueError),
    ("register_layer of a non-layer", lambda: kopt.register_layer(int, {"kernel": None}), InvalidArgumentTypeError, TypeError),
    ("cluster_preserve on an unclustered model", lambda: quantize_model(_wide(), "cluster_preserve"), NotClusteredError, ValueError),
    ("for_model of a layer", lambda: kopt.callbacks.for_model(layers.Dense(2)), UnsupportedModelError, TypeError),
    ("replace a layer not in the graph", lambda: kopt.graph.analyze(_model()).replace_layer(layers.Dense(2), layers.Dense(2)),
     GraphRewriteError, ValueError),
]


def _report_stage(name: str):
    report = kopt.report.Report(model_name="m", policy={}, stages=[_report()])
    return report.stage(name)


def _wide() -> keras.Model:
    inputs = keras.Input((300,))
    return keras.Model(inputs, layers.Dense(4, name="wide")(inputs))


@pytest.mark.backends
@pytest.mark.parametrize("what, call, error, builtin", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_the_documented_kopt_error(what, call, error, builtin):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            call()
    raised = info.value
    assert isinstance(raised, KoptError) and isinstance(raised, builtin), f"{what}: {type(raised).__mro__}"
    message = str(raised)
    lines = message.splitlines()
    assert 1 <= len(lines) <= 2, f"{what}: a message is one line plus an optional hint, got {len(lines)}:\n{message}"
    assert all(len(line) <= 600 for line in lines), f"{what}: a {max(map(len, lines))}-character line"


@pytest.mark.backends
def test_long_values_and_rule_lists_are_truncated_in_messages():
    rules = [{"match": f"layer_{i}", "exclude": True} for i in range(3000)]
    with pytest.raises(PolicyError) as info:
        Policy.from_dict({"name": "big", "quantize": {}, "rules": rules}).resolve(_model())
    assert "layer_0" in str(info.value) and "+2990 more" in str(info.value)
    assert len(str(info.value)) < 800
    with pytest.raises(PolicyError) as info:
        Policy.from_dict({"prune": {"sparsity": "x" * 100_000}})
    assert len(str(info.value)) < 400


@pytest.mark.backends
def test_pruning_a_pruned_model_says_strip_first():
    """Defect 7: it said 'No layer ... can be pruned with these options' (clustering already said strip first)."""
    with pytest.raises(UnsupportedLayerError, match=r"already wrapped for training: \['hidden', 'out'\] by PruneWrapper. "
                       r"Strip first: call kopt.strip\(model\)"):
        prune_low_magnitude(_pruned())
    again = prune_low_magnitude(kopt.strip(_pruned()))  # the advice works
    assert {type(layer).__name__ for layer in again.layers} >= {"PruneWrapper"}


# ----------------------------------------------------------- README table
def readme_error_rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Errors you can expect", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)`(?: \(a warning\))? \| `(\w+)`[^|]*\|", section, re.M)
    assert len(rows) >= 15, rows
    return rows


def _resolve(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    target = kopt
    for part in module.split(".")[1:]:
        target = getattr(target, part)
    return getattr(target, name)


def _coverage_warning() -> None:
    from tests.technique.test_coverage import composite_model

    model = composite_model()
    plan = Policy.preset("prune").resolve(model)
    wrapped = kopt.stages.wrap_prune(model, plan, steps=10)
    kopt.coverage.warn_pruning(wrapped, excluded=kopt.stages.left_dense_by_plan(wrapped, plan))


def _converter_failure() -> None:
    inputs = keras.Input((8,))
    x = layers.Lambda(lambda t: keras.ops.erfinv(keras.ops.tanh(t) * 0.5), name="odd_one")(layers.Dense(8)(inputs))
    to_tflite(keras.Model(inputs, layers.Dense(2)(x)), representative_data=np.random.default_rng(0).random((8, 8), "float32"))


def _float_island() -> None:
    inputs = keras.Input((8,))
    x = layers.UnitNormalization(name="unit_norm")(layers.Dense(8)(inputs))
    to_tflite(keras.Model(inputs, layers.Dense(3)(x)), representative_data=np.random.default_rng(0).random((8, 8), "float32"))


def _not_fully_mapped() -> None:
    from tests.optimize_testing import tiny_cnn

    model = tiny_cnn(activation="leaky_relu")
    kopt.stages.lower_stage(model, Policy.preset("edgetpu").resolve(model), representative_data=X, strict=True)


def _micro_cannot_load_an_edgetpu_file() -> None:
    pytest.importorskip("tflite_micro")
    from kopt.export.micro import minimal_arena_bytes

    # Coral's compiled file: its edgetpu-custom-op is not a TFLite Micro op, so TFLM cannot load it
    minimal_arena_bytes(ROOT / "tests" / "fixtures" / "edgetpu" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")


README_TRIGGERS = {
    "UnsupportedModelError": lambda: kopt.optimize(_unbuilt(), "qat", train_data=(X, Y)),
    "InvalidArgumentError": lambda: kopt.optimize(_model(), "qat", train_data=(X, Y + 10)),
    "InvalidArgumentTypeError": lambda: prune_low_magnitude(_model(), layer_filter=3),
    "UnknownNameError": lambda: _report_stage("nope"),
    "CompileSettingsError": lambda: kopt.optimize(tiny_dense(), "qat", train_data=(X, Y)),
    "PolicyError": lambda: Policy.preset("nope"),
    "ClusteringConfigError": lambda: cluster_weights(_model(), number_of_clusters=0),
    "NotClusterableError": lambda: cluster_weights(cluster_weights(_model(), number_of_clusters=4), number_of_clusters=4),
    "UnsupportedLayerError": lambda: prune_low_magnitude(_pruned()),
    "NonFiniteWeightsError": lambda: prune_low_magnitude(_nan_model()),
    "NotClusteredError": lambda: quantize_model(_wide(), "cluster_preserve"),
    "MissingRangesError": lambda: to_tflite(_model()),
    "CorruptTFLiteError": lambda: check_edgetpu(b""),
    "GraphRewriteError": lambda: kopt.graph.analyze(_model()).replace_layer(layers.Dense(2), layers.Dense(2)),
    "CoverageWarning": _coverage_warning,
}
# These run the TFLite converter (seconds each): checked in the slow test below.
SLOW_TRIGGERS = {
    "ConversionError": _converter_failure,
    "NotFullyIntegerError": _float_island,
    "NotFullyMappedError": _not_fully_mapped,
    "MicroError": _micro_cannot_load_an_edgetpu_file,
}


def _check_row(dotted: str, builtin: str, trigger) -> None:
    cls = _resolve(dotted)
    assert issubclass(cls, _builtin(builtin)), f"{dotted} is not a {builtin}"
    if issubclass(cls, Warning):
        with pytest.warns(cls):
            trigger()
        return
    assert issubclass(cls, KoptError), f"{dotted} is not a KoptError"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(cls) as info:
            trigger()
    assert isinstance(info.value, _builtin(builtin))


def _builtin(name: str) -> type:
    import builtins

    return getattr(builtins, name)


@pytest.mark.backends
def test_every_readme_error_row_is_raised_as_stated():
    rows = readme_error_rows()
    names = {dotted.rsplit(".", 1)[1] for dotted, _ in rows}
    assert names == set(README_TRIGGERS) | set(SLOW_TRIGGERS), "README rows and the triggers below differ"
    for dotted, builtin in rows:
        name = dotted.rsplit(".", 1)[1]
        if name in README_TRIGGERS:
            _check_row(dotted, builtin, README_TRIGGERS[name])


@pytest.mark.slow
def test_every_readme_converter_error_row_is_raised_as_stated():
    for dotted, builtin in readme_error_rows():
        name = dotted.rsplit(".", 1)[1]
        if name in SLOW_TRIGGERS:
            _check_row(dotted, builtin, SLOW_TRIGGERS[name])
