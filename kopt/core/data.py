"""Data checks run before any work: a bad array fails in a second with a message naming it, not after training.

Covers what otherwise surfaces late and blamed on the wrong thing: empty data, inputs whose
count, sample shape or dtype does not fit the model, NaN/Inf in inputs or sample weights
(training then diverges and the weights look corrupted), labels of another length, labels
outside the model's classes, and one-hot labels under a sparse loss (or the reverse).

Array data (``(x, y[, sample_weight])``) is checked whole; a ``tf.data.Dataset``,
``keras.utils.PyDataset`` or other iterable is checked on its first element (one batch), which
catches structure, dtype, label and emptiness problems without a pass over the data.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kopt.core.errors import InvalidArgumentError


def check_inputs(model: keras.Model, x: Any, *, argument: str) -> None:
    """``x`` fits ``model``'s inputs: one array per input, numeric, non-empty, finite, sample shapes that fit."""
    arrays = _input_arrays(model, x, argument)
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise InvalidArgumentError(f"{argument}: the model's inputs have different numbers of samples {sorted(lengths)}.")
    by_name = isinstance(x, dict)  # flattened in key order, not the model's input order: shapes are Keras' to check
    for index, (array, spec) in enumerate(zip(arrays, model.inputs)):
        where = argument if len(arrays) == 1 else f"{argument} (input {index})"
        _check_numeric(array, where)
        if len(array) == 0:
            raise InvalidArgumentError(f"{where} is empty: give at least one sample.")
        if not by_name:
            _check_sample_shape(array, tuple(spec.shape), where)
        _check_finite(array, where)


def check_labels(model: keras.Model, y: Any, num_samples: int, *, argument: str, loss: Any = None) -> None:
    """``y`` has one label per sample, finite, within the model's classes and in the form the loss expects.

    A model with several outputs takes one label array per output (a list/tuple in output order or a dict
    keyed by output name), each checked against its output and its loss (one loss, or one per output).
    """
    outputs = list(model.outputs)
    if len(outputs) == 1:
        labels = keras.tree.flatten(y)[0] if isinstance(y, (list, tuple, dict)) and len(keras.tree.flatten(y)) == 1 else y
        _check_output_labels(outputs[0], labels, num_samples, argument, loss)
        return
    names = list(getattr(model, "output_names", None) or [getattr(o, "name", f"output_{i}") for i, o in enumerate(outputs)])
    if isinstance(y, dict):
        missing = [n for n in names if n not in y]
        if missing:
            raise InvalidArgumentError(
                f"{argument}: labels for output(s) {missing} are missing; the model's outputs are {names}."
            )
        per_output = [y[n] for n in names]
    elif isinstance(y, (list, tuple)) and len(y) == len(outputs):
        per_output = list(y)
    else:
        given = f"{len(y)} arrays" if isinstance(y, (list, tuple)) else "one array"
        raise InvalidArgumentError(
            f"{argument}: the model {model.name!r} has {len(outputs)} outputs {names}; give one label array per output "
            f"(a tuple in output order or a dict keyed by output name), got {given}."
        )
    losses = _per_output(loss, names)
    for name, output, labels, output_loss in zip(names, outputs, per_output, losses):
        _check_output_labels(output, labels, num_samples, f"{argument} (output {name!r})", output_loss)


def _per_output(loss: Any, names: list[str]) -> list[Any]:
    if isinstance(loss, dict):
        return [loss.get(n) for n in names]
    if isinstance(loss, (list, tuple)) and len(loss) == len(names):
        return list(loss)
    return [None if isinstance(loss, (list, tuple)) else loss] * len(names)


