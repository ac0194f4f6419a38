"""How exact is aichaos's load generator, and up to which rate? Against two peers.

Against the simulator's ``fixed-latency`` profile (TTFT 100 ms, 10 ms per token, 50 tokens;
its own process on loopback), the same Poisson schedule at each rate is sent by:

- ``aichaos-w1`` / ``aichaos-w2``: the LoadRunner with 1 and 2 Locust worker processes;
- ``locust-httpuser``: a plain Locust ``HttpUser`` streaming loop, as one would write it
  (python-requests, ``iter_lines``; each user takes the next arrival, sleeps to its time);
- ``aiohttp``: an asyncio/aiohttp client timing requests the way ``vllm bench serve`` does
  (a task per arrival, ``async for line in response.content``, ``perf_counter``).

For each: TTFT error (measured − 100 ms), ITL error (measured − 10 ms), schedule lag
(t_sent − t_scheduled), peak concurrent streams. Every client sends ``X-Request-Id`` and the
simulator logs what it served per request (``--request-log``), so the "net" TTFT error is
each reading minus the server's own TTFT for that same request (the simulator's late timers
cancel out), minus the floor: the same difference for a bare blocking socket at no load
(loopback and the server's HTTP parsing, which no client can avoid). "Honest"
= net TTFT error < 1 ms p50 and < 5 ms p99 and lag p99 < 5 ms; the gross error against the
configured 100 ms is shown beside it.

    .venv/bin/python bench/bench_load.py [--rates 25,50,75,100] [--duration 8] [--repeat 3]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CONFIGURED_TTFT, CONFIGURED_ITL, TOKENS = 0.1, 0.01, 50


# ----------------------------------------------------------------- peer: plain Locust HttpUser
def plain_locust(cfg_path: str) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from locust import HttpUser, task
    from locust.env import Environment
    from locust.exception import StopUser

    cfg = json.loads(Path(cfg_path).read_text())
    times, t0 = cfg["times"], cfg["t0"]
    perf_t0 = time.perf_counter() + (t0 - time.time())
    state = {"next": 0}
    rows: list[dict] = []
    body = cfg["body"]

    class StreamUser(HttpUser):
        host = cfg["url"]

        @task
        def one(self) -> None:
            i = state["next"]
            if i >= len(times):
                raise StopUser()
            state["next"] += 1
            wait = perf_t0 + times[i] - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            start = time.perf_counter()
            first = last = None
            itl = []
            rid = f"{cfg['prefix']}-{i}"
            with self.client.post("/v1/chat/completions", json=body, stream=True,
                                  headers={"X-Request-Id": rid},
                                  catch_response=True) as resp:  # fmt: skip
                for line in resp.iter_lines():
                    if line.startswith(b"data: {") and b'"content":"' in line:
                        if b'"content":""' in line:
                            continue
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        else:
                            itl.append(now - last)
                        last = now
                resp.success()
            ttft = None if first is None else first - start
            rows.append({"id": rid, "lag": start - (perf_t0 + times[i]), "start": start,
                         "end": last, "ttft": ttft, "itl": itl})  # fmt: skip

    env = Environment(user_classes=[StreamUser])
    runner = env.create_local_runner()
    users = cfg["users"]
    runner.start(users, spawn_rate=users)
    deadline = time.monotonic() + cfg["duration"] + 30
    while len(rows) < len(times) and time.monotonic() < deadline:
        gevent.sleep(0.2)
    runner.quit()
    Path(cfg["out"]).write_text(json.dumps(rows))


# ------------------------------------------------------------ peer: aiohttp, vllm bench style
def aiohttp_client(cfg_path: str) -> None:
    import asyncio

    import aiohttp

    cfg = json.loads(Path(cfg_path).read_text())
    rows: list[dict] = []

    async def one(session: aiohttp.ClientSession, due: float, rid: str) -> None:
        start = time.perf_counter()
        ttft, itl, recent = None, [], start
        url, headers = cfg["url"] + "/v1/chat/completions", {"X-Request-Id": rid}
        async with session.post(url, json=cfg["body"], headers=headers) as resp:
            async for chunk_bytes in resp.content:
                chunk_bytes = chunk_bytes.strip()
                if not chunk_bytes:
                    continue
                chunk = chunk_bytes.decode("utf-8").removeprefix("data: ")
                if chunk == "[DONE]":
                    continue
                timestamp = time.perf_counter()
                data = json.loads(chunk)
                choices = data.get("choices")
                if choices and choices[0]["delta"].get("content"):
                    if ttft is None:
                        ttft = timestamp - start
                    else:
                        itl.append(timestamp - recent)
                    recent = timestamp
        rows.append({"id": rid, "lag": start - due, "ttft": ttft, "itl": itl, "start": start,
                     "end": recent})  # fmt: skip

    async def main() -> None:
        perf_t0 = time.perf_counter() + (cfg["t0"] - time.time())
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=6 * 60 * 60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            for i, t in enumerate(cfg["times"]):
                wait = perf_t0 + t - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                rid = f"{cfg['prefix']}-{i}"
                tasks.append(asyncio.create_task(one(session, perf_t0 + t, rid)))
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    Path(cfg["out"]).write_text(json.dumps(rows))


# ---------------------------------------------------------------------------------- the bench
def _stats(rows: list[dict], served: dict[str, dict], floor: float) -> dict:
    import numpy as np

    ok = [r for r in rows if r.get("ttft") is not None]
    ttft = np.asarray([r["ttft"] for r in ok]) - CONFIGURED_TTFT
    itl = np.concatenate([np.asarray(r["itl"], dtype=float) for r in ok]) - CONFIGURED_ITL
    lag = np.asarray([r["lag"] for r in rows])
    out = {
        "requests": len(rows),
        "ok": len(ok),
        "ttft_err_p50_ms": float(np.percentile(ttft, 50) * 1000),
        "ttft_err_p99_ms": float(np.percentile(ttft, 99) * 1000),
        "itl_err_p50_ms": float(np.percentile(itl, 50) * 1000),
        "itl_err_p99_ms": float(np.percentile(itl, 99) * 1000),
        "lag_p50_ms": float(np.percentile(lag, 50) * 1000),
        "lag_p99_ms": float(np.percentile(lag, 99) * 1000),
    }
    # peak number of streams open at once
    edges = sorted([(r["start"], 1) for r in ok] + [(r["end"], -1) for r in ok])
    out["peak_streams"] = int(max(np.cumsum([e[1] for e in edges]))) if edges else 0
    joined = [r["ttft"] - served[r["id"]]["ttft_s"] - floor for r in ok if r["id"] in served]
    out["joined"] = len(joined)
    net = np.asarray(joined) * 1000
    out["net_ttft_err_p50_ms"] = float(np.percentile(net, 50))
    out["net_ttft_err_p99_ms"] = float(np.percentile(net, 99))
    return out


def _honest(s: dict, net: bool) -> bool:
    key = "net_ttft_err" if net else "ttft_err"
    return (
        s["ok"] == s["requests"] == s["joined"] > 0
        and abs(s[f"{key}_p50_ms"]) < 1.0
        and s[f"{key}_p99_ms"] < 5.0
        and s["lag_p99_ms"] < 5.0
    )


def _aichaos_rows(run_dir: Path) -> list[dict]:
    from aichaos.rundir import read_requests

    df = read_requests(run_dir)[0].to_pandas()
    return [
        {
            "id": r.request_id,
            "lag": r.t_sent - r.t_scheduled,
            "ttft": r.ttft_s if r.status == "ok" else None,
            "itl": list(r.itl_s),
            "start": r.t_sent,
            "end": r.t_sent + (r.e2e_s if r.e2e_s == r.e2e_s else 0.0),
        }
        for r in df.itertuples()
    ]


def bench(rates: list[float], duration: float, out_dir: Path, repeat: int = 1) -> list[dict]:
    import subprocess

    from aichaos.scenarios.calibrate import calibration_scenario, floor_s, read_served, run_once
    from aichaos.scenarios.schedule import build_schedule

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import SimProcess

    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "served.jsonl"
    log.unlink(missing_ok=True)
    sim = SimProcess(["--profile", "fixed-latency", "--request-log", str(log)], out_dir / "sim.log")
    results = []
    try:
        floor = floor_s(sim.url, log)
        print(f"floor (bare socket minus served, median): {floor * 1000:.2f} ms", flush=True)
        body = {"messages": [{"role": "user", "content": "x " * 64}], "max_tokens": TOKENS,
                "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        for rate in rates:
            scenario = calibration_scenario(rate, duration, output_tokens=TOKENS)
            times = build_schedule(scenario).t.tolist()
            cells: dict[str, list[dict]] = {}
            # repetitions interleave the clients, so a slow spell of the shared machine does
            # not land on one client only; each statistic is the median over repetitions
            for rep, client in [(r, c) for r in range(repeat) for c in CLIENTS]:
                run_dir = out_dir / f"{client}-{rate:g}-{rep}"
                start, offset = time.time(), log.stat().st_size if log.exists() else 0
                if client.startswith("aichaos"):
                    workers = int(client[-1])
                    run_once(scenario, sim.url, run_dir, workers=workers)
                    rows = _aichaos_rows(run_dir)
                else:
                    run_dir.mkdir(parents=True, exist_ok=True)
                    cfg = {"url": sim.url, "times": times, "t0": time.time() + 3.5,
                           "body": body, "duration": duration, "out": str(run_dir / "rows.json"),
                           "prefix": run_dir.name,
                           # enough users for every stream the schedule keeps open
                           "users": int(rate * 0.6 * 2) + 20}  # fmt: skip
                    (run_dir / "cfg.json").write_text(json.dumps(cfg))
                    mode = "_plain" if client == "locust-httpuser" else "_aiohttp"
                    subprocess.run([sys.executable, __file__, mode, str(run_dir / "cfg.json")],
                                   timeout=duration + 90, check=True)  # fmt: skip
                    rows = json.loads((run_dir / "rows.json").read_text())
                s = {"client": client, "rate": rate, "scheduled": len(times),
                     "wall_s": round(time.time() - start, 1),
                     **_stats(rows, read_served(log, offset), floor)}  # fmt: skip
                print(json.dumps(s), flush=True)
                cells.setdefault(client, []).append(s)
            for client in CLIENTS:
                s = _median_cell(cells[client])
                s["honest"], s["honest_net"] = _honest(s, False), _honest(s, True)
                results.append(s)
    finally:
        sim.stop()
    (out_dir / "results.json").write_text(json.dumps({"floor_s": floor, "results": results},
                                                      indent=2))  # fmt: skip
    _table(results)
    return results


CLIENTS = ("aichaos-w1", "aichaos-w2", "locust-httpuser", "aiohttp")


def _median_cell(runs: list[dict]) -> dict:
    import numpy as np

    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float) and key != "rate":
            out[key] = float(np.median([r[key] for r in runs]))
    out["ok"] = min(r["ok"] for r in runs)
    out["joined"] = min(r["joined"] for r in runs)
    out["peak_streams"] = max(r["peak_streams"] for r in runs)
    out["repeats"] = len(runs)
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _table(results: list[dict]) -> None:
    print(
        "| rate | client | ok/scheduled | streams | TTFT err p50 / p99 ms | net p50 / p99 ms "
        "| ITL err p50 / p99 ms | lag p50 / p99 ms | honest (net) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|:---:|")
    for s in results:
        print(f"| {s['rate']:g} | {s['client']} | {s['ok']}/{s['scheduled']} | {s['peak_streams']} "
              f"| {s['ttft_err_p50_ms']:.2f} / {s['ttft_err_p99_ms']:.2f} "
              f"| {s['net_ttft_err_p50_ms']:.2f} / {s['net_ttft_err_p99_ms']:.2f} "
              f"| {s['itl_err_p50_ms']:.2f} / {s['itl_err_p99_ms']:.2f} "
              f"| {s['lag_p50_ms']:.2f} / {s['lag_p99_ms']:.2f} "
              f"| {_yes(s['honest'])} ({_yes(s['honest_net'])}) |")  # fmt: skip
    clients = sorted({s["client"] for s in results})
    for c in clients:
        good = [s["rate"] for s in results if s["client"] == c and s["honest_net"]]
        print(f"{c}: highest honest (net) rate {max(good) if good else 'none'}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_plain":
        plain_locust(sys.argv[2])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "_aiohttp":
        aiohttp_client(sys.argv[2])
        return
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="10,20,40,80,120")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", default="/tmp/aichaos-bench-load")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    bench(rates, args.duration, Path(args.out), max(1, args.repeat))


if __name__ == "__main__":
    main()
