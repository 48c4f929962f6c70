"""kopt.pipeline.training: compile settings, data kinds, steps, fine-tuning learning rate."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kopt.pipeline import run_stages
from kopt.pipeline.training import CompileSettings, CompileSettingsError, Training, as_arrays, steps_per_epoch_of
from kopt.policy import Policy
from tests.optimize_testing import compile_model, digits, kernel, tiny_dense


def _wrappers(model, cls):
    return {layer.layer.name: layer for layer in model.layers if isinstance(layer, cls)}


# ----------------------------------------------------------------- training
@pytest.mark.backends
def test_compile_settings_are_reused_with_a_fresh_optimizer():
    model = compile_model(tiny_dense(), lr=0.01)
    settings = CompileSettings.from_model(model)
    other = settings.compile(tiny_dense("other"))
    assert other.optimizer is not model.optimizer
    assert float(keras.ops.convert_to_numpy(other.optimizer.learning_rate)) == pytest.approx(0.01)
    assert other.loss == "sparse_categorical_crossentropy"
    with pytest.raises(CompileSettingsError, match=r"pass loss= and optimizer="):
        CompileSettings.from_model(tiny_dense())
    assert CompileSettings.from_model(tiny_dense(), loss="mse", optimizer="sgd").loss == "mse"


@pytest.mark.backends
def test_data_kinds_steps_and_arrays():
    x, y, _, _ = digits(train=100)
    assert steps_per_epoch_of((x, y), 32) == 4

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return x[index * 20 : (index + 1) * 20], y[index * 20 : (index + 1) * 20]

    assert steps_per_epoch_of(Batches(), None) == 5
    xs, ys = as_arrays(Batches(), limit=30)
    np.testing.assert_array_equal(xs, x[:30])
    np.testing.assert_array_equal(ys, y[:30])
    with pytest.raises(ValueError, match=r"pass the labels too, as \(x, y\)"):
        Training(train_data=x, compile=CompileSettings("adam", "mse"))
    with pytest.raises(ValueError, match="unknown stage"):
        Training(train_data=(x, y), compile=CompileSettings("adam", "mse"), epochs={"prun": 1})


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, index):
        part = slice(index * self.batch, (index + 1) * self.batch)
        return self.x[part], self.y[part]


def test_tf_data_dataset_and_pydataset_are_accepted():
    import tensorflow as tf

    x, y, xv, yv = digits(train=160, val=64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    assert steps_per_epoch_of(dataset, None) == 5
    xs, ys = as_arrays(tf.data.Dataset.from_tensor_slices((x, y)), limit=7, sample_rank=3)  # unbatched
    assert xs.shape == (7, 8, 8, 1) and ys.shape == (7,)
    for train, validation in ((dataset, (xv, yv)), (_Batches(x, y, 32), _Batches(xv, yv, 16))):
        model = compile_model(tiny_dense())
        training = Training(
            train_data=train, validation_data=validation, compile=CompileSettings.from_model(model), epochs=2, verbose=0
        )
        assert training.steps_for("prune") == 10
        result = run_stages(model, Policy.preset("prune").resolve(model), training, lower=False)
        assert np.mean(kernel(result.model, "hidden") == 0) == pytest.approx(0.5, abs=0.01)
        assert "val_loss" in result.stage("prune").history
        eval_x, eval_y = training.eval_arrays(model)
        np.testing.assert_array_equal(eval_y, yv)
        assert not result.stage("prune").report.notes  # no warning from Keras about the data

@pytest.mark.backends
def test_learning_rate_scale_for_fine_tuning():
    settings = CompileSettings(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    scaled, note = settings.with_learning_rate_scale(0.1)
    assert scaled.optimizer.get_config()["learning_rate"] == pytest.approx(2e-4)
    assert settings.optimizer.get_config()["learning_rate"] == pytest.approx(2e-3)  # the original is untouched
    assert "2e-04" in note or "0.0002" in note
    by_name, _ = CompileSettings(optimizer="sgd", loss="mse").with_learning_rate_scale(0.5)
    assert isinstance(by_name.optimizer, keras.optimizers.SGD)
    assert by_name.optimizer.get_config()["learning_rate"] == pytest.approx(0.005)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
    with_schedule = CompileSettings(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    kept, note = with_schedule.with_learning_rate_scale(0.1)
    assert kept.optimizer is with_schedule.optimizer and "schedule kept" in note
