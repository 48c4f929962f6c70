"""Pictures of a pipeline, saved as PNG with matplotlib's Agg backend (no display needed).

* :func:`weight_density`: the distribution of one kernel's values at each stage, one panel per
  stage (baseline, pruned, clustered, int8) — pruning shows as a spike at zero, clustering as
  a few spikes, quantization as a fine grid.
* :func:`size_accuracy`: zipped size and accuracy of every stage of a report.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot global state) at a
fixed size and DPI, so a PNG's pixel size is known in advance: ``width * dpi`` by
``height * dpi``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kopt.core.errors import InvalidArgumentError

DPI = 100
PANEL_WIDTH = 8.0  # inches
PANEL_HEIGHT = 2.0  # inches per stage


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is in the test/examples extras
        raise ImportError("kopt.plots needs matplotlib: pip install 'kopt[examples]' (or matplotlib).") from error
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def weight_density(
    kernels: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    title: str = "",
    bins: int = 200,
) -> Path:
    """One panel per entry of ``kernels`` (stage label -> weight values): a histogram of the values.

    Exact zeros are drawn as a separate bar and their share printed, since after pruning they
    dwarf every other bin. All panels share the x axis. The PNG is ``800 x 200·n`` pixels.
    """
    if not kernels:
        raise InvalidArgumentError("weight_density needs at least one kernel (stage label -> array).")
    arrays = {label: np.asarray(values, dtype=np.float64).reshape(-1) for label, values in kernels.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if low == high:
        low, high = low - 1.0, high + 1.0
    edges = np.linspace(low, high, bins + 1)
    figure = _figure(PANEL_WIDTH, PANEL_HEIGHT * len(arrays))
    axes = figure.subplots(len(arrays), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, values) in zip(axes, arrays.items()):
        zeros = values == 0
        nonzero = values[~zeros]
        ax.hist(nonzero, bins=edges, color="tab:blue", alpha=0.8, density=False)
        share = float(np.mean(zeros)) if values.size else 0.0
        if share > 0:
            ax.axvline(0.0, color="tab:red", linewidth=1.5)
        unique = int(np.unique(values).size)
        ax.set_ylabel("count")
        ax.set_title(f"{label}: {unique} unique values, {share:.0%} zeros", fontsize=9, loc="left")
    axes[-1].set_xlabel("weight value")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


STAGE_LABELS = {"baseline": "baseline", "prune": "pruned", "cluster": "clustered", "quantize": "QAT", "int8": "int8 (deployed)"}


def pick_layer(stages: Sequence[Any], layer: str | None = None) -> str:
    """The layer to plot: ``layer`` if given, else the largest kernel among those present in the most stages."""
    with_kernels = [s for s in stages if s.kernels]
    if not with_kernels:
        raise InvalidArgumentError("No stage has kernels to plot.")
    if layer is not None:
        if not any(layer in s.kernels for s in with_kernels):
            names = sorted({n for s in with_kernels for n in s.kernels})
            raise InvalidArgumentError(f"No stage has a kernel for layer {layer!r}; layers: {names}.")
        return layer
    first = with_kernels[0].kernels

    def score(name: str) -> tuple[int, int]:
        return sum(name in s.kernels for s in with_kernels), first[name].size

    return max(first, key=score)


def pipeline_weight_density(stages: Sequence[Any], path: str | Path, *, layer: str | None = None) -> Path:
    """:func:`weight_density` of one layer's kernel through ``stages`` (``StageResult`` objects).

    The QAT stage is left out when the int8 stage is there (they hold the same values).
    """
    name = pick_layer(stages, layer)
    names = [s.name for s in stages]
    kernels = {}
    for stage in stages:
        if stage.name == "quantize" and "int8" in names:
            continue
        if name in stage.kernels:
            kernels[STAGE_LABELS.get(stage.name, stage.name)] = stage.kernels[name]
    return weight_density(kernels, path, title=f"weights of layer {name!r}")


def size_accuracy(report: Any, path: str | Path) -> Path:
    """Bars: zipped size per stage; line: accuracy, on an axis zoomed to the values, each labelled.

    Keras stages store float32 weights and the int8 stage a ``.tflite``: the two kinds of bar
    get their own colour and legend entry, so a float size is never read as an int8 one. The
    PNG is ``800 x 400`` pixels.
    """
    return _save(size_accuracy_figure(report), path)


def accuracy_limits(accuracies: Sequence[float]) -> tuple[float, float]:
    """A y range that shows differences of a few tenths of a point (not 0-1, where 0.976 and 0.996 coincide)."""
    low, high = min(accuracies), max(accuracies)
    margin = max(0.005, (high - low) * 0.5)
    return max(0.0, low - margin), high + margin  # room above the top point for its label


def size_accuracy_figure(report: Any) -> Any:
    """The figure :func:`size_accuracy` saves (for tests and notebooks)."""
    stages = list(report.stages)
    if not stages:
        raise InvalidArgumentError("The report has no stage to plot.")
    labels = [STAGE_LABELS.get(s.name, s.name) for s in stages]
    sizes = [s.deployed_zipped_bytes / 1024 for s in stages]
    is_tflite = [s.tflite_bytes is not None for s in stages]
    accuracies = [s.accuracy for s in stages]
    figure = _figure(8.0, 4.0)
    ax = figure.subplots()
    positions = np.arange(len(stages))
    for kind, colour, label in ((False, "tab:blue", "zipped float32 weights (Keras)"),
                                (True, "tab:purple", "zipped int8 .tflite")):
        chosen = [i for i, t in enumerate(is_tflite) if t == kind]
        if not chosen:
            continue
        bars = ax.bar(positions[chosen], [sizes[i] for i in chosen], color=colour, alpha=0.8, label=label)
        for bar, i in zip(bars, chosen):
            ax.annotate(f"{sizes[i]:.1f} KB", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, labels)
    ax.set_ylabel("zipped size (KB)")
    ax.set_ylim(0, max(sizes) * 1.15 or 1.0)
    ax.legend(loc="upper right", fontsize=8)
    points = [(p, a) for p, a in zip(positions, accuracies) if a is not None]
    if points:
        twin = ax.twinx()
        twin.plot([p for p, _ in points], [a for _, a in points], color="tab:orange", marker="o")
        for p, a in points:
            twin.annotate(f"{a:.2%}", (p, a), textcoords="offset points", xytext=(0, 6), ha="center",
                          fontsize=8, color="tab:orange")
        twin.set_ylim(*accuracy_limits([a for _, a in points]))
        twin.set_ylabel("accuracy (zoomed)", color="tab:orange")
    ax.set_title(f"{report.model_name}: size and accuracy by stage", fontsize=10)
    figure.tight_layout()
    return figure


def png_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG file, read from its header (raises ``ValueError`` if not a PNG)."""
    data = Path(path).read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise InvalidArgumentError(f"{path} is not a PNG file.")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


