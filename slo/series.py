"""Time series and distribution points of one run directory, for the report's charts.

The SLO numbers come from ``slo.evaluate`` over the raw records; this module only feeds the
charts, so it bins requests into per-interval series and samples CDFs, downsampling long runs
to at most ``max_points`` bins. Everything it returns is plain JSON (lists of floats or None,
times in seconds since the run started) so the HTML report can embed it as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aichaos.load_health import load_health_notes
from aichaos.rundir import (
    METRICS_PARQUET,
    RunManifest,
    read_events,
    read_manifest,
    read_requests,
)
from aichaos.rundir import fault_windows as verdict_windows

from .records import Views, from_table

# Bin widths (seconds) a long run is downsampled to: the smallest that keeps max_points.
BIN_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_POINTS = 1200
# ITL gaps pooled for the charts; above this, every k-th request's gaps are used.
ITL_SAMPLE_CAP = 2_000_000
# CDF points: dense in the tail, where SLOs live.
CDF_PROBS = np.unique(
    np.concatenate(
        [
            np.linspace(0.0, 0.9, 46),
            np.linspace(0.9, 0.99, 19),
            np.linspace(0.99, 0.999, 10),
            np.linspace(0.999, 1.0, 5),
        ]
    )
)
SUPERVISOR_MARKS = ("exit", "restart", "kill")
SERVER_PANELS = {
    # panel key: (metric, how bins are combined)
    "running": ("vllm:num_requests_running", "mean"),
    "waiting": ("vllm:num_requests_waiting", "mean"),
    "kv_cache": ("vllm:kv_cache_usage_perc", "mean"),
    "preemptions": ("vllm:num_preemptions_total", "rate"),
    "ttft_p95": ("vllm:time_to_first_token_seconds:p95", "mean"),
    "breakers": ("gateway_breaker_state", "max"),
    "in_flight": ("gateway_in_flight", "mean"),
}
ERROR_SAMPLES = 5  # distinct error details listed per error kind


def build_series(
    run_dir: Path,
    phases: Sequence[dict[str, Any]] | None = None,
    max_points: int = MAX_POINTS,
) -> dict[str, Any]:
    """Chart data for ``run_dir``. ``phases`` are slo.json's phases (name, start, end in epoch
    seconds); without them the CDFs cover the whole run and each fault window."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    table, notes = read_requests(run_dir)
    events, event_notes = read_events(run_dir)
    notes += event_notes
    timed = [e for e in events if isinstance(e, dict) and _is_time(e.get("t"))]
    if len(timed) < len(events):
        notes.append(f"events.jsonl: {len(events) - len(timed)} events without a time skipped")
    events = timed
    t0, t_end = _time_span(manifest, table, events)
    duration = max(t_end - t0, 1.0)
    bin_s = next((s for s in BIN_STEPS if duration / s <= max_points), BIN_STEPS[-1])
    n_bins = max(1, math.ceil(duration / bin_s))
    grid = _Grid(t0, bin_s, n_bins)
    faults = fault_windows(events, t0, t_end)
    series: dict[str, Any] = {
        "t0": t0,
        "duration_s": duration,
        "bin_s": bin_s,
        "points": n_bins,
        "x": _round([(i + 0.5) * bin_s for i in range(n_bins)]),
        "faults": faults,
        "warmup": _warmup(manifest),
        "marks": _supervisor_marks(events, t0),
        "notes": notes,
    }
    series.update(_request_series(table, grid))
    series["server"] = _server_series(run_dir / METRICS_PARQUET, grid, notes)
    notes += load_health_notes(run_dir)  # e.g. load workers refused for lacking the token
    if phases is None:
        phases = [{"name": "all", "start": t0, "end": t_end}] + [
            {"name": f"fault:{f['name']}", "start": t0 + f["start"], "end": t0 + f["end"]}
            for f in faults
        ]
    # the run ends where the verdict's whole-run phase does (slo.json), else at its span's end
    ends = [p["end"] for p in phases if p.get("name") == "all" and _is_time(p.get("end"))]
    series["cdf"] = _cdfs(Views(from_table(table), end=max(ends, default=t_end)), phases)
    series["error_samples"] = _error_samples(table)
    return series


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Grid:
    """Fixed-width bins from the run's start; values outside the run are dropped."""

    def __init__(self, t0: float, bin_s: float, n: int):
        self.t0, self.bin_s, self.n = t0, bin_s, n

    def index(self, t: np.ndarray) -> np.ndarray:
        """Bin of each time, -1 when outside the run or unknown (NaN)."""
        with np.errstate(invalid="ignore"):
            i = np.floor((t - self.t0) / self.bin_s)
        i = np.where(np.isfinite(i), i, -1).astype(np.int64)
        return np.where((i >= 0) & (i < self.n), i, -1)

    def rate(self, index: np.ndarray) -> list[float]:
        """Events per second in each bin."""
        counts = np.bincount(index[index >= 0], minlength=self.n)[: self.n]
        return _round(counts / self.bin_s)


