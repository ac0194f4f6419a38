"""Synthetic run directories, shaped exactly as ``src/aichaos/rundir.py`` says, for tests of the
SLO evaluator and the reports (no stack, no load: seconds to build, fully seeded).

``make_run_dir(path, ...)`` writes into ``path`` (created if missing) and returns it:

- ``run.json``: id, status, command, versions, seed, started_at, ended_at, scenario,
  experiment, slo (null), target, stack (null), warmup_s.
- ``requests/chunk-NNNN.parquet``: ``REQUEST_SCHEMA`` rows, one chunk per ``chunk_s`` seconds.
  Poisson arrivals at ``rps``; TTFT lognormal (median ~120 ms, slower for ``free``); output
  tokens lognormal (median ~60); ITL lognormal (median ~18 ms) with ``output_tokens - 1`` gaps;
  E2E = TTFT + sum(ITL); TPOT = (E2E - TTFT) / (output_tokens - 1). Served by ``llm-1`` /
  ``llm-2``, 2% from ``cache`` (cached and degraded). Errors at ``base_error_ratio`` outside
  faults, as ``http_5xx`` (503) with null latencies and an empty ITL list.
- ``events.jsonl``, the kinds the real writers write (``EventKind``): supervisor
  ``stack``/``ready`` events; the harness's ``run`` pair; experiments ``experiment`` pair; for
  each fault a ``fault`` pair (name = the fault's name, detail ``{"experiment",
  "activity"}``); for faults with ``"kill"`` a supervisor ``exit`` and ``restart`` of that
  replica. The warm-up is run.json's ``warmup_s``.
- ``metrics.parquet`` (``METRICS_SCHEMA``, one sample a second): per replica
  ``vllm:num_requests_running`` (counted from the records), ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``, ``vllm:time_to_first_token_seconds:p95``; gateway
  ``gateway_breaker_state`` per dependency (2 = open while a fault served by the fallback is
  on, else 0) and ``gateway_in_flight``.
- ``journal.json``: a small Chaos Toolkit journal (one action per fault, its rollback).

A fault is a dict; times are seconds after ``started_at``:
  ``name`` (required), ``start``, ``end``, ``error_ratio`` (share of requests failing while it
  is on, default 0), ``ttft_shift_s`` (added to TTFT of ok requests, default 0),
  ``served_by`` (who answers ok requests once ``failover_after_s`` (default 1.0) has passed,
  e.g. ``"fallback"``; default: unchanged), ``error_kind`` (default ``http_5xx``),
  ``activity`` (default ``disable_proxy``), ``kill`` (a replica name: supervisor exit at the
  start, restart ``restart_after_s`` (default 5) later).

``arrivals="uniform"`` spaces requests evenly (``(i + 0.5) / rps`` after the start, sent when
scheduled) for tests that need exact counts per second; the default is Poisson.

The signature is shared with the reports tests: add keyword arguments, never change these.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aichaos.rundir import (
    EVENTS_JSONL,
    JOURNAL_JSON,
    METRICS_PARQUET,
    METRICS_SCHEMA,
    REQUEST_SCHEMA,
    REQUESTS_DIR,
    RUN_JSON,
    EventKind,
    write_json,
)

DEFAULT_FAULTS: tuple[dict[str, Any], ...] = (
    {
        "name": "provider-outage",
        "start": 120,
        "end": 180,
        "error_ratio": 0.3,
        "ttft_shift_s": 0.2,
        "served_by": "fallback",
    },
)
STARTED_AT = 1_795_000_000.0
EXPERIMENT = "synthetic game day"
REPLICAS = ("llm-1", "llm-2")
ERROR_HTTP = {"http_5xx": 503, "http_429": 429, "http_4xx": 400}


def make_run_dir(
    path: Path | str,
    *,
    seed: int = 0,
    duration_s: float = 300,
    rps: float = 20,
    warmup_s: float = 10,
    faults: Iterable[dict[str, Any]] = DEFAULT_FAULTS,
    tiers: Sequence[str] = ("free", "pro", "enterprise"),
    status: str = "completed",
    with_metrics: bool = True,
    with_journal: bool = True,
    started_at: float = STARTED_AT,
    base_error_ratio: float = 0.0005,
    chunk_s: float = 60.0,
    run_id: str | None = None,
    arrivals: str = "poisson",
) -> Path:
    """Write a synthetic run directory into ``path`` and return it (see the module doc)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    faults = [dict(f) for f in faults]
    rng = np.random.default_rng(seed)
    ended_at = started_at + duration_s
    table = _requests(rng, started_at, duration_s, rps, faults, tiers, base_error_ratio, arrivals)
    _write_chunks(path / REQUESTS_DIR, table, started_at, chunk_s)
    _write_events(path / EVENTS_JSONL, started_at, ended_at, warmup_s, faults)
    if with_metrics:
        _write_metrics(path / METRICS_PARQUET, table, started_at, ended_at, faults, rng)
    if with_journal:
        write_json(path / JOURNAL_JSON, _journal(started_at, ended_at, faults, status))
    run_id = run_id or path.name
    manifest = {
        "id": run_id,
        "status": status,
        "command": ["aichaos", "run", "--synthetic"],
        "versions": {"aichaos": "0.1.0", "python": "3.11", "synthetic": True},
        "seed": seed,
        "started_at": started_at,
        "ended_at": None if status == "running" else ended_at,
        "scenario": {"name": "synthetic", "rps": rps, "tiers": list(tiers), "source": None},
        "experiment": {"title": EXPERIMENT, "faults": faults} if faults else None,
        "slo": None,
        "target": "http://127.0.0.1:8000",
        "stack": None,
        "warmup_s": warmup_s,
    }
    write_json(path / RUN_JSON, manifest)
    return path


