"""Self-calibration: how exact is this machine's load generator, and up to which rate?

Runs the load runner against the simulator's ``fixed-latency`` profile (every request gets
``ttft_s`` to its first token and ``itl_s`` between tokens) at increasing rates, and reports
the measurement error of TTFT and ITL and the schedule lag (t_sent − t_scheduled) at each:
the honest ceiling of this load generator.

TTFT error is taken request by request against what the server says it served (its
``--request-log``, joined on ``X-Request-Id``), so the server's own late timers cancel out,
minus the floor: the same difference for a bare blocking socket at no load (loopback and the
server's HTTP parsing, which no client avoids). ITL error is against the configured ``itl_s``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from aichaos.rundir import read_requests
from aichaos.waiting import wait_until

from .runner import LoadRunner
from .spec import Scenario

FIXED_ITL_S = 0.01


def bare_socket_readings(url: str, n: int = 20, prefix: str = "bare", tokens: int = 5,
                         stop: threading.Event | None = None,
                         ) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(TTFT, E2E) by request id (``X-Request-Id: PREFIX-i``) of up to ``n`` sequential
    streams read by a bare blocking socket: the least any client on this machine can
    measure. ``stop`` ends the series early."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    fields = {"max_tokens": tokens, "ignore_eos": True, "stream": True}
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode()
    readings = {}
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        rid = f"{prefix}-{i}"
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"X-Request-Id: {rid}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            start = time.perf_counter()
            sock.sendall(request)
            buf, first, last = b"", None, None
            while b"data: [DONE]" not in buf:
                data = sock.recv(65536)
                if not data:
                    break
                now = time.perf_counter()
                if data.count(b'"content":"') > data.count(b'"content":""'):
                    first = first if first is not None else now
                    last = now
                buf += data
        if first is not None:
            readings[rid] = (first - start, last - start)
        time.sleep(0.05)
    return readings


def read_served(log: Path, offset: int = 0) -> dict[str, dict[str, Any]]:
    """The server's own account of each request (``ttft_s``, ``e2e_s``, ``output_tokens``),
    by request id, from its ``--request-log`` lines after ``offset``."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    return {line["request_id"]: line for line in lines}


def floor_s(url: str, log: Path, n: int = 40) -> float:
    """Median of (bare-socket TTFT − served TTFT) at no load: what no client can go under."""
    readings = bare_socket_readings(url, n, prefix="floor")
    served = read_served(log)

    def all_served() -> bool:  # the server writes its line when the stream has ended
        nonlocal served
        served = read_served(log)
        return readings.keys() <= served.keys()

    wait_until(all_served, 5)
    gaps = [readings[rid][0] - served[rid]["ttft_s"] for rid in readings if rid in served]
    return float(np.median(gaps))


def calibration_scenario(rate: float, duration_s: float, output_tokens: int = 50,
                         prompt_tokens: int = 64, seed: int = 1,
                         process: str = "poisson") -> Scenario:  # fmt: skip
    return Scenario.from_dict(
        {
            "name": f"calibrate-{rate:g}",
            "duration": duration_s,
            "seed": seed,
            "arrival": {"process": process},
            "rate": {"shape": "constant", "rps": rate},
            "tiers": [{"name": "calibrate", "share": 1.0, "headers": {}}],
            "workload": {"prompt_tokens": prompt_tokens, "output_tokens": output_tokens},
        }
    )


