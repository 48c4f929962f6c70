"""Pruned models through kopt.export: the 2:4 pattern in the flatbuffer, and the zipped size."""

import keras
import numpy as np
import pytest

import kopt
from kopt.export import to_tflite, weight_tensors, zipped_size
from kopt.sparsity import ConstantSparsity, prune_low_magnitude


def cnn():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def conv_and_fc_weights(tflite):
    return [w for w in weight_tensors(tflite) if w.op in ("CONV_2D", "FULLY_CONNECTED") and w.input_index == 1]


def test_two_four_pattern_holds_in_exported_int8_weights():
    x = np.random.rand(64, 8, 8, 4).astype("float32")
    pruned = prune_low_magnitude(cnn(), schedule=ConstantSparsity(0.5, 0), m_by_n=(2, 4))
    pruned.compile("adam", "mse")
    pruned.fit(x, np.random.rand(64, 4), batch_size=16, verbose=0)
    tflite = to_tflite(kopt.strip(pruned), representative_data=x)
    weights = conv_and_fc_weights(tflite)
    assert [w.op for w in weights] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    for w in weights:
        groups = (w.values != 0).reshape(-1, 4)  # TFLite layout: input channels innermost
        assert (groups.sum(axis=1) <= 2).all(), w.name
        assert w.follows_n_m(2, 4)
        assert w.sparsity == pytest.approx(0.5)

    dense = to_tflite(cnn(), representative_data=x)  # the check can fail: a dense model breaks it
    assert not any(w.follows_n_m(2, 4) for w in conv_and_fc_weights(dense))


@pytest.mark.slow
def test_mobilenet_v2_half_pruned_zips_to_at_most_0_6_of_dense():
    from benchmarks.bench_pruning import float_tflite, pruned_and_dense_mobilenet

    stripped, dense, _ = pruned_and_dense_mobilenet(sparsity=0.5)
    ratio = zipped_size(float_tflite(stripped)) / zipped_size(float_tflite(dense))
    assert ratio <= 0.6, ratio
