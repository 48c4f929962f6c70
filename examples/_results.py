"""Write an example's Markdown results with where they were measured (the README shows these files)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment_line() -> str:
    """Versions and machine: a figure is only comparable with figures measured the same way."""
    import keras

    versions = [f"Keras {keras.__version__}", f"backend {keras.backend.backend()}"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        versions.insert(1, f"TensorFlow {tf.__version__}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"Measured with {', '.join(versions)}, Python {platform.python_version()} on "
            f"{platform.machine()}, {os.cpu_count()} CPU(s); load average (1, 5, 15 min) at the end: {load}"
            " (wall times grow with it).")


def write_results(name: str, title: str, table: str, notes: str = "") -> Path:
    """``examples/results/<name>.md``: a title, the environment, the table, then any notes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    parts = [f"# {title}", environment_line(), table]
    if notes:
        parts.append(notes)
    path.write_text("\n\n".join(parts).rstrip() + "\n")
    return path
