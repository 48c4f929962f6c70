"""Fine-tuning settings shared by every stage of a pipeline: data, compile settings, epochs.

kopt's stages (prune, cluster, quantization-aware training) each train a *new* wrapped model,
so each needs its own compile (a fresh optimizer: an optimizer is bound to the variables it
first saw). :class:`CompileSettings` captures what the user's model was compiled with and
re-applies it; :class:`Training` knows how to ``fit`` and ``evaluate`` on whatever data the user
gave — ``(x, y)`` / ``(x, y, sample_weight)`` arrays, a ``tf.data.Dataset`` or a
``keras.utils.PyDataset`` — and how many steps an epoch has (pruning schedules need it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from kopt.core.compile_settings import CompileSettings
from kopt.core.errors import CompileSettingsError, InvalidArgumentError

STAGES = ("prune", "cluster", "quantize")


# --------------------------------------------------------------------- data
def data_kind(data: Any) -> str:
    """``"arrays"`` for an ``(x, y[, sample_weight])`` tuple, ``"dataset"``, ``"pydataset"`` or ``"iterable"``."""
    if isinstance(data, tuple):
        if len(data) not in (2, 3):
            raise InvalidArgumentError(
                f"Training data given as a tuple must be (x, y) or (x, y, sample_weight), got {len(data)} items."
            )
        return "arrays"
    if isinstance(data, keras.utils.PyDataset):
        return "pydataset"
    if hasattr(data, "element_spec") and hasattr(data, "as_numpy_iterator"):
        return "dataset"
    if isinstance(data, (np.ndarray, list, dict)) or data is None:
        raise InvalidArgumentError(
            f"Training data must be a tuple (x, y), a tf.data.Dataset or a keras.utils.PyDataset, got "
            f"{type(data).__name__}: pass the labels too, as (x, y)."
        )
    return "iterable"


def _first_leaf(x: Any) -> Any:
    return keras.tree.flatten(x)[0]


def num_samples(x: Any) -> int:
    return int(len(_first_leaf(x)))


def steps_per_epoch_of(data: Any, batch_size: int | None) -> int | None:
    """Batches in one pass over ``data`` (``None`` when it cannot be told without iterating)."""
    kind = data_kind(data)
    if kind == "arrays":
        return max(1, math.ceil(num_samples(data[0]) / (batch_size or 32)))
    if kind == "pydataset":
        try:
            return int(len(data))
        except TypeError:
            return None
    if kind == "dataset":
        cardinality = int(data.cardinality())
        return cardinality if cardinality > 0 else None
    try:
        return int(len(data))
    except TypeError:
        return None


def _split_element(element: Any) -> tuple[Any, Any]:
    if isinstance(element, (tuple, list)) and len(element) in (2, 3):
        return element[0], element[1]
    raise InvalidArgumentError(
        "Each element of the data must be (x, y) or (x, y, sample_weight) to measure accuracy; got "
        f"{type(element).__name__}."
    )


def as_arrays(
    data: Any, limit: int | None = None, sample_rank: int | None = None, *, structured_labels: bool = False
) -> tuple[Any, Any]:
    """Up to ``limit`` samples of ``data`` as NumPy ``(x, y)`` (x may be a list/dict for several inputs).

    ``sample_rank`` is the rank of one input sample (without batch); a dataset whose elements
    have that rank is unbatched, otherwise each element is a batch. ``structured_labels``: ``y``
    keeps its structure (a tuple or dict of label arrays, one per output of a multi-output model);
    otherwise it is one array.
    """
    def labels(y: Any, convert: Callable[[Any], np.ndarray]) -> Any:
        return keras.tree.map_structure(convert, y) if structured_labels else convert(y)

    kind = data_kind(data)
    if kind == "arrays":
        x, y = data[0], data[1]
        cut = slice(None) if limit is None else slice(0, limit)
        return keras.tree.map_structure(lambda a: np.asarray(a)[cut], x), labels(y, lambda a: np.asarray(a)[cut])
    if kind == "pydataset":
        elements: Any = (data[i] for i in range(len(data)))
    elif kind == "dataset":
        elements = data.as_numpy_iterator()
    else:
        elements = iter(data)
    xs, ys, taken = [], [], 0
    for element in elements:
        x, y = _split_element(element)
        x = keras.tree.map_structure(lambda a: np.asarray(keras.ops.convert_to_numpy(a)), x)
        y = labels(y, lambda a: np.asarray(keras.ops.convert_to_numpy(a)))
        if sample_rank is not None and np.ndim(_first_leaf(x)) == sample_rank:
            x = keras.tree.map_structure(lambda a: a[None], x)
            y = labels(y, lambda a: a[None])
        xs.append(x)
        ys.append(y)
        taken += len(_first_leaf(x))
        if limit is not None and taken >= limit:
            break
    if not xs:
        raise InvalidArgumentError("The data yielded no samples.")
    x = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *xs)
    y = keras.tree.map_structure(lambda *parts: np.concatenate(parts), *ys) if structured_labels else np.concatenate(ys)
    if limit is not None:
        x = keras.tree.map_structure(lambda a: a[:limit], x)
        y = labels(y, lambda a: a[:limit])
    return x, y


def features(data: Any) -> Any:
    """The inputs only: ``x`` of an ``(x, y)`` tuple; datasets pass through (their ``(x, y)`` elements are understood)."""
    return data[0] if data_kind(data) == "arrays" else data


def accuracy_key(metrics: Mapping[str, float]) -> str | None:
    """The name of the accuracy-like metric in a ``model.evaluate`` result, if any."""
    for key in metrics:
        if "acc" in key:
            return key
    return None


# ----------------------------------------------------------------- training
@dataclass
class Training:
    """How each stage fine-tunes: data, epochs per stage, batch size, callbacks, compile settings.

    ``epochs`` is an int (every training stage) or a mapping ``{"prune": 2, "cluster": 1,
    "quantize": 1}`` (missing stages use ``default_epochs``). ``validation_data`` (same kinds
    as ``train_data``) is used for validation during fit and for the accuracy of every stage;
    without it, accuracies are measured on the training data.
    """

    train_data: Any
    compile: CompileSettings
    validation_data: Any = None
    epochs: int | Mapping[str, int] = 2
    batch_size: int | None = 32
    steps_per_epoch: int | None = None
    callbacks: Sequence[keras.callbacks.Callback] = ()
    verbose: int | str = "auto"
    default_epochs: int = 2
    eval_limit: int | None = 2000
    _train_kind: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._train_kind = data_kind(self.train_data)
        if self.validation_data is not None:
            data_kind(self.validation_data)
        if isinstance(self.epochs, Mapping):
            unknown = set(self.epochs) - set(STAGES)
            if unknown:
                raise InvalidArgumentError(f"epochs names unknown stage(s) {sorted(unknown)}; stages: {list(STAGES)}.")
            values = list(self.epochs.values())
        else:
            values = [self.epochs]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"epochs must be integers >= 0, got {self.epochs!r}.")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise InvalidArgumentError(f"batch_size must be a positive integer or None, got {self.batch_size!r}.")
        if self.steps_per_epoch is not None and (
            isinstance(self.steps_per_epoch, bool) or not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1
        ):
            raise InvalidArgumentError(f"steps_per_epoch must be a positive integer or None, got {self.steps_per_epoch!r}.")
        self.callbacks = list(self.callbacks or [])
        for callback in self.callbacks:
            if not isinstance(callback, keras.callbacks.Callback):
                raise InvalidArgumentError(f"callbacks must be keras.callbacks.Callback objects, got {callback!r}.")

    # ------------------------------------------------------------ counting
    def epochs_for(self, stage: str) -> int:
        if isinstance(self.epochs, Mapping):
            return int(self.epochs.get(stage, self.default_epochs))
        return int(self.epochs)

    def steps_for(self, stage: str) -> int | None:
        """Training steps the stage will run (``None`` if the data does not say how many batches it has)."""
        per_epoch = self.steps_per_epoch or steps_per_epoch_of(self.train_data, self.batch_size)
        return None if per_epoch is None else per_epoch * self.epochs_for(stage)

    # ------------------------------------------------------------ running
    def fit(
        self, model: keras.Model, stage: str, extra_callbacks: Sequence[keras.callbacks.Callback] = ()
    ) -> dict[str, list[float]]:
        """Compile ``model`` with the settings and train it for the stage's epochs; returns the history."""
        self.compile.compile(model)
        epochs = self.epochs_for(stage)
        if epochs == 0:
            return {}
        kwargs: dict[str, Any] = dict(
            epochs=epochs,
            callbacks=[*extra_callbacks, *self.callbacks],
            verbose=self.verbose,
            validation_data=self.validation_data,
            steps_per_epoch=self.steps_per_epoch,
        )
        if self._train_kind == "arrays":
            x, y, *weights = self.train_data
            history = model.fit(
                x, y, sample_weight=weights[0] if weights else None, batch_size=self.batch_size, **kwargs
            )
        else:
            if self._train_kind == "dataset":
                kwargs["shuffle"] = False  # a tf.data.Dataset shuffles itself; Keras would warn
            history = model.fit(self.train_data, **kwargs)
        return {k: [float(v) for v in values] for k, values in history.history.items()}

    @property
    def eval_data(self) -> Any:
        return self.validation_data if self.validation_data is not None else self.train_data

    @property
    def eval_split(self) -> str:
        return "validation" if self.validation_data is not None else "training"

    def evaluate(self, model: keras.Model) -> dict[str, float]:
        """``model.evaluate`` on the validation data (training data without it), compiled if needed."""
        if not getattr(model, "compiled", False):
            self.compile.compile(model)
        data = self.eval_data
        if data_kind(data) == "arrays":
            x, y, *weights = data
            result = model.evaluate(
                x, y, sample_weight=weights[0] if weights else None, batch_size=self.batch_size, verbose=0, return_dict=True
            )
        else:
            result = model.evaluate(data, verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def eval_arrays(self, model: keras.Model) -> tuple[Any, np.ndarray]:
        """Up to ``eval_limit`` evaluation samples as arrays, for running the int8 TFLite model."""
        return as_arrays(self.eval_data, self.eval_limit, sample_rank=_sample_rank(model))

    def eval_arrays_per_output(self, model: keras.Model) -> tuple[Any, list[np.ndarray]]:
        """:meth:`eval_arrays` of a multi-output model: one label array per output, in output order
        (labels given as a dict are looked up by output name)."""
        x, y = as_arrays(self.eval_data, self.eval_limit, sample_rank=_sample_rank(model), structured_labels=True)
        if isinstance(y, dict):
            return x, [y[name] for name in model.output_names]
        return x, list(y)


def _sample_rank(model: keras.Model) -> int | None:
    try:
        return len(model.inputs[0].shape) - 1
    except (AttributeError, IndexError, ValueError, TypeError):
        return None


Log = Callable[[str], None]

__all__ = [
    "CompileSettings",
    "CompileSettingsError",
    "Training",
    "accuracy_key",
    "as_arrays",
    "data_kind",
    "features",
    "steps_per_epoch_of",
]