__all__ = ["accuracy_limits", "pick_layer", "pipeline_weight_density", "png_size", "size_accuracy", "size_accuracy_figure",
           "weight_density"]


#: Layers named in the legend of :func:`sensitivity_chart`; the others are thin grey lines.
SENSITIVITY_LEGEND_LAYERS = 10


def sensitivity_chart(table: Any, path: str | Path) -> Path:
    """One line per layer of a :class:`kopt.analysis.SensitivityTable`: accuracy drop (points) per level.

    Levels run left to right from the mildest to the most aggressive. With many layers only
    the :data:`SENSITIVITY_LEGEND_LAYERS` most sensitive ones (largest drop) are coloured and
    named; the rest are grey. Levels a layer cannot take (``nan``) leave a gap. The PNG is
    ``800 x 400`` pixels.
    """
    rows = list(table.rows)
    if not rows:
        raise InvalidArgumentError("The sensitivity table has no layer to plot.")
    levels = list(table.levels)
    positions = np.arange(len(levels))

    def worst(row: Any) -> float:
        finite = [d for d in row.drop if np.isfinite(d)]
        return max(finite) if finite else float("-inf")

    named = {id(r) for r in sorted(rows, key=worst, reverse=True)[:SENSITIVITY_LEGEND_LAYERS]}
    figure = _figure(8.0, 4.0)
    ax = figure.subplots()
    ax.axhline(0.0, color="black", linewidth=0.8)
    for row in rows:
        drops = np.asarray(row.drop, dtype=np.float64) * 100.0
        if id(row) in named:
            ax.plot(positions, drops, marker="o", linewidth=1.5, markersize=4, label=row.name)
        else:
            ax.plot(positions, drops, color="0.7", linewidth=0.8, marker=".", markersize=3)
    label = getattr(table, "level_label", str)
    ax.set_xticks(positions, [label(level) for level in levels])
    ax.set_xlabel(f"{getattr(table, 'axis_label', 'level')} (mildest to most aggressive)")
    ax.set_ylabel("accuracy drop (points)")
    hidden = len(rows) - len(named)
    title = f"{getattr(table, 'model_name', '') or 'model'}: sensitivity to {table.technique}, one layer at a time"
    title += f" (baseline {table.baseline_accuracy:.1%})"
    ax.set_title(title, fontsize=10)
    ax.legend(
        fontsize=7,
        loc="best",
        title=f"+{hidden} more in grey" if hidden else None,
        title_fontsize=7,
    )
    ax.grid(True, alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


__all__ += ["sensitivity_chart"]
