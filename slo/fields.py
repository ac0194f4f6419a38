"""The field readers every SLO input shares (specs, objectives, OpenSLO documents): each
returns the value or raises ``InputError`` naming the file and the field."""

from __future__ import annotations

import math
from typing import Any

from aichaos import units
from aichaos.rundir import InputError


def parse_duration(value: Any, file: str, field_name: str) -> float:
    """Seconds from a duration (``units.parse_duration``); ``InputError`` naming the field."""
    try:
        return units.parse_duration(value)
    except ValueError as exc:
        raise InputError(file, field_name, str(exc), value) from None


def ratio(value: Any, file: str, field_name: str) -> float:
    """A ratio 0..1 from a number or a percentage string (``0.1%``)."""
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            out = round(float(value.strip()[:-1]) / 100.0, 12)  # 99.9% is 0.999, not 0.99900..01
        elif isinstance(value, bool):
            raise ValueError
        else:
            out = float(value)
    except (TypeError, ValueError):
        raise InputError(
            file, field_name, "a ratio 0..1 or a percentage like 0.1%", value
        ) from None
    if not 0.0 <= out <= 1.0:
        raise InputError(file, field_name, "a ratio between 0 and 1", value)
    return out


def number(value: Any, file: str, field_name: str, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(file, field_name, "a number", value)
    if minimum is not None and value < minimum:
        raise InputError(file, field_name, f"a number >= {minimum:g}", value)
    return float(value)


def check_keys(d: dict, allowed: set[str], file: str, where: str) -> None:
    for key in d:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise InputError(file, path, f"one of the known fields {sorted(allowed)}")
