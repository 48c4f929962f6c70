"""kopt.optimize: every preset end to end on a tiny digits CNN, the result's files, prepare, errors."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest

from kopt.api import OptimizeResult, optimize, prepare
from kopt.export import run, weight_tensors
from kopt.pipeline.stages import NotFullyMappedError, lower_stage
from kopt.pipeline.training import CompileSettingsError
from kopt.policy import Policy, PolicyError
from kopt.report.plots import png_size
from kopt.sparsity import PruneWrapper
from kopt.technique.strip import strip
from tests.optimize_testing import digits, kernel, tiny_cnn, trained_cnn


@pytest.fixture(scope="module")
def trained():
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return digits()


def _run(model, policy, data, **kwargs):
    x, y, xv, yv = data
    kwargs.setdefault("epochs", 1)
    return optimize(model, policy, train_data=(x, y), validation_data=(xv, yv), verbose=0, **kwargs)


_RESULTS: dict[str, OptimizeResult] = {}


def _preset_result(trained, data, preset) -> OptimizeResult:
    """One run per preset per session: several tests look at the same result."""
    if preset not in _RESULTS:
        _RESULTS[preset] = _run(trained, preset, data)
    return _RESULTS[preset]


EXPECTED_STAGES = {
    "prune": ["baseline", "prune", "int8"],
    "prune_2x4": ["baseline", "prune", "int8"],
    "cluster": ["baseline", "cluster", "int8"],
    "qat": ["baseline", "quantize", "int8"],
    "ptq": ["baseline", "int8"],
    "edgetpu": ["baseline", "quantize", "int8"],
}


@pytest.mark.parametrize("preset", list(EXPECTED_STAGES))
def test_preset_end_to_end(trained, data, preset):
    before = [w.copy() for w in trained.get_weights()]
    result = _preset_result(trained, data, preset)
    for old, new in zip(before, trained.get_weights()):  # the user's model is not modified
        np.testing.assert_array_equal(old, new)
    assert not any(isinstance(layer, PruneWrapper) for layer in result.model.layers)
    report = result.report
    assert [s.name for s in report.stages] == EXPECTED_STAGES[preset]
    assert isinstance(result.tflite, bytes) and result.tflite[4:8] == b"TFL3"
    assert result.edgetpu.fully_mapped and report.final.edgetpu["fully_mapped"]

    baseline, final = report.stage("baseline"), report.final
    assert baseline.keras_accuracy > 0.8
    assert final.int8_accuracy >= baseline.keras_accuracy - 0.08
    # the int8 interpreter agrees with the last Keras stage (int8 I/O, batch 1)
    last_keras = report.stages[-2]
    assert abs(final.int8_accuracy - last_keras.keras_accuracy) <= 0.03
    tensors = {t.op: t for t in weight_tensors(result.tflite)}
    assert set(tensors) == {"CONV_2D", "FULLY_CONNECTED"}
    assert all(t.values.dtype == np.int8 for t in tensors.values())

    assert run(result.tflite, data[2][:4]).shape == (4, 10)
    if preset == "prune":
        assert np.mean(kernel(result.model, "fc") == 0) >= 0.5 - 1e-6
        assert tensors["FULLY_CONNECTED"].sparsity >= 0.5 - 1e-6  # zeros survive int8
        assert report.stage("prune").sparsity >= 0.5 - 1e-3
    if preset == "prune_2x4":
        assert tensors["FULLY_CONNECTED"].follows_n_m(2, 4)
        # the first conv has one input channel: it cannot take 2:4 and stays dense, with a note
        assert any(note.startswith("conv: not pruned") for note in report.stage("prune").notes)
        assert tensors["CONV_2D"].sparsity < 0.2
    if preset == "cluster":
        assert len(np.unique(kernel(result.model, "fc"))) <= 16
        assert all(t.max_unique_per_channel <= 16 for t in tensors.values())
        assert report.stage("cluster").max_unique_values <= 16
    if preset in ("qat", "edgetpu"):
        assert final.notes[0].startswith("int8 ranges from quantization-aware training")
        assert report.stage("quantize").layers[0].bits == 8
    if preset == "ptq":
        assert final.notes[0].startswith("int8 ranges calibrated post-training")


@pytest.mark.parametrize("preset", ["pqat", "cqat", "pcqat"])
def test_preserving_presets_keep_structure_in_the_tflite(trained, data, preset):
    result = _run(trained, preset, data)
    report = result.report
    expected = {"pqat": ["prune"], "cqat": ["cluster"], "pcqat": ["prune", "cluster"]}[preset]
    assert [s.name for s in report.stages] == ["baseline", *expected, "quantize", "int8"]
    assert report.final.int8_accuracy >= report.stage("baseline").keras_accuracy - 0.08
    stage_models = {s.name: s.model for s in result.stages if s.model is not None}
    before_qat = stage_models[expected[-1]]  # the stripped model quantization-aware training started from
    tensors = {t.op: t for t in weight_tensors(result.tflite)}
    assert set(tensors) == {"CONV_2D", "FULLY_CONNECTED"} and all(t.values.dtype == np.int8 for t in tensors.values())
    if "prune" in expected:
        fc = kernel(before_qat, "fc")
        assert np.mean(fc == 0) >= 0.5 - 1e-6
        assert tensors["FULLY_CONNECTED"].sparsity >= np.mean(fc == 0) - 0.005  # zeros survive QAT and int8
        np.testing.assert_array_equal(tensors["FULLY_CONNECTED"].values.T == 0, fc == 0)
    if "cluster" in expected:
        assert len(np.unique(kernel(before_qat, "fc"))) <= 16
        assert all(t.max_unique_per_channel <= 16 for t in tensors.values())  # FC: per tensor, conv: per channel
        assert tensors["FULLY_CONNECTED"].unique_values <= 16


def test_result_save_writes_loadable_files(trained, data, tmp_path):
    result = _preset_result(trained, data, "qat")
    paths = result.save(tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "model.keras", "model.tflite", "report.json", "report.md", "weight_density.png", "size_accuracy.png",
    }
    assert set(paths) == {"keras", "tflite", "json", "markdown", "weight_density", "size_accuracy"}
    loaded = keras.saving.load_model(paths["keras"])  # safe mode, no custom objects
    x = data[2][:16]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)
    assert paths["tflite"].read_bytes() == result.tflite
    saved = json.loads(paths["json"].read_text())
    assert [s["name"] for s in saved["stages"]] == ["baseline", "quantize", "int8"]
    assert saved["edgetpu"]["fully_mapped"] is True
    assert saved["policy"]["name"] == "qat"
    assert "| quantize |" in paths["markdown"].read_text()
    assert png_size(paths["size_accuracy"]) == (800, 400)
    assert png_size(paths["weight_density"]) == (800, 400)  # baseline + int8 panels


def test_per_layer_rules_give_each_layer_its_settings(trained, data):
    policy = Policy.preset("prune", sparsity=0.5, rules=[{"match": "fc", "prune": {"sparsity": 0.8}}, {"match": "conv", "exclude": True}])
    result = _run(trained, policy, data, lower=False)
    assert result.tflite is None and [s.name for s in result.report.stages] == ["baseline", "prune"]
    assert np.mean(kernel(result.model, "fc") == 0) == pytest.approx(0.8, abs=0.01)
    assert np.mean(kernel(result.model, "conv") == 0) == 0.0
    layers = {layer.name: layer for layer in result.report.stage("prune").layers}
    assert layers["fc"].sparsity == pytest.approx(0.8, abs=0.01) and layers["conv"].sparsity == 0.0


def test_uncompiled_model_needs_compile_settings(data):
    model = tiny_cnn()
    with pytest.raises(CompileSettingsError, match=r"not compiled.*model.compile\(.*pass loss= and optimizer="):
        _run(model, "ptq", data)
    result = _run(model, "ptq", data, loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    assert result.report.stage("baseline").keras_accuracy is not None
    assert not model.compiled  # the user's model is left alone


def test_edgetpu_target_reports_the_unmapped_op(data):
    model = trained_cnn(epochs=1, activation="leaky_relu")
    x, y, xv, yv = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = optimize(model, "edgetpu", train_data=(x[:128], y[:128]), validation_data=(xv, yv), epochs=1, verbose=0)
    assert not result.edgetpu.fully_mapped
    assert any("NOT fully mapped" in str(w.message) and "LEAKY_RELU" in str(w.message) for w in caught)
    assert any("LEAKY_RELU" in w for w in result.report.warnings)
    assert "**NOT fully mapped**" in result.report.to_markdown()
    with pytest.raises(NotFullyMappedError, match="LEAKY_RELU"):
        lower_stage(result.model, result.plan, strict=True)


def test_callbacks_and_epochs_per_stage(trained, data):
    seen = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    x, y, _, _ = data
    result = optimize(
        trained, "prune", train_data=(x[:256], y[:256]), epochs={"prune": 2}, callbacks=[Count()], verbose=0, lower=False
    )
    assert seen == [0, 1]
    assert len(result.stages[1].history["loss"]) == 2
    assert result.report.eval_split == "training"


def test_prepare_returns_the_wrapped_model_of_a_stage(trained, data):
    wrapped = prepare(trained, "prune", steps=30)
    wrappers = [layer for layer in wrapped.layers if isinstance(layer, PruneWrapper)]
    assert {w.layer.name for w in wrappers} == {"conv", "fc"}
    assert all(w.schedule.end_step == 20 for w in wrappers)  # end_step=None -> 2/3 of the steps
    assert wrapped.compiled  # same compile settings as the model, fresh optimizer
    assert wrapped.optimizer is not trained.optimizer
    from kopt.pipeline.callbacks import for_model

    callbacks = for_model(wrapped)
    assert [type(c).__name__ for c in callbacks] == ["UpdatePruningStep"]
    x, y, _, _ = data
    wrapped.fit(x[:320], y[:320], batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
    assert all(w.weight_sparsity()["kernel"] == pytest.approx(0.5, abs=0.02) for w in wrappers)

    clustered = prepare(trained, Policy.preset("cluster", number_of_clusters=4), stage="cluster")
    assert [type(l).__name__ for l in clustered.layers if hasattr(l, "number_of_clusters")] == ["ClusterWrapper"] * 2
    assert for_model(clustered) == []


def test_prepare_errors(trained):
    with pytest.raises(PolicyError, match="number of training steps is unknown"):
        prepare(trained, "prune")
    with pytest.raises(PolicyError, match="no training stage"):
        prepare(trained, "ptq")
    with pytest.raises(PolicyError, match=r"has no 'cluster' stage"):
        prepare(trained, "qat", stage="cluster")
    with pytest.raises(PolicyError, match="Unknown preset 'pqcat'"):
        prepare(trained, "pqcat")
    with pytest.raises(CompileSettingsError, match=r"not compiled.*pass loss= and optimizer="):
        prepare(tiny_cnn(), "qat")
    assert not prepare(tiny_cnn(), "qat", compile=False).compiled


def test_prepare_takes_compile_settings_and_strip_keeps_them(trained, data):
    """The hand-written loop: strip's model goes straight into the next stage's prepare."""
    x, y, _, _ = data
    wrapped = prepare(tiny_cnn(), "cluster", loss="sparse_categorical_crossentropy", optimizer="adam")
    assert wrapped.compiled and wrapped.loss == "sparse_categorical_crossentropy"
    wrapped.fit(x[:64], y[:64], epochs=1, verbose=0)
    stripped = strip(wrapped)
    assert stripped.compiled and stripped.optimizer is not wrapped.optimizer
    assert prepare(stripped, "qat").compiled


def test_a_layer_excluded_from_qat_is_calibrated_post_training(trained, data):
    """An int8 file has no float layer: a layer kept out of QAT gets its ranges from calibration."""
    policy = Policy.preset("qat", rules=[{"match": "fc", "exclude": True}])
    x, y, xv, yv = data
    result = optimize(trained, policy, train_data=(x[:128], y[:128]), epochs=1, verbose=0)
    assert not any(getattr(layer, "layer", None) is not None and layer.layer.name == "fc" for layer in result.model.layers)
    fc = [t for t in weight_tensors(result.tflite) if t.name.startswith("fc/") and t.values.ndim == 2]
    assert fc and fc[0].values.dtype == np.int8  # lowered fully int8 (to_tflite checks every op)
    assert any("fc (excluded from QAT) calibrated post-training" in note for note in result.stages[-1].report.notes)
    with pytest.raises(PolicyError, match=r"\['fc'\] are excluded from quantization-aware training"):
        lower_stage(result.model, result.plan)


@pytest.mark.backends
def test_prepare_fit_strip_under_every_backend():
    from kopt.pipeline.callbacks import for_model
    from kopt.technique.strip import strip
    from tests.optimize_testing import compile_model, tiny_dense

    x, y, _, _ = digits(train=160)
    model = compile_model(tiny_dense())
    wrapped = prepare(model, Policy.preset("prune", sparsity=0.75), steps=10)
    wrapped.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=for_model(wrapped))
    stripped = strip(wrapped)
    assert np.mean(kernel(stripped, "hidden") == 0) == pytest.approx(0.75, abs=0.01)
    assert np.mean(kernel(model, "hidden") == 0) == 0.0
