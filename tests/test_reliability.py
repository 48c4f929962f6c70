"""Reliability and safety across kopt (issue 11): interrupted training resumes exactly, the same seed
gives the same model, a corrupted ``.tflite`` is a clear CLI error, nothing loads unsafely,
one error class per kind, fit-style representative data lowers like plain inputs.

TensorFlow backend (bit-identical results are promised there; lowering needs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kopt
from kopt.cli import main
from kopt.core.errors import InvalidArgumentError, UnsupportedLayerError
from kopt.policy import Policy, PolicyError
from kopt.sparsity import PolynomialDecay, PruneWrapper, prune_low_magnitude

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCH = 5, 8


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def stripped_weights(model: keras.Model) -> list[np.ndarray]:
    return [numpy(w) for w in kopt.strip(model).weights]


def assert_bit_identical(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def image_data(samples: int = 32, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(samples, 8, 8, 1)).astype("float32"), rng.integers(0, classes, samples).astype("int32")


def small_cnn(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x), name="small")


def compiled(model: keras.Model) -> keras.Model:
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# ------------------------------------------------------------ resume after an interruption
SCHEDULE = PolynomialDecay(0.0, 0.75, begin_step=2, end_step=16, frequency=2)  # 4 steps per epoch: 20 in all


def pruned_cnn(seed: int) -> keras.Model:
    return compiled(prune_low_magnitude(small_cnn(seed), schedule=SCHEDULE))


def pruning_steps(model: keras.Model) -> list[int]:
    return [layer.step for layer in model.layers if isinstance(layer, PruneWrapper)]


class Crash(keras.callbacks.Callback):
    """Stands for a killed job: raises at the end of epoch ``after``."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after:
            raise KeyboardInterrupt(f"simulated interruption after epoch {epoch}")


class Record(keras.callbacks.Callback):
    """The pruning step when training (re)starts and the epochs actually run."""

    def on_train_begin(self, logs=None):
        self.start_steps = pruning_steps(self.model)
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def uninterrupted():
    x, y = image_data()
    model = pruned_cnn(seed=3)
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    assert pruning_steps(model) == [20, 20]
    return stripped_weights(model)


def test_backup_and_restore_resumes_pruning_at_the_same_step_with_the_same_result(uninterrupted, tmp_path):
    x, y = image_data()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = pruned_cnn(seed=3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[backup, Crash(1)])
    assert pruning_steps(interrupted) == [8, 8]

    # A new process: the model is rebuilt (even from another seed); BackupAndRestore brings back
    # weights, masks, pruning step and optimizer state, and skips the finished epochs.
    resumed, record = pruned_cnn(seed=99), Record()
    resumed.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), record],
    )
    assert record.start_steps == [8, 8] and record.epochs == [2, 3, 4]
    assert pruning_steps(resumed) == [20, 20]
    assert_bit_identical(stripped_weights(resumed), uninterrupted)
    assert np.mean(uninterrupted[0] == 0) == 0.75  # the conv kernel reached the final sparsity


def test_weights_checkpoint_reload_resumes_the_same_way(uninterrupted, tmp_path):
    x, y = image_data()
    path = str(tmp_path / "epoch.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    interrupted = pruned_cnn(seed=3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(
            x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[checkpoint, Crash(1)]
        )

    resumed = pruned_cnn(seed=99)
    resumed.optimizer.build(resumed.trainable_variables)  # so the optimizer state loads too
    resumed.load_weights(path)
    assert pruning_steps(resumed) == [8, 8]
    resumed.fit(x, y, batch_size=BATCH, epochs=EPOCHS, initial_epoch=2, shuffle=False, verbose=0)
    assert_bit_identical(stripped_weights(resumed), uninterrupted)


# ---------------------------------------------------------------------------- determinism
def clustered_run(seed: int) -> list[np.ndarray]:
    x, y = image_data()
    model = compiled(kopt.clustering.cluster_weights(small_cnn(seed), 4, init="kmeans++", seed=seed))
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)  # shuffled by Keras' seeded RNG
    return stripped_weights(model)


def qat_run(seed: int) -> list[np.ndarray]:
    x, y = image_data()
    model = compiled(kopt.quantization.quantize_model(small_cnn(seed)))
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    return stripped_weights(model)


@pytest.mark.parametrize("run", [clustered_run, qat_run], ids=["cluster", "qat"])
def test_same_seed_gives_bit_identical_stripped_weights(run):
    assert_bit_identical(run(5), run(5))


def test_same_seed_gives_the_same_pcqat_model_and_tflite():
    """The whole deployment path (prune -> cluster -> preserving QAT -> int8) repeats bit for bit."""
    x, y = image_data(samples=64)
    model = compiled(small_cnn(1))
    runs = [
        kopt.optimize(model, "pcqat", train_data=(x, y), epochs=1, batch_size=BATCH, seed=3, verbose=0)
        for _ in range(2)
    ]
    assert_bit_identical([numpy(w) for w in runs[0].model.weights], [numpy(w) for w in runs[1].model.weights])
    assert runs[0].tflite == runs[1].tflite


# ------------------------------------------------------------------ corrupted .tflite in the CLI
@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    x, _ = image_data()
    path = tmp_path_factory.mktemp("tflite") / "small.tflite"
    path.write_bytes(kopt.export.to_tflite(small_cnn(0), representative_data=x))
    return path


