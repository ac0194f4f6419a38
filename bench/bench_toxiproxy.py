"""Overhead of the Toxiproxy-compatible proxy with no toxic, against a direct connection.

Three processes on loopback: a TCP echo server, ``aichaos toxiproxy serve`` with one proxy
in front of it, and this load generator (uvloop). For 1, 100 and 500 concurrent connections,
in the same run, direct and through the proxy:

- latency: each connection sends a 64-byte message and waits for its echo, paced so all
  connections together send ``--rate`` messages a second; p50 and p99 of the round trip, and
  what the proxy adds to each (proxied percentile minus direct percentile);
- throughput: each connection streams 64 KiB writes (at most 256 KiB in flight) and reads
  the echo back as fast as it can; MB/s of echoed payload;
- new connections: each worker connects, exchanges one byte and closes, in a loop;
  connections per second.

Throughput and connection rate alternate direct and proxied in ``--rounds`` short rounds and
report the median round, so a neighbour's burst of CPU does not land on one side only.

Every phase is bounded in time (``--seconds``) and in count. Run:

    .venv/bin/python bench/bench_toxiproxy.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
MESSAGE = 64
BLOCK = 64 * 1024
WINDOW = 256 * 1024  # bytes in flight per connection in the throughput phase
MAX_EVENTS = 2_000_000  # an upper bound on any per-phase loop


def run(main) -> object:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- the echo server (run as a child process: ``bench_toxiproxy.py --echo``) ----------------


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):  # a client that does not read must not grow our buffers
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()

    def eof_received(self):
        return False


async def echo_main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, LOOPBACK, 0, backlog=4096)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


# --- child processes -------------------------------------------------------------------------


def spawn(cmd: list[str], pattern: str, timeout: float = 20.0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        match = re.search(pattern, line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError(f"{cmd[:4]} did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


# --- load ------------------------------------------------------------------------------------


class Pinger(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.pending = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.pending -= len(data)
        if self.pending <= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def ping(self, payload: bytes) -> float:
        self.waiter = asyncio.get_running_loop().create_future()
        self.pending = len(payload)
        start = time.perf_counter()
        self.transport.write(payload)
        await self.waiter
        return time.perf_counter() - start


async def open_many(port: int, count: int, factory) -> list:
    loop = asyncio.get_running_loop()
    protocols = []
    for first in range(0, count, 100):  # in batches: the listen backlog is finite
        batch = [
            loop.create_connection(factory, LOOPBACK, port)
            for _ in range(first, min(count, first + 100))
        ]
        protocols += [proto for _, proto in await asyncio.gather(*batch)]
    return protocols


async def latency(port: int, conns: int, rate: float, seconds: float) -> list[float]:
    pingers = await open_many(port, conns, Pinger)
    interval = conns / rate
    payload = b"x" * MESSAGE
    # One unrecorded round trip each, so the proxy has accepted every connection and
    # connected its upstream before the clock starts (connection set-up is measured apart).
    await asyncio.wait_for(asyncio.gather(*(p.ping(payload) for p in pingers)), 30)
    samples: list[float] = []
    end = time.perf_counter() + seconds

    async def worker(p: Pinger) -> None:
        next_send = time.perf_counter() + random.uniform(0, interval)
        for _ in range(MAX_EVENTS):
            delay = next_send - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() >= end:
                return
            samples.append(await p.ping(payload))
            next_send += interval

    await asyncio.wait_for(asyncio.gather(*(worker(p) for p in pingers)), seconds + 30)
    for p in pingers:
        p.transport.close()
    return samples


class Streamer(asyncio.Protocol):
    """Streams 64 KiB writes with at most ``WINDOW`` bytes not yet echoed back, as a
    windowed transfer does; unbounded in-flight data would measure the kernel's memory
    pressure rather than the proxy."""

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter
        self.outstanding = 0
        self.paused = False
        self.running = True

    def connection_made(self, transport):
        self.transport = transport
        self.fill()

    def fill(self) -> None:
        block = b"y" * BLOCK
        while self.running and not self.paused and self.outstanding + BLOCK <= WINDOW:
            self.transport.write(block)
            self.outstanding += BLOCK

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.fill()

    def data_received(self, data):
        self.counter[0] += len(data)
        self.outstanding -= len(data)
        self.fill()


async def throughput(port: int, conns: int, seconds: float) -> float:
    counter = [0]
    streamers = await open_many(port, conns, lambda: Streamer(counter))
    await asyncio.sleep(min(0.5, seconds / 4))  # warm up
    start_bytes, start = counter[0], time.perf_counter()
    await asyncio.sleep(seconds)
    moved = counter[0] - start_bytes
    elapsed = time.perf_counter() - start
    for s in streamers:
        s.running = False
        s.transport.abort()
    return moved / elapsed / 1e6


async def connection_rate(port: int, conns: int, seconds: float) -> float:
    done = [0]
    end = time.perf_counter() + seconds

    async def worker() -> None:
        for _ in range(MAX_EVENTS):
            if time.perf_counter() >= end:
                return
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"z")
            await reader.readexactly(1)
            writer.close()
            await writer.wait_closed()
            done[0] += 1

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conns))), seconds + 30)
    return done[0] / (time.perf_counter() - start)


# --- report ----------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version()}


async def measure(direct: int, proxied: int, args: argparse.Namespace) -> list[dict]:
    ports = (("direct", direct), ("proxy", proxied))
    rows = []
    for conns in args.conns:
        row: dict = {"conns": conns}
        for label, port in ports:
            samples = await latency(port, conns, args.rate, args.seconds)
            row[f"{label}_n"] = len(samples)
            row[f"{label}_p50_ms"] = percentile(samples, 0.5) * 1000
            row[f"{label}_p99_ms"] = percentile(samples, 0.99) * 1000
        # Throughput and connection rate drift with whatever else the machine runs, so direct
        # and proxied alternate in short rounds and each reports its median round.
        rounds: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for label, port in ports:
                mb_s = await throughput(port, conns, args.seconds / 2)
                rounds.setdefault(f"{label}_mb_s", []).append(mb_s)
                conn_s = await connection_rate(port, conns, args.seconds / 3)
                rounds.setdefault(f"{label}_conn_s", []).append(conn_s)
        row.update({key: statistics.median(values) for key, values in rounds.items()})
        row["added_p50_ms"] = row["proxy_p50_ms"] - row["direct_p50_ms"]
        row["added_p99_ms"] = row["proxy_p99_ms"] - row["direct_p99_ms"]
        row["throughput_ratio"] = row["proxy_mb_s"] / row["direct_mb_s"]
        row["conn_ratio"] = row["proxy_conn_s"] / row["direct_conn_s"]
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| conns | RTT p50 direct / proxy (ms) | RTT p99 direct / proxy (ms) | added p50 / p99 (ms)"
        " | MB/s direct / proxy (ratio) | new conn/s direct / proxy (ratio) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['conns']} | {r['direct_p50_ms']:.3f} / {r['proxy_p50_ms']:.3f}"
            f" | {r['direct_p99_ms']:.3f} / {r['proxy_p99_ms']:.3f}"
            f" | {r['added_p50_ms']:.3f} / {r['added_p99_ms']:.3f}"
            f" | {r['direct_mb_s']:.0f} / {r['proxy_mb_s']:.0f} ({r['throughput_ratio']:.0%})"
            f" | {r['direct_conn_s']:.0f} / {r['proxy_conn_s']:.0f} ({r['conn_ratio']:.0%}) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--conns", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--seconds", type=float, default=2.5, help="length of each phase")
    parser.add_argument("--rate", type=float, default=2000, help="latency phase: messages/s")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.echo:
        run(echo_main())
        return 0
    if not 0 < args.seconds <= 10 or any(not 0 < c <= 2000 for c in args.conns):
        parser.error("--seconds must be in (0, 10] and --conns in 1..2000")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in 1..10")

    echo, echo_port = spawn([sys.executable, __file__, "--echo"], r"ready (\d+)")
    cmd = [sys.executable, "-m", "aichaos.experiments.toxiproxy.cli", "serve", "--port", "0"]
    proxy_server, url = spawn(cmd, r"ready: (http://\S+)")
    try:
        import httpx

        body = {"name": "bench", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo_port}"}
        listen = httpx.post(f"{url}/proxies", json=body, timeout=10).json()["listen"]
        proxied = int(listen.rsplit(":", 1)[1])
        print(json.dumps(machine()))
        rows = run(measure(int(echo_port), proxied, args))
    finally:
        stop(proxy_server)
        stop(echo)
    print()
    print(table(rows))  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
