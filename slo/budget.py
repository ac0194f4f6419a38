"""Error budgets, burn rates, burn-rate alerts replayed over the run, time to recover and time
to fail over (Google SRE workbook, "Alerting on SLOs").

- budget B = 1 − objective; burn rate = error ratio / B;
- budget spent by some requests = bad / (B × requests expected in the period);
- a multi-window alert holds at a moment when the burn rate over BOTH its long and its short
  window (ending then) is at least its factor. The replay steps one second at a time over the
  run; the part of a window that reaches back before the run is filled with traffic at the
  baseline phase's request rate and error ratio, as a long-running service would have had.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .spec import AlertRule


def burn_rate(error_ratio: float, objective: float) -> float:
    return error_ratio / (1.0 - objective)


def budget_spent(bad: float, objective: float, period_requests: float) -> float:
    """Share of the period's error budget that ``bad`` events use."""
    budget_events = (1.0 - objective) * period_requests
    return bad / budget_events if budget_events > 0 else math.inf


def per_second(t: np.ndarray, bad: np.ndarray, start: float, seconds: int):
    """Requests and bad requests in each whole second after ``start``."""
    idx = np.floor(t - start).astype(np.int64)
    keep = (idx >= 0) & (idx < seconds)
    total = np.bincount(idx[keep], minlength=seconds).astype(np.float64)
    bads = np.bincount(idx[keep], weights=bad[keep].astype(np.float64), minlength=seconds)
    return total, bads


def window_burn(
    total: np.ndarray,
    bad: np.ndarray,
    window_s: float,
    objective: float,
    base_rate: float,
    base_ratio: float,
) -> np.ndarray:
    """Burn rate over the window ending at the end of every second, pre-filled before the run."""
    w = max(1, round(window_s))
    c_total = np.concatenate([[0.0], np.cumsum(total)])
    c_bad = np.concatenate([[0.0], np.cumsum(bad)])
    end = np.arange(1, total.size + 1)
    begin = np.maximum(0, end - w)
    missing = np.maximum(0, w - end).astype(np.float64)  # seconds of the window before the run
    n = c_total[end] - c_total[begin] + missing * base_rate
    b = c_bad[end] - c_bad[begin] + missing * base_rate * base_ratio
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(n > 0, b / n, 0.0)
    return ratio / (1.0 - objective)


def alert_holds(
    rule: AlertRule,
    total: np.ndarray,
    bad: np.ndarray,
    objective: float,
    base_rate: float,
    base_ratio: float,
    min_events: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """For each second of the run: does the alert's condition hold at its end, on at least
    ``min_events`` bad events the run observed in its long window (the pre-filled history
    counts for the ratio, not as evidence)? And: does the burn condition hold on fewer
    (low traffic: shown, never a detection)?"""
    long_burn = window_burn(total, bad, rule.long_window_s, objective, base_rate, base_ratio)
    short_burn = window_burn(total, bad, rule.short_window_s, objective, base_rate, base_ratio)
    burning = (long_burn >= rule.burn_rate) & (short_burn >= rule.burn_rate)
    evidence = window_count(bad, rule.long_window_s) >= min_events
    return burning & evidence, burning & ~evidence


def window_count(values: np.ndarray, window_s: float) -> np.ndarray:
    """The sum of ``values`` over the window ending at the end of every second."""
    w = max(1, round(window_s))
    c = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, values.size + 1)
    return c[end] - c[np.maximum(0, end - w)]


def first_firing(holds: np.ndarray, start: float, after: float) -> float | None:
    """The end of the first second, at or after ``after``, at whose end the alert holds."""
    first_index = max(0, math.floor(after - start))
    hits = np.flatnonzero(holds[first_index:])
    if hits.size == 0:
        return None
    return start + first_index + int(hits[0]) + 1.0


def time_to_recover(
    fault_end: float,
    run_end: float,
    window_s: float,
    hold_s: float,
    within: Callable[[float, float], bool | None],
    max_steps: int = 100_000,
) -> float | None:
    """Fault end → the first moment ``t`` (whole seconds after the fault end) at which
    ``within(t - window_s, t)`` is true and stays true for every step up to ``t + hold_s``.
    ``within`` returns None for a window without data, which does not count as recovered."""
    steps = min(max_steps, math.floor(run_end - fault_end))
    hold = math.ceil(hold_s)
    streak_start = None
    for k in range(1, steps + 1):
        t = fault_end + k
        if within(t - window_s, t):
            if streak_start is None:
                streak_start = k
            if k - streak_start >= hold:
                return float(streak_start)
        else:
            streak_start = None
    return None


def time_to_failover(
    t_sent: np.ndarray, ttft: np.ndarray, is_fallback_ok: np.ndarray, start: float, end: float
) -> float | None:
    """Fault start → the first answer from the fallback (its first token; send time if no
    first token was recorded) among requests sent in the fault window."""
    i0, i1 = np.searchsorted(t_sent, [start, end])
    hits = np.flatnonzero(is_fallback_ok[i0:i1])
    if hits.size == 0:
        return None
    rows = hits + i0
    answered = t_sent[rows] + np.nan_to_num(ttft[rows], nan=0.0)
    return float(answered.min() - start)
