"""analyze + rebuild time on MobileNetV2 (alpha 1.0, 224x224), against building the model itself.

Target (issue 2): analyze + rebuild under 2 s on the CI machine. The baseline, measured in
the same run, is constructing the same keras.applications model from scratch.
Run: python benchmarks/bench_graph.py  (writes benchmarks/results/graph.json)
"""

import os
import statistics
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from _harness import timed, write_json  # noqa: E402

from kopt.graph import analyze  # noqa: E402

REPEATS = 5


def main() -> dict:
    build_times, analyze_times, rebuild_times, clone_times = [], [], [], []
    for _ in range(REPEATS):
        keras.backend.clear_session()
        t_build, model = timed(lambda: keras.applications.MobileNetV2(weights=None))
        t_analyze, graph = timed(lambda: analyze(model))
        t_rebuild, _ = timed(graph.rebuild)
        t_clone, _ = timed(lambda: graph.rebuild(clone=True))
        build_times.append(t_build)
        analyze_times.append(t_analyze)
        rebuild_times.append(t_rebuild)
        clone_times.append(t_clone)
    median = statistics.median
    total = median([a + r for a, r in zip(analyze_times, rebuild_times)])
    result = {
        "model": "MobileNetV2 alpha=1.0 224x224 weights=None",
        "backend": keras.backend.backend(),
        "repeats": REPEATS,
        "build_model_s": median(build_times),
        "analyze_s": median(analyze_times),
        "rebuild_s": median(rebuild_times),
        "analyze_plus_rebuild_s": total,
        "rebuild_clone_s": median(clone_times),
        "ratio_analyze_rebuild_vs_build": total / median(build_times),
        "target_s": 2.0,
        "meets_target": total < 2.0,
    }
    write_json("graph", result)
    for key, value in result.items():
        print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")
    return result


if __name__ == "__main__":
    main()
