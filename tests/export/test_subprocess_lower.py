"""Models trained under any backend lower through a TensorFlow-backend converter process.

Under JAX and PyTorch ``to_tflite`` takes this path by default; under TensorFlow the first test
asks for it with ``isolate=True`` so the same code runs in every CI job. The converter worker's own
life cycle (reuse, replacement) does not depend on the parent's backend: tested in the TensorFlow pass.
"""

import json
import os

import keras
import numpy as np
import pytest
from export_testing import qat_model, uniform
from keras import layers

from kopt.core.errors import ConversionError, NotFullyIntegerError
from kopt.export import MissingRangesError, check_edgetpu, run, to_tflite
from kopt.export._subprocess_lower import _child, _rebuild_error
from kopt.export.diagnostics import float_ops

ISOLATE = True if keras.backend.backend() == "tensorflow" else None  # None: the backend's default


def _digits(n=400):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:n] / 16.0).astype("float32").reshape(-1, 8, 8, 1), y[:n]


@pytest.mark.backends
def test_model_trained_on_this_backend_lowers_to_full_int8():
    x, y = _digits()
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, activation="relu")(inp)
    h = layers.Flatten()(h)
    model = keras.Model(inp, layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)

    tflite = to_tflite(model, representative_data=x[:64], isolate=ISOLATE)

    assert float_ops(tflite) == []
    assert check_edgetpu(tflite).fully_mapped
    expected = model.predict(x[:200], verbose=0)
    got = run(tflite, x[:200])
    assert np.max(np.abs(got - expected)) < 0.05
    float_accuracy = np.mean(expected.argmax(-1) == y[:200])
    assert float_accuracy > 0.8  # it learned, so the comparison below means something
    assert abs(np.mean(got.argmax(-1) == y[:200]) - float_accuracy) <= 0.02


@pytest.mark.backends
def test_qat_model_trained_on_this_backend_keeps_its_ranges():
    model = qat_model(shape=(6, 6, 3), classes=3)
    x = uniform((32, 6, 6, 3), seed=4)
    y = np.arange(32) % 3
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)

    tflite = to_tflite(model)  # ranges from the fake-quant ops, no data; a subprocess unless TF

    assert float_ops(tflite) == []
    error = np.abs(run(tflite, x[:8]) - model.predict(x[:8], verbose=0))
    # Mostly within one softmax step (1/256); a one-step tie flip in the coarse FC output
    # (scale 16/255) moves a probability by up to ~0.02.
    assert np.mean(error <= 1.5 / 256) >= 0.9 and error.max() < 0.03


def test_child_reports_errors_for_the_parent(tmp_path):
    # The converting process's side of the protocol, run in this (TensorFlow) process.
    inp = keras.Input((4,))
    keras.Model(inp, layers.Dense(2)(inp)).save(tmp_path / "model.keras")
    options = {"mode": "int8", "io_type": "int8", "batch_size": 1, "per_channel_dense": False}
    request = {"options": options, "modules": []}
    (tmp_path / "request.json").write_text(json.dumps(request))
    with pytest.raises(SystemExit):
        _child(str(tmp_path))
    assert not os.path.exists(tmp_path / "model.tflite")
    error = _rebuild_error(json.loads((tmp_path / "error.json").read_text()))
    assert isinstance(error, MissingRangesError) and "representative_data" in str(error)


def test_rebuilt_errors_keep_their_class_and_attributes():
    error = _rebuild_error(
        {
            "type": "NotFullyIntegerError",
            "module": "kopt.core.errors",
            "message": "not int8",
            "attributes": {"op": "ADD", "layer": "add", "float_ops": [[3, "ADD", "add"]]},
        }
    )
    assert isinstance(error, NotFullyIntegerError)
    assert (error.op, error.layer, str(error)) == ("ADD", "add", "not int8")
    assert isinstance(_rebuild_error({"type": "ValueError", "message": "bad"}), ValueError)
    foreign = _rebuild_error({"type": "ConverterError", "module": "tensorflow.lite", "message": "boom"})
    assert isinstance(foreign, ConversionError) and "boom" in str(foreign)


def test_one_converter_process_serves_many_conversions_and_a_dead_one_is_replaced():
    import signal

    from kopt.export import _subprocess_lower

    inp = keras.Input((4,))
    model = keras.Model(inp, layers.Dense(2)(inp))
    x = uniform((16, 4), seed=1)
    first = to_tflite(model, representative_data=x, isolate=True)
    worker = _subprocess_lower._worker.process
    with pytest.raises(MissingRangesError):  # an error in the worker is reported; the worker stays
        to_tflite(model, isolate=True)
    assert to_tflite(model, representative_data=x, isolate=True) == first
    assert _subprocess_lower._worker.process is worker and worker.poll() is None

    os.kill(worker.pid, signal.SIGKILL)  # as a converter crash would end it
    worker.wait()
    assert to_tflite(model, representative_data=x, isolate=True) == first
    assert _subprocess_lower._worker.process is not worker


def test_an_edited_custom_layer_module_is_imported_afresh_by_the_converter_process(tmp_path, monkeypatch):
    import importlib
    import sys
    import time

    source = '''import keras


@keras.saving.register_keras_serializable(package="kopt_worker_test")
class Scale(keras.layers.Layer):
    def call(self, x):
        return x * FACTOR


FACTOR = {factor}
'''
    module_file = tmp_path / "kopt_worker_test_layers.py"
    module_file.write_text(source.format(factor=2.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("kopt_worker_test_layers")
    monkeypatch.setitem(sys.modules, "kopt_worker_test_layers", module)
    x = uniform((16, 4), seed=2, low=0.0, high=1.0)

    def lowered_output():
        inp = keras.Input((4,))
        model = keras.Model(inp, module.Scale()(layers.Dense(4, kernel_initializer="identity")(inp)))
        tflite = to_tflite(model, representative_data=x, isolate=True)
        return run(tflite, x), model.predict(x, verbose=0)

    lite, expected = lowered_output()
    np.testing.assert_allclose(lite, expected, atol=0.02)
    module_file.write_text(source.format(factor=-3.0))  # the user edits the layer and reloads it
    os.utime(module_file, (time.time() + 5, time.time() + 5))
    importlib.reload(module)
    lite, expected = lowered_output()
    np.testing.assert_allclose(lite, expected, atol=0.03)  # -3x, not the 2x the worker imported first
