"""Independent NumPy reference of the TF FakeQuant / TFLite int8 scheme (float64, no Keras)."""

from __future__ import annotations

import numpy as np


def round_half_away(x):
    """TFLite's rounding (std::round): halves go away from zero."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def nudge(lo: float, hi: float, num_bits: int = 8, narrow_range: bool = False):
    """TF's Nudge(): (nudged_min, nudged_max, scale), zero point rounded half away from zero.

    Like TF's kernel, the scale and the zero point are computed in float32 (a range such
    as [-1, 1] gives 127.49999 there, not 127.5): the nudged range is then what both the
    training graph and the converter use.
    """
    qmin = 1 if narrow_range else 0
    qmax = 2**num_bits - 1
    f32 = np.float32
    scale = f32(f32(f32(hi) - f32(lo)) / f32(qmax - qmin))
    zero_point_from_min = float(f32(f32(qmin) - f32(lo) / scale))
    scale = float(scale)
    if zero_point_from_min < qmin:
        zero_point = qmin
    elif zero_point_from_min > qmax:
        zero_point = qmax
    else:
        zero_point = float(round_half_away(zero_point_from_min))
    return (qmin - zero_point) * scale, (qmax - zero_point) * scale, scale


def fake_quant(x, lo, hi, num_bits: int = 8, narrow_range: bool = False):
    """TF FakeQuantWithMinMaxVars: clamp to the nudged range, snap to the grid (halves round up)."""
    nlo, nhi, scale = nudge(lo, hi, num_bits, narrow_range)
    clamped = np.clip(np.asarray(x, np.float64), nlo, nhi)
    return np.floor((clamped - nlo) / scale + 0.5) * scale + nlo


def grid_codes(y, lo, hi, num_bits: int = 8, narrow_range: bool = False):
    """Integer grid index of fake-quantized values (to compare codes, not floats)."""
    nlo, _, scale = nudge(lo, hi, num_bits, narrow_range)
    return np.rint((np.asarray(y, np.float64) - nlo) / scale).astype(np.int64)


def tie_distance(x, lo, hi, num_bits: int = 8, narrow_range: bool = False):
    """How far (in grid steps) each value is from a rounding tie; float32 may flip ties."""
    nlo, nhi, scale = nudge(lo, hi, num_bits, narrow_range)
    t = (np.clip(np.asarray(x, np.float64), nlo, nhi) - nlo) / scale
    return np.abs(t - np.floor(t) - 0.5)


def tflite_int8_params(lo: float, hi: float):
    """(scale, int8 zero point) the converter derives from a fake-quant range (activations)."""
    nlo, nhi, scale = nudge(lo, hi, 8, False)
    return scale, int(round_half_away(-nlo / scale)) - 128


def symmetric_weight_codes(w, axis_channels: int | None):
    """TFLite int8 weights: per channel (last axis) or per tensor, max|w| -> 127, zero point 0."""
    w = np.asarray(w, np.float64)
    if axis_channels is None:
        scale = np.max(np.abs(w)) / 127.0
    else:
        scale = np.max(np.abs(w.reshape(-1, axis_channels)), axis=0) / 127.0
    return np.clip(round_half_away(w / scale), -127, 127).astype(np.int64), scale
