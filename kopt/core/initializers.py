"""Initializers shared by the technique wrappers."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


class HostArray(keras.initializers.Initializer):
    """Initializer returning a precomputed host array (no device computation at build).

    Not serialized: the wrappers that use it recompute the array from the weight at build.
    """

    def __init__(self, value: np.ndarray):
        self.value = np.asarray(value)

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        return self.value.reshape(shape).astype(keras.backend.standardize_dtype(dtype or self.value.dtype))


__all__ = ["HostArray"]