def _requests(
    rng: np.random.Generator,
    started_at: float,
    duration_s: float,
    rps: float,
    faults: list[dict[str, Any]],
    tiers: Sequence[str],
    base_error_ratio: float,
    arrivals: str,
) -> pa.Table:
    if arrivals == "uniform":  # evenly spaced: exact hand-worked counts per second
        n = round(rps * duration_s)
        t_scheduled = started_at + (np.arange(n) + 0.5) / rps
    else:
        n = int(rng.poisson(rps * duration_s))
        t_scheduled = np.sort(rng.uniform(started_at, started_at + duration_s, n))
    t_sent = t_scheduled + (rng.exponential(0.001, n) if arrivals != "uniform" else 0.0)
    tier_idx = rng.integers(0, len(tiers), n) if tiers else np.zeros(n, dtype=int)
    tier = np.array(list(tiers) or ["default"], dtype=object)[tier_idx]
    # free requests queue behind paid ones in the gateway: a slower TTFT distribution
    ttft = rng.lognormal(math.log(0.12), 0.35, n) * np.where(tier == "free", 1.3, 1.0)
    out_tokens = np.clip(rng.lognormal(math.log(60), 0.5, n).astype(np.int64), 2, 1024)
    prompt_tokens = rng.integers(200, 900, n).astype(np.int64)
    served = np.array(REPLICAS, dtype=object)[rng.integers(0, len(REPLICAS), n)]
    cached = rng.random(n) < 0.02
    served[cached] = "cache"
    degraded = cached.copy()
    failed = rng.random(n) < base_error_ratio
    kind = np.full(n, "http_5xx", dtype=object)
    rel = t_sent - started_at
    for fault in faults:
        on = (rel >= fault.get("start", 0)) & (rel < fault.get("end", duration_s))
        hit = on & (rng.random(n) < float(fault.get("error_ratio", 0.0)))
        failed |= hit
        kind[hit] = fault.get("error_kind", "http_5xx")
        ttft[on] += float(fault.get("ttft_shift_s", 0.0))
        if fault.get("served_by"):
            moved = on & (rel >= fault.get("start", 0) + fault.get("failover_after_s", 1.0))
            served[moved] = fault["served_by"]
            degraded[moved] = True
            cached[moved] = False
    # ITL: one gap per token after the first, pooled in one array and cut into lists
    gaps = np.where(failed, 0, out_tokens - 1)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(gaps, out=offsets[1:])
    itl_values = rng.lognormal(math.log(0.018), 0.3, int(offsets[-1]))
    running_sum = np.concatenate([[0.0], np.cumsum(itl_values)])
    sums = running_sum[offsets[1:]] - running_sum[offsets[:-1]]
    e2e = ttft + sums
    tpot = np.where(out_tokens > 1, sums / np.maximum(out_tokens - 1, 1), np.nan)
    ok = ~failed
    http = np.array([ERROR_HTTP.get(k, 502) for k in kind], dtype=np.int64)
    columns = {
        "request_id": [f"r{i:07d}" for i in range(n)],
        "worker": [f"w{i % 4}" for i in range(n)],
        "scenario": ["synthetic"] * n,
        "tier": tier.tolist(),
        "t_scheduled": t_scheduled,
        "t_sent": t_sent,
        "ttft_s": pa.array(ttft, mask=failed),
        "e2e_s": pa.array(e2e, mask=failed),
        # an answer ends with its last token; an error reaches the client about when a first
        # token would have. Evenly spaced runs leave it out (as records written before the
        # column did), so they are placed by send time and hand-worked counts stay exact.
        "done_s": pa.array(np.where(failed, ttft, e2e), mask=np.full(n, arrivals == "uniform")),
        "tpot_s": pa.array(tpot, mask=failed | np.isnan(tpot)),
        "itl_s": pa.ListArray.from_arrays(pa.array(offsets), pa.array(itl_values)),
        "prompt_tokens": prompt_tokens,
        "output_tokens": np.where(failed, 0, out_tokens),
        "token_source": ["usage"] * n,
        "status": np.where(ok, "ok", "error").tolist(),
        "http_status": np.where(ok, 200, http),
        "error_kind": pa.array(kind.tolist(), type=pa.string(), mask=ok),
        "error_detail": pa.array([f"HTTP {h}" for h in http.tolist()], type=pa.string(), mask=ok),
        "served_by": pa.array(served.tolist(), type=pa.string(), mask=failed),
        "cached": cached & ok,
        "degraded": degraded & ok,
        "intended_prompt_tokens": prompt_tokens,
        "served_prompt_tokens": pa.array(prompt_tokens, type=pa.int64(), mask=failed),
        "length_source": ["tokenize"] * n,
        "length_capped": np.zeros(n, dtype=bool),
        "session": pa.nulls(n, pa.string()),  # no conversations
        "turn": pa.nulls(n, pa.int64()),
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in REQUEST_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=REQUEST_SCHEMA)


