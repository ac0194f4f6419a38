"""Probes on the live run: the request records the load runner flushes to
``RUN_DIR/requests/*.parquet`` (every ≤ 2 s), over the last ``window_s`` seconds of send time.

With no request in the window (no load, or the first seconds) the ratios are 0.0 and the
percentile 0.0: a steady-state hypothesis then holds, as it should when nothing was hurt.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow.compute as pc

from aichaos.rundir import read_requests

from .. import context


def _recent(window_s: float, tier: str | None, configuration: dict | None):
    table, _ = read_requests(context.run_dir(configuration))
    if table.num_rows == 0:
        return table
    since = time.time() - float(window_s)
    mask = pc.greater_equal(table.column("t_sent"), since)
    if tier is not None:
        mask = pc.and_(mask, pc.equal(table.column("tier"), tier))
    return table.filter(pc.fill_null(mask, False))


def request_count(
    window_s: float = 10.0, tier: str | None = None, configuration: dict | None = None
) -> int:
    return _recent(window_s, tier, configuration).num_rows


def error_ratio(
    window_s: float = 10.0, tier: str | None = None, configuration: dict | None = None
) -> float:
    """Share of requests sent in the last ``window_s`` seconds that ended in error."""
    table = _recent(window_s, tier, configuration)
    if table.num_rows == 0:
        return 0.0
    errors = pc.sum(pc.equal(table.column("status"), "error")).as_py() or 0
    return round(errors / table.num_rows, 6)


def ttft_p95(
    window_s: float = 10.0, tier: str | None = None, configuration: dict | None = None
) -> float:
    """95th percentile of time to first token (seconds, exact, linear interpolation) of the
    successful requests sent in the last ``window_s`` seconds."""
    table = _recent(window_s, tier, configuration)
    values = [v for v in table.column("ttft_s").to_pylist() if v is not None]
    if not values:
        return 0.0
    return round(float(np.percentile(values, 95)), 6)


def fallback_share(
    window_s: float = 10.0, tier: str | None = None, configuration: dict | None = None
) -> float:
    """Share of the answered requests of the last ``window_s`` seconds that the fallback
    provider served (``X-Served-By: fallback``)."""
    table = _recent(window_s, tier, configuration)
    served = [s for s in table.column("served_by").to_pylist() if s]
    if not served:
        return 0.0
    return round(sum(1 for s in served if s == "fallback") / len(served), 6)
