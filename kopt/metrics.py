"""The measures every report, search and analysis shares: top-1 accuracy and compressed sizes.

Bottom layer: imports nothing from kopt but its errors, so the report, the export runtime and
the search all use the same definitions (and none needs the other to compute one).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Any, Sequence

import numpy as np

from kopt.core.errors import InvalidArgumentError

_ZLIB_LEVEL = 6  # zipfile's default DEFLATE level, as zipped_size uses


def top1_targets(y: Any, predictions: np.ndarray) -> np.ndarray:
    """Labels as the class indices the predictions are compared with, checked against the predictions.

    Integer labels (``(n,)`` or ``(n, 1)``; per position for dense outputs), one-hot labels (the
    predictions' shape: argmax), or for a single-unit (sigmoid) output 0/1 labels. Raises
    :class:`InvalidArgumentError` when their number or shape does not match (never broadcast).
    """
    y, predictions = np.asarray(y), np.asarray(predictions)
    if y.ndim == 0 or len(y) != len(predictions):
        count = "a scalar" if y.ndim == 0 else f"{len(y)} labels"
        raise InvalidArgumentError(
            f"Accuracy needs one label per sample: got {count} for {len(predictions)} predictions. "
            "Pass the labels of exactly the samples given as inputs."
        )
    if _is_binary(predictions):
        flat = y.reshape(len(y), -1)
        if flat.shape[1] != 1:
            raise InvalidArgumentError(
                f"Labels of shape {y.shape} do not match a single-unit (sigmoid) output of shape {predictions.shape}."
            )
        return (flat > 0.5).astype(np.int64)
    class_shape = predictions.shape[:-1]
    if y.shape == predictions.shape:  # one-hot
        return np.argmax(y, axis=-1)
    if y.shape == class_shape + (1,):
        y = y.reshape(class_shape)
    if y.shape != class_shape:
        raise InvalidArgumentError(
            f"Labels of shape {y.shape} do not match predictions of shape {predictions.shape}: give integer class "
            f"labels of shape {class_shape} or one-hot labels of shape {predictions.shape}."
        )
    if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
        raise InvalidArgumentError("Integer class labels were expected, got non-integral float labels.")
    return y.astype(np.int64)


def top1_predictions(predictions: np.ndarray) -> np.ndarray:
    """The predicted class of each sample (position): argmax, or score above 0.5 for a sigmoid output."""
    predictions = np.asarray(predictions)
    if _is_binary(predictions):
        return (predictions.reshape(len(predictions), -1) > 0.5).astype(np.int64)
    return np.argmax(predictions, axis=-1)


def top1_accuracy(predictions: np.ndarray, y: Any) -> float:
    """Share of samples (positions, for dense outputs) whose predicted class is the label."""
    predictions = np.asarray(predictions)
    if len(predictions) == 0:
        raise InvalidArgumentError("Accuracy of no samples is undefined: the data is empty.")
    targets = top1_targets(y, predictions)
    return float(np.mean(top1_predictions(predictions) == targets))


def _is_binary(predictions: np.ndarray) -> bool:
    return predictions.ndim == 1 or predictions.shape[-1] == 1


def zipped_bytes(arrays: Sequence[np.ndarray]) -> int:
    """DEFLATE-compressed size of the arrays' raw bytes, concatenated."""
    compressor = zlib.compressobj(_ZLIB_LEVEL)
    size = 0
    for array in arrays:
        size += len(compressor.compress(np.ascontiguousarray(array).tobytes()))
    return size + len(compressor.flush())


def zipped_size(data: bytes) -> int:
    """Bytes of a zip archive holding ``data`` compressed with DEFLATE (the TFMOT guides' measure)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.tflite", data)
    return buffer.tell()


__all__ = ["top1_accuracy", "top1_predictions", "top1_targets", "zipped_bytes", "zipped_size"]
