"""kopt.tfmot.sparsity.keras: TFMOT's pruning API (names, defaults, errors) on kopt."""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import pytest

import kopt
from kopt import tfmot
from kopt.core.errors import KoptError, UnsupportedLayerError
from kopt.sparsity import PruneWrapper
from kopt.technique.coverage import CoverageWarning
from tests.tfmot.tfmot_testing import (
    UnknownWeighted,
    compile_model,
    data,
    functional_cnn,
    small_cnn,
    sparsity,
)

sk = tfmot.sparsity.keras


def test_signature_and_defaults_follow_tfmot():
    params = inspect.signature(sk.prune_low_magnitude).parameters
    assert list(params)[:6] == [
        "to_prune", "pruning_schedule", "block_size", "block_pooling_type", "pruning_policy", "sparsity_m_by_n"
    ]
    assert params["block_size"].default == (1, 1)
    assert params["block_pooling_type"].default == "AVG"
    pruned = sk.prune_low_magnitude(small_cnn())
    schedule = pruned.get_layer("prune_conv").schedule
    assert isinstance(schedule, sk.ConstantSparsity)
    assert (schedule.target_sparsity, schedule.begin_step, schedule.frequency) == (0.5, 0, 100)
    assert sk.PolynomialDecay(0.2, 0.8, 0, 100).get_config()["power"] == 3


@pytest.mark.backends
def test_sequential_stays_sequential_prunes_like_tfmot_and_strips():
    model = small_cnn()
    depthwise_before = model.get_layer("depthwise").get_weights()[0]
    pruned = sk.prune_low_magnitude(model, pruning_schedule=sk.ConstantSparsity(0.75, 0, frequency=1))
    assert isinstance(pruned, keras.Sequential)
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PruneWrapper", "DepthwiseConv2D", "Flatten", "PruneWrapper"
    ]
    x, y = data()
    compile_model(pruned).fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[sk.UpdatePruningStep()])
    stripped = sk.strip_pruning(pruned)
    assert isinstance(stripped, keras.Sequential)
    assert not any(isinstance(layer, PruneWrapper) for layer in stripped.layers)
    assert sparsity(stripped.layers[0].get_weights()[0]) == pytest.approx(0.75, abs=0.01)
    assert sparsity(stripped.layers[3].get_weights()[0]) == pytest.approx(0.75, abs=0.01)
    depthwise = stripped.layers[1].get_weights()[0]
    assert sparsity(depthwise) == 0.0  # TFMOT never prunes DepthwiseConv2D
    assert depthwise.shape == depthwise_before.shape
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)


def test_functional_stays_functional_and_layer_list_clone_function():
    pruned = sk.prune_low_magnitude(functional_cnn())
    assert not isinstance(pruned, keras.Sequential)
    assert isinstance(pruned.get_layer("prune_dense"), PruneWrapper)

    wrapped = sk.prune_low_magnitude([keras.layers.Dense(4), keras.layers.InputLayer(shape=(3,))])
    assert isinstance(wrapped[0], PruneWrapper) and isinstance(wrapped[1], keras.layers.InputLayer)

    def only_dense(layer):  # the comprehensive guide's clone_function pattern
        return sk.prune_low_magnitude(layer) if isinstance(layer, keras.layers.Dense) else layer

    cloned = keras.models.clone_model(small_cnn(), clone_function=only_dense)
    assert isinstance(cloned, keras.Sequential)
    assert [isinstance(layer, PruneWrapper) for layer in cloned.layers] == [False, False, False, True]


def test_m_by_n_gives_two_zeros_in_every_four_input_weights():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="dense")])
    pruned = sk.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    x = np.random.default_rng(1).normal(size=(32, 16)).astype("float32")
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.zeros((32, 8)), epochs=1, verbose=0, callbacks=[sk.UpdatePruningStep()])
    kernel = sk.strip_pruning(pruned).layers[0].get_weights()[0]  # (in=16, out=8)
    groups = kernel.T.reshape(8, 4, 4)  # TFLite [out, in]: groups of 4 consecutive inputs
    assert ((groups == 0).sum(axis=-1) >= 2).all()


