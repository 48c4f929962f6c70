"""Turn whatever the user gives as representative data into a bounded set of batch-1 samples.

Post-training quantization only needs a few hundred samples to estimate activation ranges, and
the converter consumes one batch-1 sample per step (the Edge TPU shape). So arrays, generators,
``tf.data.Dataset`` objects and Keras ``PyDataset``-like iterables are all read up to
``limit`` samples (default :data:`DEFAULT_CALIBRATION_SAMPLES`) and stacked, one array per model
input. Elements may be ``x``, ``(x, y)``, ``(x, y, sample_weight)``, TF's ``[x]`` convention, or
a dict keyed by input name; each ``x`` may be a single sample or a batch. Whole data sets given
the way ``model.fit`` takes them, a tuple ``(x, y)`` or ``(x, y, sample_weight)`` of arrays, are
read as ``x`` (a *list* of equally shaped arrays stays a list of batches).

Every sample is checked against the model's input before it is used: shape, a numeric dtype,
finite values, and integral values within range for integer inputs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from kopt.core.errors import InvalidArgumentError, InvalidArgumentTypeError

#: Samples used for calibration when the caller does not say (TF's docs suggest ~100-500).
DEFAULT_CALIBRATION_SAMPLES = 100


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, per-sample shape (None entries: unknown; None: unknown rank) and dtype."""

    key: str
    shape: tuple[int | None, ...] | None
    dtype: str


def materialize(data: Any, specs: list[InputSpec], limit: int = DEFAULT_CALIBRATION_SAMPLES) -> list[np.ndarray]:
    """Up to ``limit`` samples of ``data``: one array ``(N, *sample_shape)`` per input in ``specs``."""
    if limit < 1:
        raise InvalidArgumentError(f"calibration_samples must be >= 1, got {limit}")
    if _is_array_like(data) or isinstance(data, Mapping):
        arrays = _split(data, specs)
        return [_check(a[:limit], spec) for a, spec in zip(arrays, specs)]
    if isinstance(data, (list, tuple)) and len(specs) > 1 and len(data) == len(specs) and all(
        _is_array_like(a) and (s.shape is None or np.ndim(a) == len(s.shape) + 1) for a, s in zip(data, specs)
    ):
        return [_check(np.asarray(a)[:limit], spec) for a, spec in zip(data, specs)]
    features = _fit_style_features(data, specs)
    if features is not None:
        arrays = _split(features, specs)
        return [_check(a[:limit], spec) for a, spec in zip(arrays, specs)]

    samples: list[list[np.ndarray]] = [[] for _ in specs]
    taken = 0
    for element in itertools.islice(_iterate(data), 100 * limit):
        arrays = _split(_features(element, specs), specs)
        for array, spec in zip(arrays, specs):
            _check_shape(array, spec)
        for k, array in enumerate(arrays):
            samples[k].extend(array[: limit - taken])
        taken = min(limit, taken + len(arrays[0]))
        if taken >= limit:
            break
    if taken == 0:
        raise InvalidArgumentError("representative_data yielded no samples")
    return [_check(np.stack(s[:taken]), spec) for s, spec in zip(samples, specs)]


def batches(arrays: list[np.ndarray], keys: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The converter's representative dataset: one dict of batch-1 arrays per sample."""
    for i in range(len(arrays[0])):
        yield {key: array[i : i + 1] for key, array in zip(keys, arrays)}


def _is_array_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")
    )


def _whole_inputs(x: Any, specs: list[InputSpec]) -> list[Any] | None:
    """The per-input arrays of ``x`` when ``x`` holds *all* samples of every input (a leading
    sample axis on each), else None."""
    if len(specs) == 1:
        parts = [x]
    elif isinstance(x, Mapping):
        parts = [x.get(s.key) for s in specs]
    elif isinstance(x, (list, tuple)) and len(x) == len(specs):
        parts = list(x)
    else:
        return None
    for part, spec in zip(parts, specs):
        if not _is_array_like(part) or np.ndim(part) < 1:
            return None
        if spec.shape is not None and np.ndim(part) != len(spec.shape) + 1:
            return None
    return parts


def _fit_style_features(data: Any, specs: list[InputSpec]) -> Any:
    """``x`` of a whole data set given as ``(x, y)`` / ``(x, y, sample_weight)``, or None.

    ``y`` and ``sample_weight`` may be arrays, lists/dicts of arrays (several outputs) or None;
    they must have as many samples as ``x``. For a single-input model, a list whose arrays
    all have ``x``'s shape (or any sequence of such arrays when the input shape is unknown)
    is ambiguous and keeps its old meaning: a sequence of batches.
    """
    if not isinstance(data, (list, tuple)) or len(data) not in (2, 3):
        return None
    x, rest = data[0], data[1:]
    parts = _whole_inputs(x, specs)
    if parts is None:
        return None
    count = len(parts[0])
    if any(len(part) != count for part in parts):
        return None
    for item in rest:
        if item is None:
            continue
        if isinstance(item, Mapping):
            members = list(item.values())
        else:
            members = list(item) if isinstance(item, (list, tuple)) else [item]
        if not members or not all(_is_array_like(m) and np.ndim(m) >= 1 and len(m) == count for m in members):
            return None
    if len(specs) == 1:
        same_shape = all(_is_array_like(item) and np.shape(item) == np.shape(x) for item in rest)
        if same_shape and (isinstance(data, list) or specs[0].shape is None):
            return None
    return x