def _write_chunks(folder: Path, table: pa.Table, started_at: float, chunk_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = table.column("t_sent").to_numpy()
    index = ((t - started_at) // chunk_s).astype(np.int64)
    for k in np.unique(index):
        rows = np.flatnonzero(index == k)
        part = table.take(pa.array(rows))
        pq.write_table(part, folder / f"chunk-{int(k):04d}.parquet")


def _event(t: float, source: str, kind: str, name: str, action: str, **detail: Any) -> str:
    event = {
        "t": t,
        "source": source,
        "kind": EventKind(kind).value,  # only kinds the real writers write
        "name": name,
        "action": action,
        "detail": detail,
    }
    return json.dumps(event)


def _write_events(
    path: Path, started_at: float, ended_at: float, warmup_s: float, faults: list[dict]
) -> None:
    s = started_at
    lines = [
        _event(s - 5, "supervisor", "stack", "synthetic", "start"),
        *(
            _event(s - 2, "supervisor", "ready", r, "instant", pid=1000 + i)
            for i, r in enumerate(REPLICAS)
        ),
        _event(s, "harness", "run", "synthetic", "start", t0=s),
    ]
    if faults:
        lines.append(_event(s + warmup_s, "experiments", "experiment", EXPERIMENT, "start"))
    for fault in faults:
        name, activity = fault["name"], fault.get("activity", "disable_proxy")
        t0, t1 = s + fault.get("start", 0), s + fault.get("end", ended_at - s)
        lines += [
            _event(
                t0, "experiments", "fault", name, "start", experiment=EXPERIMENT, activity=activity
            ),
            _event(
                t1, "experiments", "fault", name, "end", experiment=EXPERIMENT, activity=activity
            ),
        ]
        if fault.get("kill"):
            back = t0 + fault.get("restart_after_s", 5.0)
            lines += [
                _event(
                    t0 + 0.1,
                    "supervisor",
                    "exit",
                    fault["kill"],
                    "instant",
                    code=-9,
                    restart_in_s=back - t0,
                ),
                _event(back, "supervisor", "restart", fault["kill"], "instant", attempt=2),
            ]
    if faults:
        lines.append(_event(ended_at - 1, "experiments", "experiment", EXPERIMENT, "end"))
    lines.append(_event(ended_at, "harness", "run", "synthetic", "end"))
    order = sorted(range(len(lines)), key=lambda i: json.loads(lines[i])["t"])
    path.write_text("".join(lines[i] + "\n" for i in order), encoding="utf-8")


def _write_metrics(
    path: Path,
    table: pa.Table,
    started_at: float,
    ended_at: float,
    faults: list[dict],
    rng: np.random.Generator,
) -> None:
    seconds = np.arange(math.floor(started_at), math.ceil(ended_at) + 1, 1.0)
    sent = table.column("t_sent").to_numpy()
    e2e = table.column("e2e_s").to_numpy(zero_copy_only=False)
    done = sent + np.nan_to_num(e2e, nan=0.05)
    served = np.array(table.column("served_by").to_pylist(), dtype=object)
    breaker_open = np.zeros(len(seconds), dtype=bool)
    for fault in faults:
        if fault.get("served_by") == "fallback":
            t0 = started_at + fault.get("start", 0) + fault.get("failover_after_s", 1.0)
            breaker_open |= (seconds >= t0) & (seconds < started_at + fault.get("end", 0))
    rows: list[tuple[float, str, str, str, float]] = []
    for replica in REPLICAS:
        mine = served == replica
        s_sorted, d_sorted = np.sort(sent[mine]), np.sort(done[mine])
        running = np.searchsorted(s_sorted, seconds) - np.searchsorted(d_sorted, seconds)
        waiting = rng.poisson(0.2, len(seconds))
        kv = np.clip(running / 64 + rng.normal(0, 0.01, len(seconds)), 0, 1)
        p95 = np.full(len(seconds), 0.21) + rng.normal(0, 0.01, len(seconds))
        labels = json.dumps({"model_name": "synthetic"}, sort_keys=True)
        for metric, values in (
            ("vllm:num_requests_running", running),
            ("vllm:num_requests_waiting", waiting),
            ("vllm:kv_cache_usage_perc", kv),
            ("vllm:time_to_first_token_seconds:p95", p95),
        ):
            rows += [
                (t, replica, metric, labels, float(v)) for t, v in zip(seconds, values, strict=True)
            ]
    for dependency in (*REPLICAS, "fallback", "retriever"):
        labels = json.dumps({"dependency": dependency}, sort_keys=True)
        state = np.where(breaker_open & (dependency in REPLICAS), 2.0, 0.0)
        rows += [
            (t, "gateway", "gateway_breaker_state", labels, float(v))
            for t, v in zip(seconds, state, strict=True)
        ]
    in_flight = np.searchsorted(np.sort(sent), seconds) - np.searchsorted(np.sort(done), seconds)
    rows += [
        (t, "gateway", "gateway_in_flight", "{}", float(v))
        for t, v in zip(seconds, in_flight, strict=True)
    ]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in METRICS_SCHEMA]
    arrays = [pa.array(list(c), type=f.type) for c, f in zip(columns, METRICS_SCHEMA, strict=True)]
    pq.write_table(pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA), path)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _journal(started_at: float, ended_at: float, faults: list[dict], status: str) -> dict:
    def activity(fault: dict, rollback: bool) -> dict:
        name = "enable_proxy" if rollback else fault.get("activity", "disable_proxy")
        t = started_at + (fault.get("end", 0) if rollback else fault.get("start", 0))
        return {
            "activity": {
                "type": "action",
                "name": name,
                "provider": {
                    "type": "python",
                    "module": "aichaos.experiments.actions",
                    "func": name,
                    "arguments": {"proxy": fault["name"]},
                },
            },
            "output": None,
            "status": "succeeded",
            "start": _iso(t),
            "end": _iso(t + 0.01),
            "duration": 0.01,
        }

    return {
        "chaoslib-version": "1.44.0",
        "platform": "synthetic",
        "node": "localhost",
        "experiment": {
            "title": EXPERIMENT,
            "description": "synthetic faults for tests",
            "method": [activity(f, False)["activity"] for f in faults],
            "rollbacks": [activity(f, True)["activity"] for f in faults],
        },
        "start": _iso(started_at),
        "status": "completed" if status == "completed" else "aborted",
        "deviated": False,
        "steady_states": {"before": None, "after": None, "during": []},
        "run": [activity(f, False) for f in faults],
        "rollbacks": [activity(f, True) for f in faults],
        "end": _iso(ended_at),
        "duration": ended_at - started_at,
    }
