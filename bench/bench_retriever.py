"""Retrieval latency of the retriever on the shipped corpus: in process and over HTTP.

One ``python -m aichaos.fixtures.retriever serve`` process on loopback (pinned to core 0
when ``taskset`` is present; this client on core 1). Steps, in one run:

1. start it with an empty index cache (cold: builds the index) and again on that cache
   (warm: loads it) and time each start until ``/health`` answers;
2. ``--queries`` queries drawn with ``--seed`` from the corpus: half are chunk titles, half
   3–8 consecutive words of a chunk's text; ``k`` = 5;
3. in process: the same index loaded from the cache, each query through ``HybridIndex.search``;
4. over HTTP (aiohttp client, keep-alive): every query at concurrency 1, then at 8 (8
   workers share the query list); latency is send → full response, plus the server's own
   ``took_ms``.

Percentiles are exact, from the raw samples (numpy's linear interpolation). Every loop is
bounded by the query count, and every request by a timeout. Run (about 15 s):

    .venv/bin/python bench/bench_retriever.py            # add --json results.json to keep rows
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aichaos.fixtures.retriever import DEFAULT_CORPUS
from aichaos.fixtures.retriever.corpus import Chunk, load_corpus

LOOPBACK = "127.0.0.1"
K = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def pinned(core: int, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def sample_queries(chunks: list[Chunk], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    queries = []
    for i in range(n):
        chunk = rng.choice(chunks)
        if i % 2 == 0:
            queries.append(chunk.title)
        else:
            words = chunk.text.split()
            length = rng.randint(3, 8)
            start = rng.randrange(max(1, len(words) - length))
            queries.append(" ".join(words[start : start + length]))
    return queries


class Server:
    """The retriever as a child process; stopped by PID."""

    def __init__(self, cache: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        cmd = [sys.executable, "-m", "aichaos.fixtures.retriever", "serve", "--port",
               str(self.port), "--index-cache", str(cache)]  # fmt: skip
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self.proc = subprocess.Popen(pinned(0, cmd), stdout=self.log, stderr=subprocess.STDOUT)
        self.start_s = self._wait_ready(started, timeout=180)

    def _wait_ready(self, started: float, timeout: float) -> float:
        import urllib.request

        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"retriever exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"retriever not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def http_latencies(url: str, queries: list[str], concurrency: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    server_ms: list[float] = []
    position = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:

        async def one(query: str) -> None:
            started = time.perf_counter()
            async with session.post(f"{url}/search", json={"query": query, "k": K}) as resp:
                body = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"{query!r}: {resp.status} {body}")
            latencies.append(time.perf_counter() - started)
            server_ms.append(body["took_ms"])

        for query in queries[:20]:  # warm-up: connections, caches
            await one(query)
        latencies.clear()
        server_ms.clear()

        async def worker() -> None:
            nonlocal position
            while position < len(queries):  # bounded: each pass takes one query
                query = queries[position]
                position += 1
                await one(query)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"latency_s": latencies, "server_ms": server_ms, "wall_s": wall}


def pct(samples, q: float, scale: float = 1000.0) -> float:
    return float(np.percentile(np.asarray(samples), q)) * scale


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import bm25s
    import sklearn

    return (
        f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, bm25s {bm25s.__version__}, scikit-learn {sklearn.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the server runs on core 0
    chunks = load_corpus(DEFAULT_CORPUS)
    queries = sample_queries(chunks, args.queries, args.seed)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold = Server(cache, Path(tmp) / "cold.log")
        cold.stop()
        server = Server(cache, Path(tmp) / "warm.log")
        try:
            from aichaos.fixtures.retriever.index import HybridIndex

            (entry,) = cache.iterdir()
            index = HybridIndex.load(entry, chunks)
            for query in queries[:20]:
                index.search(query, K)
            times = []
            for query in queries:
                started = time.perf_counter()
                index.search(query, K)
                times.append(time.perf_counter() - started)
            rows.append({"where": "in process", "concurrency": 1, "n": len(times),
                         "p50_ms": pct(times, 50), "p99_ms": pct(times, 99),
                         "qps": len(times) / sum(times)})  # fmt: skip
            for level in [int(x) for x in args.concurrency.split(",")]:
                result = asyncio.run(http_latencies(server.url, queries, level))
                lat = result["latency_s"]
                rows.append({"where": "HTTP", "concurrency": level, "n": len(lat),
                             "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                             "server_p50_ms": pct(result["server_ms"], 50, 1.0),
                             "server_p99_ms": pct(result["server_ms"], 99, 1.0),
                             "qps": len(lat) / result["wall_s"]})  # fmt: skip
        finally:
            server.stop()
    print(f"machine: {machine()}")
    print(f"corpus: {len(chunks)} chunks; {len(queries)} queries, seed {args.seed}, k {K}")
    print(f"start: cold (build index) {cold.start_s:.2f} s, warm (load cache) "
          f"{server.start_s:.2f} s")  # fmt: skip
    print()
    print("| where | concurrency | queries | p50 (ms) | p99 (ms) | server search p50 / p99 (ms)"
          " | queries/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        server_ms = (f"{r['server_p50_ms']:.2f} / {r['server_p99_ms']:.2f}"
                     if "server_p50_ms" in r else "—")  # fmt: skip
        print(f"| {r['where']} | {r['concurrency']} | {r['n']} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {server_ms} | {r['qps']:.0f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows,
                                         "cold_start_s": cold.start_s,
                                         "warm_start_s": server.start_s}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