def corrupted_variants(raw: bytes) -> list[bytes]:
    rng = np.random.default_rng(0)
    variants = [raw[:n] for n in (8, 16, 64, len(raw) // 3, len(raw) // 2, len(raw) - 100, len(raw) - 1)]
    for flips in (1, 4, 32):
        for _ in range(8):
            damaged = bytearray(raw)
            for index in rng.integers(8, len(raw), flips):  # keep the 'TFL3' identifier
                damaged[index] = int(rng.integers(0, 256))
            variants.append(bytes(damaged))
    return variants


def test_inspect_reports_a_corrupted_file_without_traceback(tflite_file, tmp_path, capsys):
    raw = tflite_file.read_bytes()
    bad = tmp_path / "bad.tflite"
    refused = 0
    for variant in corrupted_variants(raw):
        bad.write_bytes(variant)
        code = main(["inspect", str(bad)])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if code != 0:  # some flips only touch weight bytes: still a readable model
            assert code == 2 and "kopt: error:" in err
            assert "truncated or corrupted" in err or "not a TFLite flatbuffer" in err, err
            refused += 1
    assert refused >= 20
    bad.write_bytes(raw[: len(raw) // 2])
    assert main(["inspect", str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert f"({len(raw) // 2} bytes) is truncated or corrupted" in err and "re-export it" in err


def test_inspect_of_a_truncated_file_in_a_subprocess(tflite_file, tmp_path):
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(tflite_file.read_bytes()[:300])
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "kopt.cli", "inspect", str(bad)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert "truncated or corrupted" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


# ---------------------------------------------------------------------------- safe loading
def test_kopt_never_loads_unsafely_nor_evaluates_code():
    forbidden = {
        "safe_mode=False": re.compile(r"safe_mode\s*=\s*False"),
        "enable_unsafe_deserialization": re.compile(r"enable_unsafe_deserialization"),
        "SafeModeScope": re.compile(r"SafeModeScope"),
        "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
        "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\s*\("),
        "pickle": re.compile(r"^\s*(import pickle|from pickle)", re.M),
    }
    sources = sorted((ROOT / "kopt").rglob("*.py"))
    assert len(sources) > 20
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name, pattern in forbidden.items()
        if pattern.search(path.read_text())
    ]
    assert found == []


def test_the_converter_process_always_loads_in_safe_mode(monkeypatch, tmp_path):
    from kopt.export import _subprocess_lower

    calls = []
    monkeypatch.setattr(keras.saving, "load_model", lambda path, **kwargs: calls.append(kwargs))
    _subprocess_lower.load_request_model(str(tmp_path))
    assert calls == [{"safe_mode": True}]


def test_lambda_models_are_refused_before_the_converter_process_starts(monkeypatch):
    from kopt.export import _subprocess_lower

    inputs = keras.Input((3,))
    doubled = keras.layers.Lambda(lambda t: t * 2, name="double")(keras.layers.Dense(2)(inputs))
    with_lambda = keras.Model(inputs, doubled)
    started = []
    monkeypatch.setattr(_subprocess_lower, "convert_in_worker", lambda *a, **k: started.append(a))
    with pytest.raises(UnsupportedLayerError, match=r"\['double'\].*Lambda.*safe mode"):
        _subprocess_lower.lower_in_subprocess(with_lambda, None, None)
    assert started == []
    assert _subprocess_lower._lambda_layers(small_cnn(0)) == []


# ------------------------------------------------------------------------------ error classes
def test_one_unsupported_layer_error_class():
    assert kopt.quantization.UnsupportedLayerError is UnsupportedLayerError
    from kopt.quantization.api import UnsupportedLayerError as from_api

    assert from_api is UnsupportedLayerError

    class Opaque(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.w

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Opaque(name="opaque")(keras.layers.Dense(4)(inputs)))
    with pytest.raises(UnsupportedLayerError, match="'opaque' \\(Opaque\\)"):
        kopt.quantization.quantize_model(model)


# --------------------------------------------------------- fit-style representative data
def test_to_tflite_reads_x_y_tuples_and_datasets_as_inputs(tmp_path):
    import tensorflow as tf

    from kopt.export.flatbuffer import load

    x, y = image_data(16)
    model = small_cnn(0)

    def quantization(data) -> list:
        tensors = load(kopt.export.to_tflite(model, representative_data=data)).main.tensors
        return [(t.name, t.quantization.scales.tolist(), t.quantization.zero_points.tolist()) for t in tensors]

    reference = quantization(x)
    assert quantization((x, y)) == reference
    assert quantization(tf.data.Dataset.from_tensor_slices((x, y)).batch(4)) == reference
    with pytest.raises(InvalidArgumentError, match="input '[^']+' has samples of shape .*expects \\(8, 8, 1\\)"):
        kopt.export.to_tflite(model, representative_data=(x[..., 0], y))
    with pytest.raises(InvalidArgumentError, match="dtype <U1"):
        kopt.export.to_tflite(model, representative_data=np.full((2, 8, 8, 1), "a"))


# ------------------------------------------------------------------ policy text fuzzing
VALID_POLICY = json.dumps({"prune": {"sparsity": 0.5}, "rules": [{"match": "conv"}]})
nested = st.builds(
    lambda depth, pair: pair[0] * depth + pair[1] * depth, st.integers(1, 20000), st.sampled_from(["[]", '{"a":}'])
)
truncated = st.builds(lambda cut: VALID_POLICY[:cut], st.integers(0, len(VALID_POLICY)))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), nested, truncated))
def test_fuzzed_policy_text_only_raises_policy_errors(text):
    """Not only valid JSON (test_policy fuzzes those): any text, truncated and absurdly nested documents."""
    try:
        Policy.from_json(text)
    except PolicyError:
        pass


def test_unreadable_policy_files_are_policy_errors(tmp_path):
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyError, match="not UTF-8 text"):
        Policy.load(binary)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(PolicyError, match="nested too deeply"):
        Policy.load(nested)
