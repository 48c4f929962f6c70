"""Kept for imports written before presets moved into the policy package: see :mod:`kopt.policy.presets`."""

from kopt.policy.presets import KNOBS, PRESET_NAMES, build_preset

__all__ = ["KNOBS", "PRESET_NAMES", "build_preset"]
