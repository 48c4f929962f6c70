"""kopt.callbacks: UpdatePruningStep checks the run, PruningSummaries writes TensorBoard scalars."""

import glob
import warnings

import keras
import numpy as np
import pytest

import kopt.callbacks
from kopt.core.errors import InvalidArgumentError
from kopt.sparsity import ConstantSparsity, PolynomialDecay, PruningSummaries, UpdatePruningStep, prune_low_magnitude

BACKENDS = pytest.mark.backends
X = np.random.default_rng(0).random((32, 8)).astype("float32")


def pruned_model(schedule):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(4, name="b")])
    pruned = prune_low_magnitude(model, schedule=schedule)
    pruned.compile("sgd", "mse")
    return pruned


def test_public_module_reexports():
    assert kopt.callbacks.UpdatePruningStep is UpdatePruningStep
    assert kopt.callbacks.PruningSummaries is PruningSummaries


def test_update_pruning_step_refuses_an_unpruned_model():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    with pytest.raises(InvalidArgumentError, match="no pruned layers.*prune_low_magnitude"):
        model.fit(X, X[:, :4], verbose=0, callbacks=[UpdatePruningStep()])


@BACKENDS
def test_update_pruning_step_warns_when_training_stops_early_and_not_otherwise():
    pruned = pruned_model(PolynomialDecay(0.0, 0.5, begin_step=0, end_step=20, frequency=2))
    with pytest.warns(UserWarning, match=r"prune_a: step 4, schedule begins at step 0 and ends at step 20"):
        pruned.fit(X, X[:, :4], batch_size=8, verbose=0, callbacks=[UpdatePruningStep()])
    finished = pruned_model(ConstantSparsity(0.5, begin_step=0, end_step=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        finished.fit(X, X[:, :4], batch_size=8, verbose=0, callbacks=[UpdatePruningStep()])


@BACKENDS
def test_pruning_summaries_write_per_layer_sparsity(tmp_path):
    import tensorflow as tf

    pruned = pruned_model(ConstantSparsity(0.75, begin_step=0))
    summaries = PruningSummaries(str(tmp_path), update_freq=2)
    pruned.fit(X, X[:, :4], batch_size=8, epochs=2, verbose=0, callbacks=[summaries])
    scalars = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert scalars["pruning/prune_a/kernel/sparsity"] == [(2, 0.75), (4, 0.75), (6, 0.75), (8, 0.75)]
    assert scalars["pruning/prune_b/step"][-1] == (8, 8.0)


def test_pruning_summaries_validates_update_freq():
    with pytest.raises(InvalidArgumentError, match="update_freq=0"):
        PruningSummaries("logs", update_freq=0)
