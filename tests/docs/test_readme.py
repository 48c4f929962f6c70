"""The docs are executed: every Python and shell snippet of README.md and docs/*.md, and every
docstring example of kopt, runs on small data (digits, one tiny trained CNN shared by all).

Snippets marked ``<!-- illustrative -->`` are not run (see tests/docs/snippets.py). Each snippet
runs in a fresh namespace, in a temporary directory, with the names the docs take as given
(``model``, ``x_train``, ``policy``...). Snippets that train for long are marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import kopt
from tests.docs.snippets import ROOT, Snippet, doc_files, docstring_snippets, markdown_snippets

MARKDOWN = [s for path in doc_files() for s in markdown_snippets(path)]
DOCSTRINGS = docstring_snippets()
# Sections whose snippets train several stages or search (minutes on 2 shared cores).
SLOW_SECTIONS = (
    "### The smallest model within a budget",
    "### Command line",
    "### Microcontrollers",
    "### Collaborative optimization",
    "### Custom layers",
    "### Distributed fine-tuning",
    "### Per-layer sensitivity",
)


def _param(snippet: Snippet):
    marks = [pytest.mark.slow] if snippet.section.startswith(SLOW_SECTIONS) else []
    if snippet.illustrative:
        marks.append(pytest.mark.skip(reason="marked <!-- illustrative --> in the docs"))
    return pytest.param(snippet, id=snippet.source, marks=marks)


def _digits():
    digits = load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    return x, digits.target.astype("int32")


@pytest.fixture(scope="module")
def trained():
    """conv1 -> conv2 -> fc: the names the docs' policy examples match."""
    keras.utils.set_random_seed(0)
    x, y = _digits()
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="fc")(h)
    model = keras.Model(inputs, outputs, name="docs_cnn")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1200], y[:1200], epochs=8, batch_size=32, verbose=0)
    return model


@keras.saving.register_keras_serializable(package="kopt_docs")
class GatedDense(keras.layers.Layer):
    """The custom layer of the README's register_layer example: a kernel and one matmul, like a Dense.

    (Ops inside a custom layer after the matmul, e.g. a sigmoid gate, would need ranges of their
    own for a fully int8 file: its QuantizeConfig quantizes the kernel and the output only.)
    """

    def __init__(self, units: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _copy(trained: keras.Model) -> keras.Model:
    model = keras.models.clone_model(trained)
    model.set_weights(trained.get_weights())
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _namespace(trained: keras.Model, code: str) -> dict:
    x, y = _digits()
    x_train, y_train, x_val, y_val = x[:256], y[:256], x[1200:1400], y[1200:1400]
    ns = {
        "keras": keras, "kopt": kopt, "np": np, "model": _copy(trained),
        "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_val, "y_test": y_val,
        "x": x_train, "y": y_train, "epochs": 1, "batches_per_epoch": 8, "batches": 8,
        "policy": kopt.Policy.preset("pcqat"), "GatedDense": GatedDense, "MyLayer": GatedDense,
        "QuantizeConfig": kopt.quantization.QuantizeConfig, "WeightQuantizer": kopt.quantization.WeightQuantizer,
    }
    if "GatedDense" in code:  # a model that holds the custom layer
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Softmax()(GatedDense(10, name="gated")(keras.layers.Flatten()(inputs)))
        ns["model"] = keras.Model(inputs, outputs)
        ns["model"].compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    if "qat_model" in code:
        ns["qat_model"] = kopt.quantization.quantize_model(ns["model"])
    if "train_ds" in code or "tf." in code:
        import tensorflow as tf

        ns["tf"] = tf
        ns["train_ds"] = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(32)
    return ns


@pytest.mark.parametrize("snippet", [_param(s) for s in MARKDOWN if s.language == "python"])
def test_markdown_python_snippet_runs(snippet, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.code, snippet.source, "exec"), _namespace(trained, snippet.code))


def _cli_inputs(trained: keras.Model, directory) -> None:
    """The files the command-line examples name: model.keras, data.npz, my_policy.json."""
    x, y = _digits()
    _copy(trained).save(directory / "model.keras")
    # the whole of digits: the search's 1-point budget is then a few samples, not one
    np.savez(directory / "data.npz", x_train=x[:1200], y_train=y[:1200], x_val=x[1200:], y_val=y[1200:])
    kopt.Policy.preset("pcqat").dump(directory / "my_policy.json")


@pytest.mark.parametrize("snippet", [_param(s) for s in MARKDOWN if s.language == "bash"])
def test_markdown_shell_snippet_runs(snippet, trained, tmp_path):
    """``kopt`` is this checkout's CLI; ``[--option]`` (usage notation for optional) runs with the option."""
    _cli_inputs(trained, tmp_path)
    code = re.sub(r"\[(--[^\]]*)\]", r"\1", snippet.code)
    prelude = f'kopt() {{ "{sys.executable}" -m kopt.cli "$@"; }}\npython() {{ "{sys.executable}" "$@"; }}\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"{snippet.source} failed:\n{code}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


def test_every_doc_file_has_snippets_and_illustrative_ones_are_few():
    """The extractor finds the README's snippets; skipping is the exception, not the rule."""
    assert len(MARKDOWN) >= 15
    assert sum(s.illustrative for s in MARKDOWN) <= 3


@pytest.mark.parametrize("snippet", [pytest.param(s, id=s.source) for s in DOCSTRINGS])
def test_docstring_example_runs(snippet, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.code, snippet.source, "exec"), _namespace(trained, snippet.code))
