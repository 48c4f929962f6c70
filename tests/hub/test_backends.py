"""Prune, cluster and QAT train the opened keras-hub backbones under every Keras backend."""

import warnings

import keras
import numpy as np
import pytest

import kopt
from kopt.sparsity import ConstantSparsity, UpdatePruningStep
from tests.hub.hub_models import classifier, kernels, mobilenet_v3, resnet, vit

pytestmark = pytest.mark.backends


def small_resnet():
    return resnet(image_shape=(16, 16, 3))


def small_mobilenet_v3():
    return mobilenet_v3(image_shape=(32, 32, 3))


def small_vit():
    return vit(image_shape=(16, 16, 3), hidden_dim=16)


def cluster_per_tensor(model):
    with warnings.catch_warnings():  # per tensor on purpose, as every backend must train it; BN advice expected
        warnings.filterwarnings("ignore", "Clustering: .* feed a BatchNormalization")
        return kopt.clustering.cluster_weights(model, 8)


@pytest.mark.parametrize(
    "build",
    [small_resnet, pytest.param(small_mobilenet_v3, marks=pytest.mark.slow), small_vit],  # MobileNet: ~2 min
    ids=["resnet", "mobilenet_v3", "vit"],
)
def test_prune_cluster_and_qat_train_and_change_the_kernels(build):
    keras.utils.set_random_seed(0)
    model = classifier(build(), classes=4)
    x = np.random.default_rng(0).uniform(0, 1, (8, *model.inputs[0].shape[1:])).astype("float32")
    y = np.arange(8) % 4
    wrapped = {
        "prune": kopt.sparsity.prune_low_magnitude(model, ConstantSparsity(0.5, begin_step=0, frequency=1)),
        "cluster": cluster_per_tensor(model),
        "qat": kopt.quantization.quantize_model(model),
    }
    for technique, trained in wrapped.items():
        before = [keras.ops.convert_to_numpy(v).copy() for v in trained.trainable_weights]
        trained.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        callbacks = [UpdatePruningStep()] if technique == "prune" else []
        history = trained.fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=callbacks)
        assert np.isfinite(history.history["loss"]).all(), technique
        after = [keras.ops.convert_to_numpy(v) for v in trained.trainable_weights]
        changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed >= 0.5 * len(before), f"{technique}: {changed}/{len(before)} weights trained"
    stripped = kopt.strip(wrapped["prune"])
    sparsity = sum(int(np.sum(k == 0)) for k in kernels(stripped)) / sum(k.size for k in kernels(stripped))
    assert sparsity == pytest.approx(0.5, abs=0.02)
