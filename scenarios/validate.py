"""Field-by-field reading of a scenario mapping: every mistake becomes one ``InputError`` line
naming the file, the dotted field and what was expected."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aichaos import units
from aichaos.rundir import InputError

_MISSING = object()


def parse_duration(value: Any) -> float | None:
    """Seconds from a duration (``units.parse_duration``); None if unreadable."""
    try:
        return units.parse_duration(value)
    except ValueError:
        return None


class Fields:
    """A mapping read once, key by key. ``finish`` rejects keys nobody asked for, so a typo
    ("durration") is a clear error instead of a silently ignored line."""

    def __init__(self, data: Any, file: str | Path, prefix: str = ""):
        self.file = str(file)
        self.prefix = prefix
        if not isinstance(data, dict):
            raise InputError(self.file, prefix or "(top level)", "a mapping", type(data).__name__)
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, expected: str, got: Any = None) -> None:
        raise InputError(self.file, self.name(key), expected, got)

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                near = difflib.get_close_matches(key, [str(k) for k in self.data], n=1)
                hint = f"; found {near[0]!r}, a typo?" if near and near[0] != key else ""
                self.fail(key, f"a value (required{hint})")
            return default
        return self.data[key]

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise InputError(self.file, self.name(str(key)), "a known field", "unknown field")

    def number(self, key: str, *, minimum: float | None = None, maximum: float | None = None,
               default: Any = _MISSING) -> float:  # fmt: skip
        value = self.get(key, default)
        if value is None:
            return value
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            self.fail(key, "a number", value)
        self._bounds(key, float(value), minimum, maximum)
        return float(value)

    def integer(self, key: str, *, minimum: int | None = None, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "an integer", value)
        self._bounds(key, value, minimum, None)
        return int(value)

    def duration(self, key: str, *, minimum: float = 0.0, default: Any = _MISSING) -> float:
        value = self.get(key, default)
        if value is None:
            return value
        seconds = parse_duration(value)
        if seconds is None:
            self.fail(key, units.EXPECTED, value)
        self._bounds(key, seconds, minimum, None)
        return seconds

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            self.fail(key, "a string", value)
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def choice(self, key: str, options: Sequence[str], default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if value not in options:
            self.fail(key, "one of " + ", ".join(options), value)
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> Fields | None:
        value = self.get(key, default)
        if value is None:
            return None
        return Fields(value, self.file, self.name(key))

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) for k, v in value.items()
        ):
            self.fail(key, "a mapping of names to strings", value)
        return {k: str(v) for k, v in value.items()}

    def list_of_maps(self, key: str, *, min_len: int = 0, default: Any = _MISSING) -> list[Fields]:
        value = self.get(key, default)
        if value is None:
            return []
        if not isinstance(value, list) or len(value) < min_len:
            self.fail(key, f"a list of at least {min_len} mappings", value)
        return [Fields(v, self.file, f"{self.name(key)}[{i}]") for i, v in enumerate(value)]

    def number_list(self, key: str, *, length: int | None = None, minimum: float | None = None,
                    default: Any = _MISSING) -> list[float] | None:  # fmt: skip
        value = self.get(key, default)
        if value is None:
            return None
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
        if not ok or (length is not None and len(value) != length) or not value:
            self.fail(key, f"a list of {length or 'one or more'} numbers", value)
        if minimum is not None and min(value) < minimum:
            self.fail(key, f"numbers >= {minimum}", value)
        return [float(v) for v in value]

    def _bounds(self, key: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            self.fail(key, f"a value >= {lo:g}", value)
        if hi is not None and value > hi:
            self.fail(key, f"a value <= {hi:g}", value)