def run_once(scenario: Scenario, target: str, run_dir: Path, workers: int = 1,
             name: str = "load") -> int:  # fmt: skip
    runner = LoadRunner(scenario, target, run_dir, workers=workers, name=name)
    runner.start()
    limit = scenario.duration_s + scenario.target.timeout_s + 30.0 + 3 * workers
    code = runner.wait(timeout=limit, kill=True)
    return code


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def measure(run_dir: Path, served: dict[str, dict[str, Any]], floor: float = 0.0,
            itl_s: float = FIXED_ITL_S,
            duration_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Errors against what the server served (TTFT) and configured (ITL), schedule lag and
    peak concurrency."""
    table, _ = read_requests(run_dir)
    df = table.to_pandas()
    ok = df[df.status == "ok"]
    joined = ok[ok.request_id.isin(served.keys())]
    theirs = joined.request_id.map(lambda rid: served[rid]["ttft_s"]).to_numpy(dtype=float)
    ttft_err = joined.ttft_s.to_numpy(dtype=float) - theirs - floor
    itl = np.concatenate([np.asarray(x, dtype=float) for x in ok.itl_s]) if len(ok) else []
    itl_err = np.asarray(itl, dtype=float) - itl_s
    lag = (df.t_sent - df.t_scheduled).to_numpy(dtype=float) if len(df) else np.zeros(0)
    streams = 0
    if len(ok):
        # peak number of streams open at once, from send and end times
        starts = ok.t_sent.to_numpy(dtype=float)
        ends = starts + ok.e2e_s.to_numpy(dtype=float)
        edges = np.concatenate((np.stack([starts, np.ones(len(starts))], 1),
                                np.stack([ends, -np.ones(len(ends))], 1)))  # fmt: skip
        edges = edges[np.lexsort((edges[:, 1], edges[:, 0]))]
        streams = int(np.max(np.cumsum(edges[:, 1])))
    cpu = []
    for path in (Path(run_dir) / "load").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                cpu.append(json.loads(line)["cpu_percent"])
            except (ValueError, KeyError):
                continue
    return {
        "requests": len(df),
        "ok": len(ok),
        "joined": len(joined),
        "errors": int((df.status != "ok").sum()) if len(df) else 0,
        "achieved_rps": len(df) / duration_s if duration_s else None,
        "ttft_err_p50_s": _pct(ttft_err, 50),
        "ttft_err_p99_s": _pct(ttft_err, 99),
        "itl_err_p50_s": _pct(itl_err, 50),
        "itl_err_p99_s": _pct(itl_err, 99),
        "lag_p50_s": _pct(lag, 50),
        "lag_p99_s": _pct(lag, 99),
        "peak_streams": streams,
        "cpu_max_percent": max(cpu) if cpu else None,
        "tokens_match": bool((ok.output_tokens == ok.output_tokens.iloc[0]).all())
        if len(ok)
        else False,
    }


def honest(m: dict[str, Any], ttft_p50: float = 0.001, ttft_p99: float = 0.005,
           lag_p99: float = 0.005) -> bool:  # fmt: skip
    """The bench's criterion: TTFT error < 1 ms p50, < 5 ms p99; schedule lag p99 < 5 ms."""
    if not m["ok"] or m["errors"] or m["joined"] < m["ok"]:
        return False
    return (
        abs(m["ttft_err_p50_s"]) < ttft_p50
        and m["ttft_err_p99_s"] < ttft_p99
        and m["lag_p99_s"] < lag_p99
    )


def sweep(target: str, log: Path, rates: list[float], out_dir: Path, duration_s: float = 8.0,
          workers: int = 1, on_step: Any = None,
          floor: float = 0.0) -> list[dict[str, Any]]:  # fmt: skip
    """One calibration run per rate against ``target``, a fixed-latency simulator writing its
    per-request log to ``log``."""
    rows = []
    for rate in rates:
        scenario = calibration_scenario(rate, duration_s)
        run_dir = out_dir / f"rate-{rate:g}-w{workers}"
        start, offset = time.time(), log.stat().st_size if log.exists() else 0
        code = run_once(scenario, target, run_dir, workers=workers)
        row = {"rate": rate, "workers": workers, "exit_code": code}
        m = measure(run_dir, read_served(log, offset), floor, duration_s=duration_s)
        row.update(m, wall_s=time.time() - start)
        rows.append(row)
        if on_step is not None:
            on_step(row)
    return rows
