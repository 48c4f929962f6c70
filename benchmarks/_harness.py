"""Shared benchmark plumbing: paired timing, LiteRT latency, JSON and Markdown output.

Every ``benchmarks/*.py`` script measures a ratio against a baseline timed in the same run. On a
shared machine the load changes from second to second, so the variants are timed *alternately*
(round robin, the order reversed every round) and a ratio is the median of per-round ratios,
never a ratio of two medians taken minutes apart.

Importing this module needs only the standard library and NumPy (it also runs inside the
throw-away TFMOT environment of ``compare.py``); Keras, TensorFlow and LiteRT are imported by the
functions that need them.
"""

from __future__ import annotations

import datetime
import gc
import io
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"


# ------------------------------------------------------------------ data
def mnist1d_arrays(samples: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mnist1d generated offline (no download): ``x, y, x_test, y_test`` with x of shape (N, 40, 1).

    ``seed``: the generator's seed (None: the package's default)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples
    if seed is not None:
        args.seed = seed
    data = make_dataset(args)
    return (
        data["x"].astype("float32")[..., None],
        data["y"].astype("int64"),
        data["x_test"].astype("float32")[..., None],
        data["y_test"].astype("int64"),
    )


# ------------------------------------------------------------------ statistics
def median(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def per_round_ratios(samples: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """``samples[i] / baseline[i]``: each pair was measured at the same moment."""
    if len(samples) != len(baseline) or not samples:
        raise ValueError(f"need equally many paired samples, got {len(samples)} and {len(baseline)}")
    return [s / b for s, b in zip(samples, baseline)]


def paired_ratio(samples: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-round ratios ``samples[i] / baseline[i]``."""
    return median(per_round_ratios(samples, baseline))


def paired_quartiles(samples: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """Lower and upper quartile of the per-round ratios ``samples[i] / baseline[i]``: how far a
    ratio moves from round to round on this machine, reported beside the median so that a
    verdict within that spread reads as noise, not as a difference."""
    ratios = per_round_ratios(samples, baseline)
    if len(ratios) == 1:
        return ratios[0], ratios[0]
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return float(low), float(high)


def noise_note(q1: float | None, q3: float | None, limit: float) -> str:
    """A verdict's caveat: non-empty when the middle half of the per-round ratios (``q1``..``q3``)
    straddles ``limit``, i.e. when rounds of this very run fall on both sides of it."""
    if q1 is None or q3 is None or not q1 <= limit <= q3:
        return ""
    return f" (within run-to-run noise: the middle half of the rounds spans {q1:.3f}-{q3:.3f})"


def round_robin_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of one round: as given on even rounds, reversed on odd ones (ABBA), so that a
    trend in the machine's load does not always hit the same variant first."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def alternate(measures: Mapping[str, Callable[[], float | Sequence[float]]], rounds: int) -> dict[str, list[float]]:
    """Call every measurement once per round, round robin; returns each one's per-round value.

    A measurement returns one number (seconds) or several, which are reduced to their median
    for that round. Use :func:`paired_ratio` on two of the returned lists.
    """
    samples: dict[str, list[float]] = {name: [] for name in measures}
    # The set-up's objects (hundreds of thousands once TensorFlow or PyTorch is imported) are moved out of
    # the collector's way: a full collection walks them all (a second or so) inside whichever step it
    # lands in, noise far larger than the differences timed here. Collections of what the steps
    # allocate still run, and are paid by the variant that allocates.
    gc.collect()
    gc.freeze()
    for index in range(rounds):
        for name in round_robin_order(list(measures), index):
            value = measures[name]()
            samples[name].append(value if isinstance(value, (int, float)) else median(value))
    return samples


def summarize(samples: Mapping[str, Sequence[float]], baseline: str) -> dict[str, dict[str, float]]:
    """Median, minimum, paired ratio to ``baseline``, that ratio's quartiles over the rounds
    (``ratio_q1``, ``ratio_q3``) and the per-round values (``rounds_s``) of each variant."""
    summary = {}
    for name, values in samples.items():
        q1, q3 = paired_quartiles(values, samples[baseline])
        summary[name] = {
            "median_s": median(values),
            "min_s": float(min(values)),
            "ratio": paired_ratio(values, samples[baseline]),
            "ratio_q1": q1,
            "ratio_q3": q3,
            "rounds_s": list(values),  # to pair with another variant than the baseline
        }
    return summary


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Fastest of ``repeat`` calls, in seconds (for one-off costs, where noise only adds)."""
    return min(timed(fn)[0] for _ in range(repeat))


# ------------------------------------------------------------------ Keras training steps
def step_timer(keras_module: Any) -> Any:
    """A callback recording the wall time of every training batch (Keras 3 or tf-keras).

    Put it first in the callback list; its ``on_train_batch_end`` runs first too, so the other
    callbacks' ``on_train_batch_end`` is not counted but their ``on_train_batch_begin`` is
    (pruning updates its step there).
    """

    class StepTimer(keras_module.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def fit_step_seconds(
    keras_module: Any, model: Any, x: np.ndarray, y: np.ndarray, batch: int, steps: int, callbacks: Sequence[Any] = ()
) -> list[float]:
    """Seconds of each of ``steps`` training batches of ``model.fit`` (the first one dropped:
    it pays for the iterator's start)."""
    timer = step_timer(keras_module)
    count = batch * (steps + 1)
    model.fit(x[:count], y[:count], batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer, *callbacks])
    return timer.seconds[1:]


def train_step_ratios(
    keras_module: Any,
    models: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch: int,
    rounds: int,
    steps: int,
    baseline: str,
    callbacks: Mapping[str, Sequence[Any]] | None = None,
    warmup_steps: int = 3,
) -> dict[str, dict[str, float]]:
    """Training-step time of each (compiled) model and its paired ratio to ``models[baseline]``.

    Each round runs ``steps`` batches of every model in turn (:func:`alternate`); a round's
    value is the median batch time.
    """
    callbacks = callbacks or {}
    with warnings.catch_warnings():  # e.g. "training stopped before pruning finished": expected here
        warnings.simplefilter("ignore")
        for name, model in models.items():  # trace and warm up
            fit_step_seconds(keras_module, model, x, y, batch, warmup_steps, callbacks.get(name, ()))
        measures = {
            name: (lambda m=model, n=name: fit_step_seconds(keras_module, m, x, y, batch, steps, callbacks.get(n, ())))
            for name, model in models.items()
        }
        return summarize(alternate(measures, rounds), baseline)


def interleaved_train_on_batch(
    models: Mapping[str, Any], x: Any, y: Any, *, rounds: int, steps: int, warmup: int = 2, per_step: bool = False
) -> dict[str, list[float]]:
    """Seconds of each ``train_on_batch`` call of each model, the models interleaved.

    ``per_step=False``: each round runs ``steps`` calls of one model, then of the next;
    ``per_step=True``: one call each, ``rounds * steps`` times, so sample ``i`` of every model
    was measured at the same moment (use :func:`paired_ratio` on them).
    """
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)
    samples: dict[str, list[float]] = {name: [] for name in models}
    chunks = [(1, rounds * steps)] if per_step else [(steps, rounds)]
    for repeat, cycles in chunks:
        for _ in range(cycles):
            for name, model in models.items():
                for _ in range(repeat):
                    samples[name].append(timed(lambda: model.train_on_batch(x, y))[0])
    return samples


# ------------------------------------------------------------------ TFLite
def float_tflite(model: Any, input_shape: Sequence[int] | None = None) -> bytes:
    """Plain float32 TFLite of a Keras 3 model (SavedModel + TF's converter), batch 1 when
    ``input_shape`` (without batch) is given. ``kopt.export.to_tflite`` offers int8 / float16 /
    dynamic only."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        kwargs = {}
        if input_shape is not None:
            kwargs["input_signature"] = [tf.TensorSpec((1, *input_shape), tf.float32)]
        model.export(directory, format="tf_saved_model", verbose=False, **kwargs)
        return tf.lite.TFLiteConverter.from_saved_model(directory).convert()


def zipped_size(data: bytes) -> int:
    """Bytes of ``data`` in a deflate zip (what a download of the model costs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.tflite", data)
    return len(buffer.getvalue())


def _interpreter(tflite: bytes) -> tuple[Any, Callable[[], None]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite, num_threads=1)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, detail["shape"], endpoint=True).astype(dtype)
        else:
            value = rng.uniform(-1, 1, detail["shape"]).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    return interpreter, interpreter.invoke


def litert_latency(
    models: Mapping[str, bytes], *, rounds: int = 20, invokes: int = 10, baseline: str | None = None
) -> dict[str, dict[str, float]]:
    """Single-thread LiteRT latency (ms per invoke, batch as converted) of each model, interleaved.

    Each round invokes every model ``invokes`` times in turn; a round's value is the median
    invoke. Returns ``median_ms``, ``min_ms``, the per-round values ``rounds_s`` (to pair two
    models with :func:`paired_ratio`) and, with ``baseline``, the paired ``ratio``.
    """
    invokers = {}
    for name, tflite in models.items():
        _, invoke = _interpreter(tflite)
        for _ in range(3):
            invoke()
        invokers[name] = invoke

    def measure(invoke: Callable[[], None]) -> list[float]:
        return [timed(invoke)[0] for _ in range(invokes)]

    samples = alternate({name: (lambda i=invoke: measure(i)) for name, invoke in invokers.items()}, rounds)
    result: dict[str, dict[str, Any]] = {
        name: {"median_ms": 1e3 * median(v), "min_ms": 1e3 * min(v), "rounds_s": list(v)} for name, v in samples.items()
    }
    if baseline is not None:
        for name, values in samples.items():
            result[name]["ratio"] = paired_ratio(values, samples[baseline])
    return result


# ------------------------------------------------------------------ output
def environment() -> dict[str, Any]:
    """Where and when the figures were measured."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s)",
        "python": platform.python_version(),
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        pass
    return info


def environment_line() -> str:
    """One line for a results file: versions (Keras, TensorFlow, backend) and the machine."""
    import keras

    versions = f"Keras {keras.__version__}, backend {keras.backend.backend()}"
    try:
        import tensorflow as tf

        versions += f", TensorFlow {tf.__version__}"
    except ImportError:
        pass
    info = environment()
    return f"Measured {info['date_utc']} UTC with {versions}, Python {info['python']} on {info['machine']}."


def write_json(name: str, data: Mapping[str, Any], directory: Path | str = RESULTS) -> Path:
    """Write ``data`` to ``<directory>/<name>.json`` (``name`` may already end in ``.json``)."""
    path = Path(directory) / (name if name.endswith(".json") else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; ``None`` cells print as an em dash, floats with 3 significant digits."""

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [cell(v) for v in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, table has {len(headers)} columns: {row!r}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(name: str, text: str, directory: Path | str = RESULTS) -> Path:
    path = Path(directory) / (name if name.endswith(".md") else f"{name}.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
    return path
