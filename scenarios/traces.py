"""Public LLM traffic traces, read into arrival times and token lengths.

- ``azure``: Azure LLM inference trace CSV, ``TIMESTAMP,ContextTokens,GeneratedTokens`` with
  ``TIMESTAMP`` a date-time (2023) or seconds.
- ``burstgpt``: BurstGPT CSV, ``Timestamp,Model,Request tokens,Response tokens,...`` with
  ``Timestamp`` in seconds.
- ``mooncake``: Mooncake JSONL, ``{"timestamp" (ms), "input_length", "output_length",
  "hash_ids"}``; every hash id names one shared block of prompt tokens (512 in the trace).

Times come back in seconds from the trace's first request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aichaos.rundir import InputError

TRACE_FORMATS = ("azure", "burstgpt", "mooncake")
MOONCAKE_BLOCK_TOKENS = 512


@dataclass
class Trace:
    t: np.ndarray  # seconds from the first request, ascending
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: list[list[int]] | None = None  # mooncake only


def read_trace(fmt: str, path: Path, file: str, field: str) -> Trace:
    if not path.is_file():
        raise InputError(file, field, "an existing trace file", str(path))
    try:
        trace = _mooncake(path) if fmt == "mooncake" else _csv(fmt, path)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InputError(path, fmt, f"a {fmt} trace ({_columns(fmt)})", str(exc)[:120]) from None
    if len(trace.t) == 0:
        raise InputError(path, fmt, "at least one request", "an empty trace")
    order = np.argsort(trace.t, kind="stable")
    trace.t = trace.t[order] - trace.t[order][0]
    trace.prompt_tokens = trace.prompt_tokens[order]
    trace.output_tokens = trace.output_tokens[order]
    if trace.hash_ids is not None:
        trace.hash_ids = [trace.hash_ids[i] for i in order]
    return trace


def _columns(fmt: str) -> str:
    return {
        "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
        "burstgpt": "Timestamp,Request tokens,Response tokens",
        "mooncake": "JSONL with timestamp,input_length,output_length,hash_ids",
    }[fmt]


def _csv(fmt: str, path: Path) -> Trace:
    import pandas as pd  # only for CSV traces: it is slow to import in every Locust process

    df = pd.read_csv(path)
    df.columns = [c.strip() for c in df.columns]
    if fmt == "azure":
        ts, prompt, output = df["TIMESTAMP"], df["ContextTokens"], df["GeneratedTokens"]
        if pd.api.types.is_numeric_dtype(ts):
            t = ts.to_numpy(dtype=float)
        else:
            stamps = pd.to_datetime(ts, format="mixed")
            t = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    else:
        t = df["Timestamp"].to_numpy(dtype=float)
        prompt, output = df["Request tokens"], df["Response tokens"]
    return Trace(t, prompt.to_numpy(dtype=np.int64), output.to_numpy(dtype=np.int64))


def _mooncake(path: Path) -> Trace:
    t, prompt, output, hashes = [], [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        t.append(float(row["timestamp"]) / 1000.0)
        prompt.append(int(row["input_length"]))
        output.append(int(row["output_length"]))
        hashes.append([int(h) for h in row.get("hash_ids", [])])
    return Trace(
        np.asarray(t, dtype=float),
        np.asarray(prompt, dtype=np.int64),
        np.asarray(output, dtype=np.int64),
        hashes,
    )


def window(trace: Trace, start_s: float, end_s: float | None, scale: float) -> Trace:
    """The requests in [start_s, end_s) of trace time, re-timed from the window's start and
    multiplied by ``scale`` (0.5 replays twice as fast)."""
    end = np.inf if end_s is None else end_s
    keep = (trace.t >= start_s) & (trace.t < end)
    idx = np.nonzero(keep)[0]
    return Trace(
        (trace.t[idx] - start_s) * scale,
        trace.prompt_tokens[idx],
        trace.output_tokens[idx],
        [trace.hash_ids[i] for i in idx] if trace.hash_ids is not None else None,
    )
