"""Durations as every input of aichaos writes them: one parser, one set of units, one bound.

A duration is a number of seconds (``90``, ``0.5``) or a number with a unit: ``500ms``,
``90s``, ``5m``, ``1.5h``, ``30d``, ``2w``. It is finite, not negative and at most
``MAX_DURATION_S`` (a year and a bit: an SLO period is the longest duration any input means),
so nothing built from it (a schedule, a window) can overflow. Scenarios, SLO specs,
topologies and the command lines (``aichaos run|load --duration``) all read durations here.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

EXPECTED = "a duration such as 90, 500ms, 90s, 5m, 1.5h or 30d"
MAX_DURATION_S = 400 * 86400.0
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d|w)?\s*$")
_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
            "w": 604800.0}  # fmt: skip


def parse_duration(value: Any) -> float:
    """Seconds from ``value``; ``ValueError`` (its message is what was expected) otherwise."""
    if isinstance(value, bool):
        raise ValueError(EXPECTED)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64 and (match := _PATTERN.match(value)):
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    else:
        raise ValueError(EXPECTED)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{EXPECTED}, finite and not negative")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{EXPECTED}, at most {MAX_DURATION_S / 86400:g}d")
    return seconds


# a pydantic field type: a duration in any of those forms, held as seconds
Duration = Annotated[float, BeforeValidator(parse_duration)]


def prometheus_duration(seconds: float) -> str:
    """``seconds`` as Prometheus writes a duration (whole milliseconds)."""
    return f"{max(1, round(seconds * 1000))}ms"