def _check_output_labels(output: Any, y: Any, num_samples: int, argument: str, loss: Any) -> None:
    labels = _as_numpy(y)
    _check_numeric(labels, argument)
    if labels.ndim == 0 or len(labels) != num_samples:
        count = "a scalar" if labels.ndim == 0 else f"{len(labels)} labels"
        raise InvalidArgumentError(f"{argument}: {count} for {num_samples} input samples; give one label per sample.")
    _check_finite(labels, argument)
    classes = output.shape[-1]
    if not isinstance(classes, int) or classes < 2:
        return  # regression or a sigmoid output: any finite value
    sparse = _loss_is_sparse(loss)
    output_shape = tuple(output.shape[1:])
    one_hot = labels.ndim == len(output_shape) + 1 and all(
        o is None or o == n for n, o in zip(labels.shape[1:], output_shape)
    )
    if sparse is True and one_hot:
        raise InvalidArgumentError(
            f"{argument}: labels of shape {labels.shape} look one-hot, but the loss {_loss_name(loss)!r} expects "
            "integer class indices. Pass labels.argmax(-1), or use the non-sparse loss (categorical_crossentropy)."
        )
    if sparse is False and not one_hot:
        raise InvalidArgumentError(
            f"{argument}: labels of shape {labels.shape} are class indices, but the loss {_loss_name(loss)!r} expects "
            f"one-hot labels of shape (n, {classes}). Pass keras.utils.to_categorical(labels, {classes}), or use "
            "sparse_categorical_crossentropy."
        )
    if one_hot:
        return
    flat = labels.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= classes) | (np.mod(flat, 1) != 0))
    if bad.size:
        first = int(bad[0])
        raise InvalidArgumentError(
            f"{argument}: label {flat[first].item()!r} at index {first} is not a class of the model's {classes}-way output "
            f"(integers 0..{classes - 1}); {bad.size} label(s) out of range."
        )


def check_data(model: keras.Model, data: Any, *, argument: str, loss: Any = None, labels: bool = True) -> None:
    """Array data checked whole (inputs, labels, sample weights); datasets on their first element."""
    if data is None:
        return
    if isinstance(data, tuple):
        if len(data) not in (2, 3):
            raise InvalidArgumentError(f"{argument} must be (x, y) or (x, y, sample_weight), got {len(data)} items.")
        x, y = data[0], data[1]
        check_inputs(model, x, argument=f"{argument} x")
        samples = len(_input_arrays(model, x, argument)[0])
        if labels:
            check_labels(model, y, samples, argument=f"{argument} y", loss=loss)
        if len(data) == 3 and data[2] is not None:
            weights = np.asarray(data[2])
            _check_numeric(weights, f"{argument} sample_weight")
            if len(weights) != samples:
                raise InvalidArgumentError(
                    f"{argument} sample_weight: {len(weights)} weights for {samples} samples; give one per sample."
                )
            _check_finite(weights, f"{argument} sample_weight")
        return
    element = _first_element(data, argument)
    if element is _ONE_SHOT:
        return  # a generator: peeking would consume a batch the training needs
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        parts = [keras.tree.map_structure(_as_numpy, part) for part in element]
        if _is_one_sample(model, parts[0]):  # an unbatched dataset (the sensitivity analysis takes those)
            parts = [keras.tree.map_structure(lambda a: a[None], part) for part in parts]
        check_data(model, tuple(parts), argument=f"{argument} (first batch)", loss=loss, labels=labels)
    elif labels:
        raise InvalidArgumentError(
            f"{argument}: each element must be (x, y) or (x, y, sample_weight); the first is a "
            f"{type(element).__name__}."
        )


def check_numeric_model(model: keras.Model, caller: str) -> None:
    """Every model input is numeric: string inputs (text preprocessing inside the model) can be neither
    quantized nor lowered to int8 TFLite, so they are refused before any work."""
    from kopt.core.errors import UnsupportedModelError

    for tensor in getattr(model, "inputs", None) or []:
        dtype = str(getattr(tensor, "dtype", ""))
        if "string" in dtype or dtype in ("str", "object"):
            raise UnsupportedModelError(
                f"{caller}: input {getattr(tensor, 'name', '?')!r} of model {model.name!r} has dtype {dtype}; kopt "
                "optimizes and lowers numeric models only. Move the text preprocessing (TextVectorization, "
                "StringLookup) out of the model and give kopt the model that takes its integer ids."
            )


def check_arrays(x: Any, y: Any = None, *, argument: str) -> int:
    """Model-free check (a ``.tflite`` has no Keras model): numeric, non-empty, finite inputs of one length, and
    as many finite labels. Returns the number of samples."""
    leaves = keras.tree.flatten(x) if isinstance(x, (list, tuple, dict)) else [x]
    if not leaves:
        raise InvalidArgumentError(f"{argument} x holds no array.")
    arrays = [_as_numpy(leaf) for leaf in leaves]
    for index, array in enumerate(arrays):
        where = f"{argument} x" if len(arrays) == 1 else f"{argument} x (input {index})"
        if array.ndim == 0:
            raise InvalidArgumentError(f"{where} is a scalar; give an array with one row per sample.")
        _check_numeric(array, where)
        if len(array) == 0:
            raise InvalidArgumentError(f"{where} is empty: give at least one sample.")
        _check_finite(array, where)
    lengths = sorted({len(a) for a in arrays})
    if len(lengths) > 1:
        raise InvalidArgumentError(f"{argument} x: the inputs have different numbers of samples {lengths}.")
    if y is not None:
        labels = _as_numpy(y)
        _check_numeric(labels, f"{argument} y")
        if labels.ndim == 0 or len(labels) != lengths[0]:
            count = "a scalar" if labels.ndim == 0 else f"{len(labels)} labels"
            raise InvalidArgumentError(
                f"{argument} y: {count} for {lengths[0]} input samples; give one label per sample."
            )
        _check_finite(labels, f"{argument} y")
    return lengths[0]


