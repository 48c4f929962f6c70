"""The ``keras.ops`` that scalar range arithmetic uses, on NumPy float32 values on the host.

Eager PyTorch dispatches every ``keras.ops`` call as its own kernel with some tens of
microseconds of Python around it, whatever the size: a quantizer's range update (some twenty
scalar ops) cost more than its passes over a small activation. Where branches are read on the
host anyway (:func:`kopt.core.backend.branches_on_host`), the same function can run on this
namespace instead: pass ``xp=host_ops`` where it takes ``xp=keras.ops``.

The values are bit for bit those of the device: every op here is one IEEE float32 operation
(NumPy >= 2 keeps float32 when a Python float joins in, NEP 50), as PyTorch's CPU kernels are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy import (  # noqa: F401 - the namespace's other ops are NumPy's own
    all,
    clip,
    divide,
    floor,
    greater,
    greater_equal,
    less_equal,
    logical_and,
    maximum,
    minimum,
    ones_like,
    stack,
    where,
    zeros_like,
)


def cast(x: Any, dtype: str) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def convert_to_tensor(x: Any, dtype: str | None = None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)
