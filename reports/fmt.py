"""How numbers, times and statuses read in every report format (HTML, Markdown, JUnit), so a
value looks the same wherever a reviewer meets it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from aichaos.slo.completion import INCOMPLETE_VERDICTS

STATUSES = ("pass", "warn", "fail", "inconclusive", "insufficient_data")
STATUS_LABELS = {
    "pass": "pass",
    "warn": "warn",
    "fail": "fail",
    "inconclusive": "inconclusive",
    "insufficient_data": "insufficient data",
    "not_evaluated": "not evaluated",
    "aborted": "aborted",
    "crashed": "crashed",
    "incomplete": "incomplete",
}
DASH = "—"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sig(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, without an exponent for everyday magnitudes."""
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        exponent = int(text.split("e")[1])
        if -5 <= exponent < 9:
            decimals = max(0, digits - 1 - exponent)
            text = f"{value:.{decimals}f}"
    return text


def seconds(value: Any) -> str:
    """A latency: milliseconds below one second, seconds above."""
    if not is_number(value):
        return DASH
    if abs(value) < 1:
        return f"{sig(value * 1000)} ms"
    return f"{sig(value)} s"


def duration(value: Any) -> str:
    """A span of time as a reader says it: 45 s, 3 min 20 s, 1 h 05 min."""
    if not is_number(value):
        return DASH
    if value < 60:
        return f"{sig(value)} s"
    total = round(value)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def percent(value: Any) -> str:
    """A ratio 0..1 as a percentage, keeping small ratios visible (0.05 %, not 0 %)."""
    if not is_number(value):
        return DASH
    return f"{sig(value * 100)} %"


def value(value: Any, unit: str | None) -> str:
    """An SLI value in its unit as slo.json gives it."""
    if not is_number(value):
        return DASH
    if unit == "s":
        return seconds(value)
    if unit in ("ratio", "fraction"):
        return percent(value)
    if unit in ("%", "percent"):
        return f"{sig(value)} %"
    suffix = f" {unit}" if unit else ""
    return f"{sig(value)}{suffix}"


def interval(ci: Any, unit: str | None) -> str:
    """``low – high``; a side the samples could not bound (null) reads "unbounded"."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return DASH
    if not all(v is None or is_number(v) for v in ci) or tuple(ci) == (None, None):
        return DASH
    low, high = (value(v, unit) if v is not None else "unbounded" for v in ci)
    return f"{low} – {high}"


def number(value: Any, digits: int = 3) -> str:
    if not is_number(value):
        return DASH
    if isinstance(value, int) or float(value).is_integer() or abs(value) >= 1000:
        return f"{round(value):,}"  # counts: whole numbers, grouped
    return sig(float(value), digits)


def change(value: Any) -> str:
    """A relative change with its sign: +12.5 %, -3 %."""
    if not is_number(value):
        return DASH
    return ("+" if value > 0 else "") + percent(value)


def p_value(value: Any) -> str:
    if not is_number(value):
        return DASH
    return "< 0.0001" if value < 0.0001 else sig(value, 2)


def rate(value: Any) -> str:
    """A burn rate: how many times the budget's sustainable pace."""
    return f"{sig(value)}×" if is_number(value) else DASH


def utc(epoch: Any) -> str:
    if not is_number(epoch):
        return DASH
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


OPERATORS = {"<=": "≤", ">=": "≥", "<": "<", ">": ">", "==": "="}


def op(operator: Any) -> str:
    """A comparison as a reader writes it (slo.json keeps the ASCII form)."""
    return OPERATORS.get(str(operator), str(operator or ""))


def status_label(status: Any) -> str:
    return STATUS_LABELS.get(str(status), str(status) if status else "not evaluated")


def status_class(status: Any) -> str:
    if status in INCOMPLETE_VERDICTS:
        return "incomplete"
    return str(status) if status in STATUSES else "none"


def phases_ran(done: Any) -> str:
    """What of an unfinished run ran, from slo's ``Completion``: "baseline ran,
    fault:outage ran 7 s of 30 s, recovery did not run"."""
    if not done.load_started:
        return "the load never started"
    parts = []
    for p in done.phases:
        if p.state == "not_run":
            parts.append(f"{p.name} did not run")
        elif p.state == "ran":
            parts.append(f"{p.name} ran")
        elif p.planned_s is not None:
            parts.append(f"{p.name} ran {duration(p.ran_s)} of {duration(p.planned_s)}")
        else:
            parts.append(f"{p.name} cut short after {duration(p.ran_s)}")
    text = ", ".join(parts) or "no phase ran"
    if done.during not in (None, "load"):
        text += f"; stopped during {done.during}"
    return text
