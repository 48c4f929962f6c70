"""kopt.metrics: one top-1 accuracy (integer, one-hot, sigmoid, per-position labels; lengths checked), zipped sizes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from kopt.core.errors import InvalidArgumentError
from kopt.metrics import top1_accuracy, zipped_bytes, zipped_size


def _reference(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Plain NumPy: argmax of scores against integer labels, sample by sample."""
    return sum(int(np.argmax(p) == t) for p, t in zip(predictions, labels)) / len(labels)


@pytest.mark.backends
def test_integer_and_one_hot_labels_agree_with_a_plain_reference():
    rng = np.random.default_rng(0)
    predictions = rng.random((50, 7)).astype("float32")
    labels = rng.integers(0, 7, 50)
    expected = _reference(predictions, labels)
    assert top1_accuracy(predictions, labels) == pytest.approx(expected)
    assert top1_accuracy(predictions, labels[:, None]) == pytest.approx(expected)
    assert top1_accuracy(predictions, np.eye(7)[labels]) == pytest.approx(expected)


@pytest.mark.backends
def test_sigmoid_outputs_are_thresholded_at_one_half():
    scores = np.array([[0.9], [0.2], [0.6], [0.4]], "float32")
    assert top1_accuracy(scores, np.array([1, 0, 0, 0])) == 0.75
    assert top1_accuracy(scores[:, 0], np.array([1, 1, 1, 0])) == 0.75


@pytest.mark.backends
def test_dense_outputs_are_scored_per_position():
    rng = np.random.default_rng(1)
    predictions = rng.random((4, 3, 3, 5))
    labels = rng.integers(0, 5, (4, 3, 3))
    expected = np.mean(predictions.argmax(-1) == labels)
    assert top1_accuracy(predictions, labels) == pytest.approx(expected)


@pytest.mark.backends
@pytest.mark.parametrize("labels", [np.zeros(1, int), np.zeros(50, int), np.int64(3)])
def test_labels_are_never_broadcast(labels):
    with pytest.raises(InvalidArgumentError, match="one label per sample"):
        top1_accuracy(np.zeros((100, 10)), labels)


@pytest.mark.backends
def test_mismatched_label_shapes_and_empty_data_are_refused():
    with pytest.raises(InvalidArgumentError, match="do not match predictions"):
        top1_accuracy(np.zeros((4, 10)), np.zeros((4, 3)))
    with pytest.raises(InvalidArgumentError, match="empty"):
        top1_accuracy(np.zeros((0, 10)), np.zeros(0))


@pytest.mark.backends
def test_zipped_sizes_match_the_zip_and_zlib_modules():
    data = np.repeat(np.arange(10, dtype=np.int8), 1000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.tflite", data.tobytes())
    assert zipped_size(data.tobytes()) == len(buffer.getvalue())
    import zlib

    assert zipped_bytes([data[:5000], data[5000:]]) == len(zlib.compress(data.tobytes(), 6))


def test_litert_evaluate_and_compression_refuse_labels_for_other_samples():
    """The probe of issue 23: 100 inputs with 1 label gave a number (0.44) instead of an error."""
    import keras
    from export_testing import lower, uniform

    from kopt.export import evaluate
    from kopt.report.summary import compression

    tflite = lower(lambda x: keras.layers.Dense(4, activation="softmax")(x), (6,))
    x = uniform((100, 6), seed=3)
    with pytest.raises(InvalidArgumentError, match="1 labels for 100 input samples"):
        evaluate(tflite, x, np.zeros(1, int))
    with pytest.raises(InvalidArgumentError, match="50 labels for 100 input samples"):
        evaluate(tflite, x, np.zeros(50, int))
    with pytest.raises(InvalidArgumentError, match="1 labels for 100 input samples"):
        compression(tflite, data=(x, np.zeros(1, int)))
    assert 0.0 <= evaluate(tflite, x, np.zeros(100, int)) <= 1.0
