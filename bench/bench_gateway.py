"""What the gateway adds to TTFT: through the gateway minus straight to the replica.

One fixed-latency simulator (100 ms TTFT, no contention, so any difference is the gateway's),
one gateway in front of it (no retriever: retrieval is excluded, rate limits and shedding set
out of the way, every prompt unique so the cache never answers). A load client keeps N
streams busy (5 tokens each, re-issued when done) first straight at the simulator, then
through the gateway, alternating for 3 rounds; TTFT = send → first content chunk. Processes:
gateway on core 0; simulator and client on core 1 in both cases.

BENCH_TOKENS=N sets the answer length (default 5). Loopback only, bounded in time.
Run: cd bench && ../.venv/bin/python bench_gateway.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from bench_simulator import Server, free_port, pinned

GATEWAY_CONFIG = """
rate_limits_per_min: {free: 100000000, pro: 100000000, enterprise: 100000000}
shed_in_flight: {free: 100000, pro: 100000, enterprise: 100000}
"""


async def measure(url: str, streams: int, seconds: float) -> list[float]:
    ttfts: list[float] = []
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def one(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            body = {
                "messages": [{"role": "user", "content": f"question {next(counter)}"}],
                "max_tokens": int(os.environ.get("BENCH_TOKENS", "5")),
                "ignore_eos": True,
                "stream": True,
            }
            sent = time.perf_counter()
            async with session.post(
                f"{url}/v1/chat/completions", json=body, headers={"X-Tier": "enterprise"}
            ) as resp:
                first = None
                async for line in resp.content:
                    if first is None and b'"content":"' in line and b'"content":""' not in line:
                        first = time.perf_counter() - sent
                if first is not None:
                    ttfts.append(first)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.wait_for(
            asyncio.gather(*(one(session) for _ in range(streams))), seconds + 60
        )
    return ttfts


def client_main(args) -> None:
    import uvloop

    ttfts = uvloop.run(measure(args.url, args.streams, args.seconds))
    print(json.dumps(ttfts))


def run_client(url: str, streams: int, seconds: float) -> list[float]:
    cmd = [
        sys.executable,
        __file__,
        "client",
        "--url",
        url,
        "--streams",
        str(streams),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(
        pinned(1, cmd), capture_output=True, text=True, check=True, timeout=seconds + 120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def pct(data: list[float], q: int) -> float:
    """Exact percentile with linear interpolation (numpy's default), in ms."""
    return statistics.quantiles(data, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--streams", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--levels", default="50,200")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.cmd == "client":
        client_main(args)
        return
    sim_port, gw_port = free_port(), free_port()
    sim_cmd = [
        sys.executable,
        "-m",
        "aichaos.fixtures.llm_sim",
        "serve",
        "--port",
        str(sim_port),
        "--profile",
        "fixed-latency",
    ]
    sim = Server(sim_cmd, sim_port, core=1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(GATEWAY_CONFIG)
        gw = Server(
            [
                sys.executable,
                "-m",
                "aichaos.fixtures.gateway",
                "serve",
                "--port",
                str(gw_port),
                "--llm",
                f"r1={sim.url}",
                "--config",
                str(cfg),
            ],
            gw_port,
            core=0,
        )
        try:
            rows = []
            for streams in [int(x) for x in args.levels.split(",")]:
                direct, via = [], []
                for _ in range(args.rounds):
                    direct += run_client(sim.url, streams, args.seconds)
                    via += run_client(gw.url, streams, args.seconds)
                row = {"streams": streams, "requests": [len(direct), len(via)]}
                for q in (50, 99):
                    row[f"direct_p{q}_ms"] = pct(direct, q)
                    row[f"gateway_p{q}_ms"] = pct(via, q)
                    row[f"added_p{q}_ms"] = row[f"gateway_p{q}_ms"] - row[f"direct_p{q}_ms"]
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            gw.stop()
            sim.stop()


if __name__ == "__main__":
    main()