def _time_span(
    manifest: RunManifest | None, table: pa.Table, events: list[dict[str, Any]]
) -> tuple[float, float]:
    """Start and end of the run: the manifest's, else what the records and events cover (an
    aborted run has no end time)."""
    times = [float(e["t"]) for e in events if isinstance(e.get("t"), int | float)]
    for name in ("t_scheduled", "t_sent"):
        col = table.column(name)
        if len(col) and col.null_count < len(col):
            times += [pc.min(col).as_py(), pc.max(col).as_py()]
    start = manifest.started_at if manifest is not None else None
    end = manifest.ended_at if manifest is not None else None
    t0 = start if start is not None else min(times, default=0.0)
    t_end = end if end is not None else max([t for t in times if t >= t0], default=t0 + 1.0)
    return t0, max(t_end, t0 + 1.0)


def fault_windows(events: Iterable[dict[str, Any]], t0: float, t_end: float) -> list[dict]:
    """The verdict's fault windows (``rundir.fault_windows``), in seconds since ``t0``; a fault
    still on when the run stopped (aborted) ends at ``t_end`` and is marked open."""
    windows, _ = verdict_windows(list(events), run_end=t_end)
    return [
        {
            "name": w.name,
            "start": round(w.start - t0, 3),
            "end": round((w.end if w.end is not None else t_end) - t0, 3),
            "open": w.open,
            "activity": str(w.activity or ""),
        }
        for w in windows
    ]


def _warmup(manifest: RunManifest | None) -> list | None:
    warmup = manifest.warmup_s if manifest is not None else 0.0
    return [0.0, warmup] if warmup > 0 else None


def _supervisor_marks(events: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    return [
        {
            "t": round(float(e["t"]) - t0, 3),
            "kind": str(e.get("kind")),
            "name": str(e.get("name", "")),
            "detail": json.dumps(e.get("detail") or {}, default=str)[:300],
        }
        for e in events
        if e.get("kind") in SUPERVISOR_MARKS
    ]


def _request_series(table: pa.Table, grid: _Grid) -> dict[str, Any]:
    sched = _floats(table, "t_scheduled")
    sent = _floats(table, "t_sent")
    # a request that never went out (aborted before sending) still counts as scheduled
    when = np.where(np.isfinite(sent), sent, sched)
    at = grid.index(when)
    ok = _objects(table, "status") == "ok"
    # latency from answered requests only, as the verdict takes it (``Evaluator.latency_values``),
    # in the bin of its first token; an error in the bin it reached the client in
    ttft_s = _floats(table, "ttft_s")
    ttft = np.where(ok, ttft_s, np.nan)
    first_at = grid.index(np.where(np.isfinite(ttft_s), when + ttft_s, when))
    done_s = _floats(table, "done_s")
    done_at = grid.index(np.where(np.isfinite(done_s), when + done_s, when))
    out: dict[str, Any] = {
        "requests": {
            "scheduled": grid.rate(grid.index(sched)),
            "sent": grid.rate(grid.index(sent)),
        },
        "ttft": _bin_quantiles(first_at, ttft, grid.n, {"p50": 0.5, "p95": 0.95, "p99": 0.99}),
        "itl": _itl_series(table.filter(pa.array(ok.astype(bool))), grid),
    }
    kinds = _objects(table, "error_kind")
    kinds[kinds == None] = "unknown"  # noqa: E711
    out["errors"] = {
        str(kind): grid.rate(done_at[(~ok) & (kinds == kind)]) for kind in sorted(set(kinds[~ok]))
    }
    served_by = _objects(table, "served_by")
    cached = _objects(table, "cached") == True  # noqa: E712
    degraded = _objects(table, "degraded") == True  # noqa: E712
    who = np.where(cached, "cache", np.where(served_by == None, "unknown", served_by))  # noqa: E711
    served = {}
    for name in sorted(set(who[ok].tolist()), key=_served_order):
        served[str(name)] = grid.rate(at[ok & (who == name)])
    out["served"] = served
    out["degraded"] = grid.rate(at[ok & degraded])
    return out


def _served_order(name: str) -> tuple[int, str]:
    # replicas first, then the ways a request is answered without them
    rank = {"fallback": 1, "cache": 2, "gateway": 3, "unknown": 4}
    return rank.get(name, 0), name


def _objects(table: pa.Table, name: str) -> np.ndarray:
    """A column as an object array (None for nulls), so comparisons work on any type."""
    col = table.column(name)
    if not len(col):
        return np.zeros(0, dtype=object)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    return col.to_numpy(zero_copy_only=False).astype(np.float64) if len(col) else np.zeros(0)


def _bin_quantiles(
    index: np.ndarray, values: np.ndarray, n: int, quantiles: dict[str, float]
) -> dict[str, list[float | None]]:
    keep = (index >= 0) & np.isfinite(values)
    out: dict[str, list[float | None]] = {k: [None] * n for k in quantiles}
    if not keep.any():
        return out
    frame = pd.DataFrame({"bin": index[keep], "v": values[keep]})
    grouped = frame.groupby("bin")["v"].quantile(list(quantiles.values())).unstack()
    for key, q in quantiles.items():
        column = out[key]
        for b, v in grouped[q].items():
            column[int(b)] = _round1(float(v))
    return out


def _itl_series(table: pa.Table, grid: _Grid) -> dict[str, Any]:
    col = table.column("itl_s")
    total = pc.sum(pc.list_value_length(col)).as_py() or 0 if len(col) else 0
    every = max(1, math.ceil(total / ITL_SAMPLE_CAP))
    rows = table.select(["t_sent", "itl_s"])
    if every > 1:
        rows = rows.take(pa.array(np.arange(0, rows.num_rows, every)))
    lists = rows.column("itl_s").combine_chunks()
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float64)
    parents = pc.list_parent_indices(lists).to_numpy()
    at = grid.index(_floats(rows, "t_sent"))[parents] if len(parents) else np.zeros(0, np.int64)
    out: dict[str, Any] = _bin_quantiles(at, values, grid.n, {"p50": 0.5, "p99": 0.99})
    out["sampled_every"] = every
    return out


