"""analyze + rebuild reproduce real architectures exactly (keras.applications, weights=None)."""

import keras
import numpy as np
import pytest

from kopt.graph import analyze

A = keras.applications
ARCHITECTURES = {
    "MobileNet": lambda: A.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None),
    "MobileNetV2": lambda: A.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(input_shape=(96, 96, 3), weights=None),
    "ResNet50": lambda: A.ResNet50(input_shape=(64, 64, 3), weights=None),
    "DenseNet121": lambda: A.DenseNet121(input_shape=(64, 64, 3), weights=None),
    "NASNetMobile": lambda: A.NASNetMobile(input_shape=(96, 96, 3), weights=None),
    "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=(64, 64, 3), weights=None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_rebuild_and_clone_equal_the_original(name):
    model = ARCHITECTURES[name]()
    x = np.random.default_rng(0).random((2, *model.input_shape[1:]), dtype="float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    graph = analyze(model)
    assert len(graph.layers()) == len([l for l in model.layers if not isinstance(l, keras.layers.InputLayer)])
    for clone in (False, True):
        rebuilt = graph.rebuild(clone=clone)
        got = keras.ops.convert_to_numpy(rebuilt(x, training=False))
        assert np.abs(got - expected).max() <= 1e-5, (name, clone)


@pytest.mark.backends
def test_mobilenet_v2_rebuild_is_exact_on_every_backend():
    model = ARCHITECTURES["MobileNetV2"]()
    x = np.random.default_rng(1).random((1, 96, 96, 3), dtype="float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    rebuilt = analyze(model).rebuild(clone=True)
    assert np.abs(keras.ops.convert_to_numpy(rebuilt(x, training=False)) - expected).max() <= 1e-5
