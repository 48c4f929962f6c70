"""Facts about the running Keras backend that change how a wrapper should step.

Wrappers are written with ``keras.ops`` so they trace on TensorFlow and JAX; on PyTorch they run
eagerly, one op at a time, and work that a traced graph would prune away is paid on every step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
from typing import Any, Callable, Iterator

import keras


def branches_on_host() -> bool:
    """True where ``keras.ops.cond`` picks its branch in Python (PyTorch, outside ``torch.compile``).

    There a wrapper may read a condition on the host and skip a no-op branch outright (no copy,
    no dispatch), which a traced backend would have to carry as a ``cond`` in its graph.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not torch.compiler.is_compiling()


def scalars_on_host() -> bool:
    """True where a quantizer's scalar range arithmetic runs on the host (:mod:`kopt.core.host_ops`):
    where branches are read there (eager PyTorch), outside :func:`scalars_on_device`."""
    return branches_on_host() and not _DEVICE_SCALARS.active


class _DeviceScalars(threading.local):
    active = False


_DEVICE_SCALARS = _DeviceScalars()


@contextlib.contextmanager
def scalars_on_device() -> Iterator[None]:
    """Within this block, range arithmetic runs as the backend's ops even on eager PyTorch (the
    same values: to compare, or to time the host path against it)."""
    previous, _DEVICE_SCALARS.active = _DEVICE_SCALARS.active, True
    try:
        yield
    finally:
        _DEVICE_SCALARS.active = previous


#: Below this many elements a compiled kernel's call overhead (guards, dispatch) exceeds the passes it saves.
FUSE_MIN_ELEMENTS = 1 << 16


def fused(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (written in ``keras.ops``) run as one compiled kernel where the backend would
    otherwise run it op by op.

    On PyTorch, eager mode runs every elementwise op as its own pass over memory (and a fresh
    allocation): a fake-quant's clip, scale, round and rescale cost five passes over each
    activation, most of QAT's step overhead. ``torch.compile`` fuses them into one loop with the
    same results (checked bit for bit in the tests). TensorFlow and JAX are returned ``function``
    itself (TensorFlow runs its own fused FakeQuant op, JAX's jit fuses already). If compiling
    fails (no C++ compiler on the machine, an unsupported platform) or ``KOPT_FUSE=0`` is set, the
    function runs eagerly, with the same results.

    Only a first argument of :data:`FUSE_MIN_ELEMENTS` values or more is worth it. A chain of scalar
    ops (a range update) is not: compiled, it dispatched one kernel instead of some twenty ops, but
    the training step was no faster, and each process paid seconds of compilation for it.
    """
    state: dict[str, Any] = {}

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Inside a compiled train step or kernel (not branching on the host) the enclosing compile traces through.
        if _UNFUSED.active or not branches_on_host():
            return function(*args, **kwargs)
        compiled = state.get("compiled")
        if compiled is None:
            compiled = state["compiled"] = _compile(function)
        if compiled is function or not _worth_fusing(args[0]):
            return function(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - compile errors surface at the first call
            logging.getLogger("kopt").info("kopt: running %s eagerly (%s)", function.__name__, error)
            state["compiled"] = function
            return function(*args, **kwargs)

    run.runs_compiled = lambda: state.get("compiled") not in (None, function)  # type: ignore[attr-defined]
    return run


def _worth_fusing(tensor: Any) -> bool:
    """A concrete tensor (not a symbolic one: Keras infers shapes on PyTorch's ``meta`` device) of
    at least :data:`FUSE_MIN_ELEMENTS` values."""
    shape = tuple(getattr(tensor, "shape", ()))
    if any(not isinstance(size, int) for size in shape) or getattr(tensor, "is_meta", False):
        return False
    return math.prod(shape) >= FUSE_MIN_ELEMENTS


class _Unfused(threading.local):
    active = False


_UNFUSED = _Unfused()


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Within this block, :func:`fused` functions run op by op (to compare results, or to debug)."""
    previous, _UNFUSED.active = _UNFUSED.active, True
    try:
        yield
    finally:
        _UNFUSED.active = previous


def _compile(function: Callable[..., Any]) -> Callable[..., Any]:
    if keras.backend.backend() != "torch" or os.environ.get("KOPT_FUSE", "1") == "0":
        return function
    import torch

    return torch.compile(function, dynamic=True)