def _server_series(path: Path, grid: _Grid, notes: list[str]) -> dict[str, Any] | None:
    """Panels from metrics.parquet, one line per (source, labels); None when the run has no
    server metrics."""
    if not path.exists():
        return None
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        notes.append(f"{path.name}: unreadable ({exc})")
        return None
    if frame.empty:
        return None
    frame["bin"] = grid.index(frame["t"].to_numpy(dtype=np.float64))
    frame = frame[frame["bin"] >= 0]
    panels: dict[str, Any] = {}
    for key, (metric, how) in SERVER_PANELS.items():
        rows = frame[frame["metric"] == metric]
        lines = {}
        for (source, labels), part in rows.groupby(["source", "labels"], sort=True):
            lines[_line_name(str(source), str(labels), metric)] = _bin_metric(part, grid, how)
        panels[key] = lines
    return panels


def _line_name(source: str, labels: str, metric: str) -> str:
    try:
        parsed = json.loads(labels) if labels else {}
    except json.JSONDecodeError:
        parsed = {}
    # a breaker line is named by the dependency it guards, not by the gateway that holds it
    if metric == "gateway_breaker_state" and isinstance(parsed, dict) and "dependency" in parsed:
        return str(parsed["dependency"])
    return source


def _bin_metric(part: pd.DataFrame, grid: _Grid, how: str) -> dict[str, list]:
    part = part.sort_values("t")
    by_bin = part.groupby("bin")["value"]
    if how == "rate":
        # a counter: increase per second between bins; a restart resets it, so drops count as 0
        last = by_bin.last()
        diff = last.diff().clip(lower=0) / grid.bin_s
        values = diff.iloc[1:]
    elif how == "max":
        values = by_bin.max()
    else:
        values = by_bin.mean()
    x = [(int(b) + 0.5) * grid.bin_s for b in values.index]
    return {"x": _round(x), "y": _round(values.to_numpy(dtype=np.float64))}


def _cdfs(views: Views, phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per phase, the CDFs of the samples the verdict takes: answered requests placed in the
    phase as ``Run.rows`` places them (a TTFT by its first token, an E2E by the request's
    end; the phase's end included for the whole run)."""
    out: dict[str, Any] = {}
    for phase in phases:
        start, end = phase.get("start"), phase.get("end")
        if not isinstance(start, int | float) or not isinstance(end, int | float):
            continue
        whole = phase.get("kind", phase.get("name")) == "all"
        cdfs = {}
        for name in ("ttft", "e2e"):
            view, rows = views.of(name), views.rows(name, start, end, whole)
            values = getattr(view, name)[rows][view.ok[rows]]
            cdfs[name] = _cdf(values[np.isfinite(values)])
        out[str(phase.get("name"))] = cdfs
    return out


def _cdf(values: np.ndarray) -> dict[str, Any]:
    if not len(values):
        return {"x": [], "y": [], "count": 0}
    x = np.quantile(values, CDF_PROBS)
    return {"x": _round(x), "y": _round(CDF_PROBS), "count": len(values)}


def _error_samples(table: pa.Table) -> list[dict[str, Any]]:
    """Per error kind: how many, and a few distinct details (as the run recorded them)."""
    errors = table.filter(pc.equal(table.column("status"), "error")).select(
        ["error_kind", "http_status", "error_detail"]
    )
    if not errors.num_rows:
        return []
    frame = errors.to_pandas()
    frame["error_kind"] = frame["error_kind"].fillna("unknown")
    samples = []
    for kind, part in frame.groupby("error_kind", sort=True):
        details = part["error_detail"].dropna().value_counts().head(ERROR_SAMPLES)
        statuses = sorted({int(s) for s in part["http_status"].dropna()})
        samples.append(
            {
                "kind": str(kind),
                "count": len(part),
                "http_status": statuses,
                "details": [{"detail": str(d)[:500], "count": int(c)} for d, c in details.items()],
            }
        )
    return sorted(samples, key=lambda s: -s["count"])


def _round1(v: float) -> float | None:
    if not math.isfinite(v):
        return None
    return float(f"{v:.5g}")


def _round(values: Iterable[float] | np.ndarray) -> list[float | None]:
    """Five significant digits: plenty for a chart, and a third of the bytes in the HTML."""
    return [_round1(float(v)) for v in values]
