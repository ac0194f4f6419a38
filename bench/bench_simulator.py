"""How many concurrent streams and tokens/s one simulator process sustains on one core.

Part 1 (sustained): the simulator runs the 8B-H100 step-time coefficients (with room for
thousands of running sequences) pinned to core 0; a load client pinned to core 1 keeps N
streams open (completions, ignore_eos, 200-600 tokens each, re-issued when done; streams
start staggered over the warm-up so they do not all end and re-arrive in the same step).
For each N we read the simulator's step-clock lag (actual minus modelled step start) over the
steady state and count streamed tokens at the client. The answer is the largest N whose lag
p99 stays under 2 ms.

Part 2 (ceiling): the same client drives N streams against (a) the simulator with a flat 2 ms
step and (b) a minimal aiohttp server that writes the same SSE chunk to every stream every
2 ms with no engine, parsing or metrics. Tokens/s of (a) over (b) is the ratio.

Loopback only; every phase is bounded in time. Run: .venv/bin/python bench/bench_simulator.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
CHUNK = (
    b'data: {"id":"cmpl-0","object":"text_completion","created":0,"model":"bench","choices":'
    b'[{"index":0,"text":" token","logprobs":null,"finish_reason":null,"stop_reason":null}],'
    b'"usage":null}\n\n'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


# ----- the minimal ceiling server -------------------------------------------------------------


def ceiling_server(port: int, tick: float) -> None:
    from aiohttp import web

    state = {"future": None}

    async def ticker(app):
        loop = asyncio.get_running_loop()

        async def run():
            next_t = loop.time()
            while True:
                state["future"] = loop.create_future()
                next_t += tick
                await asyncio.sleep(max(0.0, next_t - loop.time()))
                state["future"].set_result(None)

        task = loop.create_task(run())
        yield
        task.cancel()

    async def handle(request):
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(body["max_tokens"]):
            await asyncio.shield(state["future"])
            await resp.write(CHUNK)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def health(request):
        return web.Response()

    app = web.Application()
    app.cleanup_ctx.append(ticker)
    app.router.add_post("/v1/completions", handle)
    app.router.add_get("/health", health)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ----- the load client ------------------------------------------------------------------------


def tokens_in(data: bytes) -> int:
    """Tokens in a piece of the SSE body. A stream that falls behind gets several tokens in
    one chunk (as vLLM's do), so chunks are not tokens: every token of the simulator's random
    text is one space-led word, and compact JSON has no other space than each ``data: ``."""
    return data.count(b" ") - data.count(b"data: ")


async def drive(url: str, streams: int, seconds: float, warmup: float, max_tokens: int) -> dict:
    """Keep ``streams`` streams open; count tokens received after the warm-up."""
    counted = {"tokens": 0, "events": 0, "errors": 0}
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    body = {"model": "bench", "prompt": "benchmark prompt", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True}  # fmt: skip
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)

    rng = random.Random(1)

    async def one_stream(session: aiohttp.ClientSession) -> None:
        # staggered starts and varied lengths, so streams do not all end (and re-arrive) at once
        await asyncio.sleep(rng.uniform(0, warmup * 0.8))
        while time.monotonic() < stop_at:
            body["max_tokens"] = rng.randint(max_tokens // 2, max_tokens * 3 // 2)
            try:
                async with session.post(f"{url}/v1/completions", json=body) as resp:
                    while True:
                        data = await resp.content.readany()
                        if not data:
                            break
                        if time.monotonic() >= measure_from:
                            counted["tokens"] += tokens_in(data)
                            counted["events"] += data.count(b"data: ")
                        if time.monotonic() >= stop_at:
                            return
            except (aiohttp.ClientError, TimeoutError):
                counted["errors"] += 1
                await asyncio.sleep(0.1)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one_stream(session)) for _ in range(streams)]
        await asyncio.sleep(warmup)
        await asyncio.wait(tasks, timeout=seconds + 30)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_s = {f"{k}_per_s": counted[k] / seconds for k in ("tokens", "events")}
    return {**per_s, "errors": counted["errors"]}


def client_main(args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(drive(args.url, args.streams, args.seconds, args.warmup, args.max_tokens))
    print(json.dumps(result))


# ----- orchestration --------------------------------------------------------------------------


class Server:
    def __init__(self, cmd: list[str], port: int, core: int = 0):
        self.url = f"http://127.0.0.1:{port}"
        self.admin_url = ""  # a simulator's fault API, set by sim_server
        self.proc = subprocess.Popen(pinned(core, cmd), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {cmd}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def sim_server(profile: str) -> Server:
    """A simulator; ``admin_url`` is its fault API's own port (never the serving one)."""
    port = free_port()
    admin_port = next(p for p in (free_port() for _ in range(20)) if p != port)
    cmd = [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--port", str(port),
           "--admin-port", str(admin_port),
           "--profile", str(HERE / "profiles" / f"{profile}.yaml"), "--model", "bench"]  # fmt: skip
    server = Server(cmd, port)
    server.admin_url = f"http://127.0.0.1:{admin_port}"
    return server


def run_client(url: str, streams: int, seconds: float, warmup: float, max_tokens: int,
               on_warm=None, on_end=None) -> dict:  # fmt: skip
    """Run the load client; ``on_warm`` when the warm-up ends, ``on_end`` just before the
    client stops (its 1000 disconnects at once are a shutdown, not the steady state)."""
    cmd = [sys.executable, __file__, "client", "--url", url, "--streams", str(streams),
           "--seconds", str(seconds), "--warmup", str(warmup),
           "--max-tokens", str(max_tokens)]  # fmt: skip
    proc = subprocess.Popen(pinned(1, cmd), stdout=subprocess.PIPE, text=True)
    ended = None
    if on_warm:
        time.sleep(warmup)
        on_warm()
    if on_end:
        time.sleep(max(0.0, seconds - 0.5))
        ended = on_end()
    out, _ = proc.communicate(timeout=seconds + warmup + 90)
    return {**json.loads(out.strip().splitlines()[-1]), "at_end": ended}


def sim_lag(admin_url: str) -> dict:
    import httpx

    return httpx.get(f"{admin_url}/admin/faults", timeout=10).json()["engine"]["step_lag"]


def reset_lag(admin_url: str) -> None:
    import httpx

    headers = {"Content-Type": "application/json"}  # the admin API changes state only for JSON
    httpx.post(f"{admin_url}/admin/step-lag/reset", headers=headers, timeout=10).raise_for_status()


def sustained(levels: list[int], seconds: float) -> list[dict]:
    rows = []
    for streams in levels:
        server = sim_server("bench-8b-h100-wide")
        try:
            got = run_client(server.url, streams, seconds, 3.0, 400,
                             on_warm=lambda s=server: reset_lag(s.admin_url),
                             on_end=lambda s=server: sim_lag(s.admin_url))  # fmt: skip
            lag = got.pop("at_end")
        finally:
            server.stop()
        row = {"streams": streams, **got, "lag_p50_ms": lag["p50_s"] * 1000,
               "lag_p99_ms": lag["p99_s"] * 1000, "steps": lag["steps"]}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def ceiling(streams: int, seconds: float) -> dict:
    sim = sim_server("bench-flat-out")
    try:
        got_sim = run_client(sim.url, streams, seconds, 3.0, 2000)
    finally:
        sim.stop()
    port = free_port()
    base = Server([sys.executable, __file__, "ceiling", "--port", str(port)], port)
    try:
        got_base = run_client(base.url, streams, seconds, 3.0, 2000)
    finally:
        base.stop()
    # the simulator, behind its 2 ms steps, merges a stream's tokens into one event as vLLM
    # does, while the ceiling server writes one token per event: events/s compares the writes
    row = {"streams": streams, "sim_tokens_per_s": got_sim["tokens_per_s"],
           "sim_events_per_s": got_sim["events_per_s"],
           "ceiling_tokens_per_s": got_base["tokens_per_s"],
           "ceiling_events_per_s": got_base["events_per_s"],
           "ratio": got_sim["tokens_per_s"] / max(got_base["tokens_per_s"], 1e-9),
           "events_ratio": got_sim["events_per_s"]
           / max(got_base["events_per_s"], 1e-9)}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--streams", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    c.add_argument("--warmup", type=float, required=True)
    c.add_argument("--max-tokens", type=int, required=True)
    s = sub.add_parser("ceiling")
    s.add_argument("--port", type=int, required=True)
    parser.add_argument("--levels", default="250,500,1000,1500,2000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ceiling-streams", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.cmd == "client":
        client_main(args)
        return
    if args.cmd == "ceiling":
        ceiling_server(args.port, 0.002)
        return
    levels = [int(x) for x in args.levels.split(",")]
    rows = sustained(levels, args.seconds)
    top = ceiling(args.ceiling_streams, args.seconds)
    ok = [r for r in rows if r["lag_p99_ms"] < 2.0 and not r["errors"]]
    best = max(ok, key=lambda r: r["streams"]) if ok else None
    summary = {"sustained": rows, "ceiling": top, "best": best}
    print(json.dumps({"best": best}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
