"""Checks of plain setting values, shared by every technique's settings dataclass.

Each raises :class:`~kopt.core.errors.PolicyError` naming the setting (``"prune.sparsity"``) and the
value at fault, so a policy file, a preset and a Python call fail with the same message.
"""

from __future__ import annotations

from typing import Any

from kopt.core.errors import PolicyError, preview


def check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PolicyError(f"{name} must be a number in [0, 1), got {preview(value)}.")


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name} must be an integer, got {preview(value)}.")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise PolicyError(f"{name} must be {bounds}, got {preview(value)}.")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise PolicyError(f"{name} must be true or false, got {preview(value)}.")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PolicyError(f"Unknown {name} {preview(value)}; valid: {list(choices)}.")
