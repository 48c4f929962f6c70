"""ATen ops dispatched per PyTorch training step of the backends benchmark's CNN, per variant.

On PyTorch every eager op costs its dispatch (a few microseconds of Python and C++ each) whatever
its size, so the count of ops a step dispatches is the per-step overhead that does not depend on
the machine's load (timings on a shared machine do). Counted with ``torch.profiler`` over one
``fit`` step after warm-up: ``dispatches`` are ATen ops called from Python or by the autograd
engine (not the ops they call in turn), ``compiled calls`` the calls of kopt's fused kernels
(``kopt.core.backend.fused``).

Run: ``KERAS_BACKEND=torch python benchmarks/torch_dispatches.py [--ops N] [variant ...]``
(``KOPT_FUSE=0``: the eager fallback). Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("KERAS_BACKEND", "torch")

import backends  # noqa: E402

VARIANTS = ("float", "prune", "cluster", "qat", "pcqat")


def build_models(keras: Any, kopt: Any, x: Any, y: Any, wanted: list[str]) -> dict[str, Any]:
    base = backends.cnn(keras)
    models: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "float" in wanted:
            models["float"] = backends.compiled(keras, kopt.graph.map_layers(base, lambda layer: None))
        for variant, stage in (("prune", "prune"), ("cluster", "cluster"), ("qat", "quantize")):
            if variant in wanted:
                prepared = kopt.prepare(base, variant, stage=stage, steps=1000, seed=backends.SEED, compile=False)
                models[variant] = backends.compiled(keras, prepared)
        if "pcqat" in wanted:
            ready, policy = backends.pruned_and_clustered(keras, kopt, base, x, y)
            prepared = kopt.prepare(ready, policy, stage="quantize", seed=backends.SEED, compile=False)
            models["pcqat"] = backends.compiled(keras, prepared)
    return models


def count_step(keras: Any, kopt: Any, model: Any, x: Any, y: Any) -> tuple[int, int, collections.Counter]:
    """``(dispatches, compiled calls, dispatches per op name)`` of one training step after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    batch = backends.BATCH
    callbacks = kopt.callbacks.for_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):  # compile every fused kernel (and its recompiles) before counting
            model.fit(x[: 4 * batch], y[: 4 * batch], batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    events = prof.events()

    def dispatched(event: Any) -> bool:
        parent = event.cpu_parent
        return event.name.startswith("aten::") and (parent is None or not parent.name.startswith("aten::"))

    ops = collections.Counter(event.name for event in events if dispatched(event))
    compiled = sum(event.name.startswith("Torch-Compiled Region") for event in events)
    return sum(ops.values()), compiled, ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", choices=[*VARIANTS, []], help="default: all")
    parser.add_argument("--ops", type=int, default=0, help="also list each variant's N most dispatched ops")
    args = parser.parse_args()
    args.variants = args.variants or list(VARIANTS)
    import keras
    import numpy as np

    import kopt

    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch")
    rng = np.random.default_rng(backends.SEED)
    x = rng.uniform(-1, 1, (8 * backends.BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 8 * backends.BATCH)
    models = build_models(keras, kopt, x, y, args.variants)
    print(f"KOPT_FUSE={os.environ.get('KOPT_FUSE', '1')}")
    print("| variant | dispatches per step | compiled calls |")
    print("|---|---|---|")
    listings = []
    for name in args.variants:
        total, compiled, ops = count_step(keras, kopt, models[name], x, y)
        print(f"| {name} | {total} | {compiled} |", flush=True)
        listings.append((name, ops))
    for name, ops in listings if args.ops else []:
        print(f"\n{name}: " + ", ".join(f"{op} {count}" for op, count in ops.most_common(args.ops)))


if __name__ == "__main__":
    main()