def test_errors_name_the_fault():
    with pytest.raises(ValueError, match="block_pooling_type='MAX'"):
        sk.prune_low_magnitude(small_cnn(), block_pooling_type="MAX")
    with pytest.raises(ValueError, match="can only take"):
        sk.prune_low_magnitude("model")
    with pytest.raises(ValueError, match="unexpected keyword"):
        sk.prune_low_magnitude(small_cnn(), schedule=sk.ConstantSparsity(0.5, 0))
    custom = keras.Sequential([keras.Input((4,)), UnknownWeighted(name="mystery"), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedLayerError, match="'mystery'") as caught:
        sk.prune_low_magnitude(custom)
    assert isinstance(caught.value, (KoptError, ValueError))


def test_prunable_layer_opts_in():
    class Scaled(UnknownWeighted, sk.PrunableLayer):
        def get_prunable_weights(self):
            return [self.scale]

    model = keras.Sequential([keras.Input((8,)), Scaled(name="scaled"), keras.layers.Dense(2)])
    pruned = sk.prune_low_magnitude(model, pruning_schedule=sk.ConstantSparsity(0.5, 0, frequency=1))
    assert isinstance(pruned.layers[0], PruneWrapper)


def test_keras_round_trip_without_scope(tmp_path):
    pruned = sk.prune_low_magnitude(small_cnn(), pruning_schedule=sk.ConstantSparsity(0.5, 0, frequency=1))
    x, y = data(32)
    compile_model(pruned).fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras.Sequential)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    with sk.prune_scope():  # still accepted, for TFMOT code
        keras.saving.load_model(path)


def test_pruning_summaries_write_sparsity(tmp_path):
    pruned = sk.prune_low_magnitude(small_cnn(), pruning_schedule=sk.ConstantSparsity(0.5, 0, frequency=1))
    x, y = data(32)
    callbacks = [sk.UpdatePruningStep(), sk.PruningSummaries(log_dir=str(tmp_path))]
    compile_model(pruned).fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
    assert any(files for _, _, files in os.walk(tmp_path))


def xnnpack_model(middle: keras.layers.Layer | None = None) -> keras.Model:
    inputs = keras.Input((17, 17, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", name="stem")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 1, name="expand")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    if middle is not None:
        x = middle(x)
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def test_prune_for_latency_on_xnnpack_prunes_only_1x1_convs():
    with pytest.warns(CoverageWarning, match="excluded by layer_filter"):  # the policy leaves 3 kernels dense: said
        pruned = sk.prune_low_magnitude(xnnpack_model(), pruning_policy=sk.PruneForLatencyOnXNNPack())
    wrapped = sorted(layer.layer.name for layer in pruned.layers if isinstance(layer, PruneWrapper))
    assert wrapped == ["expand", "project"]


def test_prune_for_latency_on_xnnpack_checks_the_model():
    policy = sk.PruneForLatencyOnXNNPack()
    with pytest.raises(ValueError, match="MaxPooling2D"):
        sk.prune_low_magnitude(xnnpack_model(keras.layers.MaxPooling2D(1)), pruning_policy=policy)
    with pytest.raises(ValueError, match="ZeroPadding2D"):
        sk.prune_low_magnitude(small_cnn(), pruning_policy=policy)
    inputs = keras.Input((17, 17, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    no_pool = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
    with pytest.raises(ValueError, match="GlobalAveragePooling2D"):
        sk.prune_low_magnitude(no_pool, pruning_policy=policy)


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: ~25 s on a shared 2-core machine
def test_kopt_api_is_not_imported_eagerly():
    import subprocess
    import sys

    code = "import sys, kopt; print('kopt.tfmot' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(kopt.__file__))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_wrapped_first_layer_with_input_shape_builds_the_sequential():
    model = keras.Sequential([sk.prune_low_magnitude(keras.layers.Dense(20, input_shape=(20,))), keras.layers.Flatten()])
    assert model.built and isinstance(model.layers[0], PruneWrapper)


def test_custom_training_loop_of_the_comprehensive_guide(tmp_path):
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the guide's loop uses tf.GradientTape")
    model = sk.prune_low_magnitude(small_cnn(), pruning_schedule=sk.ConstantSparsity(0.5, 0, frequency=1))
    x, y = data(16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam()
    step_callback, log_callback = sk.UpdatePruningStep(), sk.PruningSummaries(log_dir=str(tmp_path))
    step_callback.set_model(model)
    log_callback.set_model(model)
    step_callback.on_train_begin()
    for _ in range(2):
        log_callback.on_epoch_begin(epoch=-1)
        step_callback.on_train_batch_begin(batch=-1)
        with tf.GradientTape() as tape:
            loss_value = loss(y, model(x, training=True))
        grads = tape.gradient(loss_value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        step_callback.on_epoch_end(batch=-1)
    kernel = sk.strip_pruning(model).get_layer("dense").get_weights()[0]
    assert sparsity(kernel) == pytest.approx(0.5, abs=0.01)
    assert any(files for _, _, files in os.walk(tmp_path))


def test_a_custom_pruning_policy_is_checked_then_picks_layers():
    class DenseOnly(sk.PruningPolicy):
        checked = False

        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

        def ensure_model_supports_pruning(self, model):
            DenseOnly.checked = True

    with pytest.warns(CoverageWarning, match=r"(?s)'conv' Conv2D.*excluded by layer_filter"):
        pruned = sk.prune_low_magnitude(small_cnn(), pruning_policy=DenseOnly())
    assert DenseOnly.checked
    assert [isinstance(layer, PruneWrapper) for layer in pruned.layers] == [False, False, False, True]