# ------------------------------------------------------------------ helpers
def _is_one_sample(model: keras.Model, x: Any) -> bool:
    leaves = keras.tree.flatten(x)
    try:
        return bool(leaves) and np.ndim(leaves[0]) == len(model.inputs[0].shape) - 1
    except (AttributeError, IndexError, TypeError):
        return False


def _input_arrays(model: keras.Model, x: Any, argument: str) -> list[np.ndarray]:
    leaves = keras.tree.flatten(x) if isinstance(x, (list, tuple, dict)) else [x]
    if len(leaves) != len(model.inputs):
        raise InvalidArgumentError(
            f"{argument}: the model {model.name!r} has {len(model.inputs)} input(s), the data gives {len(leaves)} array(s)."
        )
    arrays = []
    for leaf in leaves:
        array = _as_numpy(leaf)
        if array.ndim == 0:
            raise InvalidArgumentError(f"{argument} is a scalar; give an array with one row per sample.")
        arrays.append(array)
    return arrays


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - strings and other objects keras cannot convert
        return np.asarray(value)


def _check_numeric(array: np.ndarray, where: str) -> None:
    if array.dtype.kind not in "biuf" and not _is_ml_dtype(array):
        raise InvalidArgumentError(
            f"{where} has dtype {array.dtype} ({'text' if array.dtype.kind in 'USO' else 'not numeric'}); kopt's models "
            "take numbers: encode the data as numbers first."
        )


def _is_ml_dtype(array: np.ndarray) -> bool:
    return array.dtype.kind == "V" and array.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def _check_finite(array: np.ndarray, where: str) -> None:
    if array.dtype.kind != "f" and not _is_ml_dtype(array):
        return
    finite = np.isfinite(array.astype(np.float32) if _is_ml_dtype(array) else array)
    if not finite.all():
        flat = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1)) if array.ndim else np.array([0])
        first = int(flat[0])
        raise InvalidArgumentError(
            f"{where} holds NaN or Inf (first in sample {first}; {int((~finite).sum())} value(s) in all). Clean or "
            "drop those samples: training on them drives the weights to NaN."
        )


def _check_sample_shape(array: np.ndarray, spec: tuple, where: str) -> None:
    sample, expected = array.shape[1:], spec[1:]
    fits = len(sample) == len(expected) and all(e is None or e == s for s, e in zip(sample, expected))
    if not fits:
        raise InvalidArgumentError(
            f"{where}: samples of shape {tuple(sample)} do not fit the model's input shape {tuple(expected)} "
            "(None: any size)."
        )


def _first_element(data: Any, argument: str) -> Any:
    if isinstance(data, keras.utils.PyDataset):
        try:
            if len(data) == 0:
                raise InvalidArgumentError(f"{argument} is empty: the PyDataset has no batches.")
        except TypeError:
            pass
        return data[0]
    if hasattr(data, "element_spec") and hasattr(data, "take"):
        for element in data.take(1).as_numpy_iterator():
            return element
        raise InvalidArgumentError(f"{argument} is empty: the tf.data.Dataset yields no element.")
    if isinstance(data, (np.ndarray, list, dict)) or not hasattr(data, "__iter__"):
        raise InvalidArgumentError(
            f"{argument} must be a tuple (x, y), a tf.data.Dataset or a keras.utils.PyDataset, got {type(data).__name__}."
        )
    if iter(data) is data:
        return _ONE_SHOT
    for element in data:
        return element
    raise InvalidArgumentError(f"{argument} is empty: it yields no element.")


_ONE_SHOT = object()


def _loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def _loss_is_sparse(loss: Any) -> bool | None:
    """True for a sparse categorical loss, False for a one-hot categorical one, None when it says neither."""
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return None
    name = _loss_name(loss).lower()
    if "sparse_categorical" in name or name.startswith("sparse"):
        return True
    if "categorical" in name:
        return False
    return None


__all__ = ["check_arrays", "check_numeric_model", "check_data", "check_inputs", "check_labels"]