def _iterate(data: Any) -> Iterator[Any]:
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        return iter(data.as_numpy_iterator())
    if callable(data) and not hasattr(data, "__iter__"):  # TF-style representative_dataset function
        return iter(data())
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple)):
        return (data[i] for i in range(len(data)))  # keras.utils.PyDataset and other sequences
    try:
        return iter(data)
    except TypeError:
        raise InvalidArgumentTypeError(
            "representative_data must be an array, a list of arrays, a generator, a tf.data.Dataset "
            f"or an iterable of batches; got {type(data).__name__}"
        ) from None


def _features(element: Any, specs: list[InputSpec]) -> Any:
    """The ``x`` part of one element: strips ``y`` / ``sample_weight`` and TF's ``[x]`` wrapper."""
    if isinstance(element, Mapping):
        return element
    if isinstance(element, (list, tuple)):
        if len(specs) > 1 and len(element) == len(specs) and all(_is_array_like(e) for e in element):
            if all(s.shape is None or np.ndim(e) in (len(s.shape), len(s.shape) + 1) for e, s in zip(element, specs)):
                return list(element)
        return element[0]
    return element


def _split(x: Any, specs: list[InputSpec]) -> list[np.ndarray]:
    """Per-input arrays with a leading sample axis."""
    if isinstance(x, Mapping):
        missing = [s.key for s in specs if s.key not in x]
        if missing:
            raise InvalidArgumentError(f"representative_data has no entry for input(s) {missing}; it has {sorted(x)}")
        parts = [x[s.key] for s in specs]
    elif isinstance(x, (list, tuple)):
        if len(x) != len(specs):
            raise InvalidArgumentError(f"representative_data gives {len(x)} arrays for {len(specs)} model inputs")
        parts = list(x)
    else:
        if len(specs) != 1:
            raise InvalidArgumentError(
                f"the model has {len(specs)} inputs ({[s.key for s in specs]}): give a list or dict of arrays"
            )
        parts = [x]
    arrays = []
    for part, spec in zip(parts, specs):
        try:
            array = np.asarray(part)
        except (ValueError, TypeError) as error:
            raise InvalidArgumentError(
                f"representative_data for input '{spec.key}' is not a rectangular array of numbers: {error}"
            ) from None
        if spec.shape is not None and array.ndim == len(spec.shape):
            array = array[None]
        if array.ndim == 0:
            raise InvalidArgumentError(
                f"representative_data for input '{spec.key}' gives a scalar ({array.dtype} {array!r}); "
                f"the model expects samples of shape {spec.shape}"
            )
        arrays.append(array)
    if len({len(a) for a in arrays}) > 1:
        raise InvalidArgumentError(
            f"representative_data inputs have different sample counts: {[len(a) for a in arrays]}"
        )
    return arrays


def _check_shape(array: np.ndarray, spec: InputSpec) -> None:
    sample = array.shape[1:]
    if spec.shape is None:
        return
    if len(sample) != len(spec.shape) or any(e is not None and e != d for e, d in zip(spec.shape, sample)):
        raise InvalidArgumentError(
            f"representative_data for input '{spec.key}' has samples of shape {tuple(sample)}; "
            f"the model expects {tuple(spec.shape)} (give x only, or (x, y) the way model.fit takes it)"
        )


def _check_values(array: np.ndarray, spec: InputSpec) -> None:
    """Numbers the input's dtype can hold exactly: a silent cast would calibrate on other data."""
    where = f"representative_data for input '{spec.key}'"
    target = np.dtype(spec.dtype)
    if array.dtype.kind not in "biuf":
        raise InvalidArgumentError(
            f"{where} has dtype {array.dtype}; the model expects {spec.dtype} numbers "
            "(decode strings / images to numeric arrays first)"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = ~np.isfinite(array).reshape(len(array), -1).all(axis=1) if array.ndim else np.array([True])
        raise InvalidArgumentError(
            f"{where} holds NaN or Inf (first in sample {int(np.flatnonzero(bad)[0])}; {int((~np.isfinite(array)).sum())} "
            "value(s) in all); calibration needs finite inputs"
        )
    if target.kind in "iu" and array.size:
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise InvalidArgumentError(
                f"{where} has fractional values but the model input is {spec.dtype} (e.g. token ids): "
                "give integer values"
            )
        info = np.iinfo(target)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise InvalidArgumentError(
                f"{where} has values in [{low}, {high}], outside the range of the model's {spec.dtype} input"
            )


def _check(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    if len(array) == 0:
        raise InvalidArgumentError(
            f"representative_data for input {spec.key!r} is empty: calibration needs samples (a few hundred)."
        )
    _check_shape(array, spec)
    _check_values(array, spec)
    return np.ascontiguousarray(array.astype(spec.dtype, copy=False))
