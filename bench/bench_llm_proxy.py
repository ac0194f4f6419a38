"""What the embedded proxy adds to streaming chat requests, with and without an LLM toxic.

One run, three conditions against the same upstream, at ``--streams`` (100) concurrent
streaming chat requests:

1. ``direct``: straight to the upstream;
2. ``proxy``: through a proxy with no toxic (bytes pass unparsed: the fast path);
3. ``proxy+llm``: through a proxy carrying an LLM toxic (``first_token_delay``, delay
   1000 ms) at toxicity 0, so every request is parsed (h11) and drawn but none is hit, and
   every response passes unparsed.

Upstream: the project's simulator with the ``fixed-latency`` profile (TTFT 100 ms, one token
every 10 ms, no contention: its timings are known and its CPU cost per token is small).
Processes: two ``aichaos.experiments.toxiproxy serve`` processes (one per proxied condition,
so each one's CPU is its condition's alone), both pinned to core 0; the simulator and this
load client pinned to core 1.

Load: N streams, each sending a chat request (a unique prompt, ``max_tokens`` drawn from
``--tokens`` with ``ignore_eos``, ``stream: true``), reading it to its end and sending the
next; streams start staggered and answers vary in length, so the closed loop does not
re-issue in lockstep. The condition changes every ``--slot`` seconds (direct, proxy,
proxy+llm, rotated each cycle) without stopping the load: a request goes where the slot
current when it is sent says, over that condition's keep-alive connections (opened in the
warm-up). So every condition gets ``--seconds`` of measured time spread over the whole run,
and a burst of outside work on the machine lands on all three alike.

TTFT = send -> first read holding a non-empty ``content``, as ``bench_gateway.py`` measures
it (which reads lines; this reads whole chunks, to cost the shared core less).
Every request carries an ``X-Request-Id`` and the simulator logs the TTFT it served for it
(``--request-log``), so "net" TTFT = client TTFT minus served TTFT, request by request, as
``bench_load.py`` nets it: the path without the simulator's own timer jitter. "Added" = a
proxied condition's percentile minus direct's.

Other work on the machine: at the end of each slot the CPU time of the whole machine
(user, nice, system, steal) less that of the four processes of the benchmark gives the cores
other processes used; a slot is "quiet" when that was at most ``--quiet`` cores (0.1) in it
and in the next (a request sent late in a slot has its first token in the next), and the
latencies are given again over the requests sent in quiet slots only.

Proxy CPU: each proxy process's user+sys CPU seconds (psutil) over the measured window,
divided by the SSE events (``data:`` lines) the client received through it in that window,
and by the requests sent through it in that window.

Loopback only; every loop is bounded in count and time. Run (about 2.5 minutes):

    .venv/bin/python bench/bench_llm_proxy.py            # --quick: about 30 s
    .venv/bin/python bench/bench_llm_proxy.py --profile-proxy /tmp/prof  # under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import psutil
from bench_simulator import Server, free_port, pinned
from bench_toxiproxy import LOOPBACK, machine, percentile, run, spawn, stop

from aichaos.scenarios.calibrate import read_served

CONDITIONS = ("direct", "proxy", "proxy+llm")
PROXIED = CONDITIONS[1:]
TOXIC = {
    "name": "ftd",
    "type": "first_token_delay",
    "stream": "downstream",
    "toxicity": 0.0,
    "attributes": {"delay": 1000},
}
MAX_REQUESTS = 1_000_000  # per stream: a bound on the client loop
MAX_READS = 100_000  # per response
FIRST_TOKEN = re.compile(rb'"content":"[^"]')  # an SSE event with generated text
TARGET_ADDED_P99_MS = 1.0
TARGET_CPU_PER_EVENT_US = 10.0


# --- the load client (runs in this process, on core 1) ---------------------------------------


async def drive(urls: dict[str, str], args: argparse.Namespace,
                procs: dict[str, psutil.Process]) -> dict:  # fmt: skip
    """N streams for the whole run, sent to the condition of the current slot. Returns, per
    condition, the TTFT of each request sent in the measured window (by request id), the SSE
    events and requests of the window, and each process's CPU over the window."""
    rng = random.Random(1)
    lo, hi = args.tokens
    counter = iter(range(10**9))
    state = {"cond": CONDITIONS[0], "measuring": False, "done": False, "slot": -1}
    ttfts: dict[str, dict[str, tuple[float, int]]] = {c: {} for c in CONDITIONS}
    got = {c: {"events": 0, "requests": 0, "errors": 0, "no_token": 0} for c in CONDITIONS}
    slot = args.slot

    async def stream(sessions: dict[str, aiohttp.ClientSession]) -> None:
        await asyncio.sleep(rng.uniform(0, slot * 0.8))
        for _ in range(MAX_REQUESTS):
            if state["done"]:
                return
            cond = state["cond"]
            count = got[cond]
            rid = f"b-{next(counter)}"
            body = {
                "model": "fixed-latency",
                "messages": [{"role": "user", "content": f"question {rid}"}],
                "max_tokens": rng.randint(lo, hi),
                "ignore_eos": True,
                "stream": True,
            }
            measured, slot_at_send = state["measuring"], state["slot"]
            sent = time.perf_counter()
            first = None
            try:
                async with sessions[cond].post(
                    f"{urls[cond]}/v1/chat/completions", json=body, headers={"X-Request-Id": rid}
                ) as resp:
                    if resp.status != 200:
                        count["errors"] += 1
                        await resp.read()
                        continue
                    # whole reads, not lines (as bench_simulator.py reads): the client
                    # shares a core with the simulator and must cost it little
                    for _ in range(MAX_READS):
                        data = await resp.content.readany()
                        if not data:
                            break
                        if state["measuring"]:
                            count["events"] += data.count(b"data:")
                        if first is None and FIRST_TOKEN.search(data):
                            first = time.perf_counter() - sent
            except (aiohttp.ClientError, TimeoutError):
                count["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            if measured:
                count["requests"] += 1
                if first is None:
                    count["no_token"] += 1
                else:
                    ttfts[cond][rid] = (first, slot_at_send)

    def cpu() -> dict[str, tuple[float, float]]:
        return {k: tuple(p.cpu_times()[:2]) for k, p in procs.items()}  # type: ignore[misc]

    def machine_busy() -> tuple[float, float]:
        """CPU seconds of the whole machine (all cores): processes and steal, and
        interrupts (softirq: loopback delivery is partly accounted there, not to a process)."""
        t = psutil.cpu_times()
        irq = getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return t.user + t.nice + t.system + getattr(t, "steal", 0.0), irq

    def ours() -> float:
        return sum(sum(v) for v in cpu().values())

    outside: list[float] = []  # per slot: cores used by other processes
    irq_s = 0.0

    timeout = aiohttp.ClientTimeout(total=60, sock_read=30)
    sessions = {c: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=timeout) for c in CONDITIONS}  # fmt: skip
    tasks = [asyncio.create_task(stream(sessions)) for _ in range(args.streams)]
    try:
        # warm-up: each condition opens its connections (and streams de-phase), unmeasured
        for cond in CONDITIONS * args.warmup_cycles:
            state["cond"] = cond
            await asyncio.sleep(slot)
        n_cycles = round(args.seconds / slot)
        state["cond"], state["slot"] = CONDITIONS[0], 0
        cpu0, t0 = cpu(), time.perf_counter()
        busy0, ours0, at0 = machine_busy(), ours(), t0
        state["measuring"] = True
        for cycle in range(n_cycles):
            shift = cycle % len(CONDITIONS)
            for cond in CONDITIONS[shift:] + CONDITIONS[:shift]:
                state["cond"] = cond
                await asyncio.sleep(slot)
                state["slot"] += 1
                (busy1, irq1), ours1, at1 = machine_busy(), ours(), time.perf_counter()
                outside.append(max(0.0, (busy1 - busy0[0]) - (ours1 - ours0)) / (at1 - at0))
                irq_s += irq1 - busy0[1]
                busy0, ours0, at0 = (busy1, irq1), ours1, at1
        state["measuring"] = False
        cpu1, t1 = cpu(), time.perf_counter()
        state["done"] = True
        _, pending = await asyncio.wait(tasks, timeout=60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in sessions.values():
            await session.close()
    spent = {k: (cpu1[k][0] - cpu0[k][0], cpu1[k][1] - cpu0[k][1]) for k in procs}
    return {"ttfts": ttfts, "counts": got, "cpu": spent, "window_s": t1 - t0,
            "cycles": n_cycles, "unfinished": len(pending), "outside": outside,
            "irq_s": irq_s}  # fmt: skip


def net_ttfts(ttfts: dict[str, float], served: dict[str, dict]) -> list[float]:
    """Client TTFT minus the TTFT the simulator says it served, request by request (as
    ``bench_load.py`` nets it): what is left is the path (loopback, the proxy, HTTP
    parsing at both ends, the client's loop), without the simulator's timer jitter."""
    return [t - served[rid]["ttft_s"] for rid, t in ttfts.items()
            if rid in served and served[rid]["ttft_s"] is not None]  # fmt: skip


def quiet_slots(outside: list[float], limit: float) -> set[int]:
    """Slots in which other processes used at most ``limit`` cores, as did the next slot
    (a request sent late in a slot gets its first token in the next)."""
    n = len(outside)
    return {i for i in range(n) if outside[i] <= limit and (i + 1 == n or outside[i + 1] <= limit)}


def pct_ms(samples: list[float], q: int) -> float:
    """The q-th percentile in ms (exact, interpolated); NaN for no samples."""
    return percentile(samples, q / 100) * 1000 if samples else float("nan")


def latency(result: dict, served: dict[str, dict], slots: set[int] | None) -> dict[str, dict]:
    """TTFT and net TTFT percentiles per condition over the requests sent in ``slots`` (all
    when None), and what each proxied condition adds to direct's."""
    samples = {}
    for cond in CONDITIONS:
        kept = {rid: t for rid, (t, slot) in result["ttfts"][cond].items()
                if slots is None or slot in slots}  # fmt: skip
        samples[cond] = {"ttft": list(kept.values()), "net": net_ttfts(kept, served)}
    out: dict[str, dict] = {}
    for cond in CONDITIONS:
        row: dict = {"n": len(samples[cond]["ttft"]), "n_net": len(samples[cond]["net"])}
        for key, label in (("ttft", ""), ("net", "net_")):
            for q in (50, 99):
                value = pct_ms(samples[cond][key], q)
                base = pct_ms(samples["direct"][key], q)
                row[f"{label}p{q}_ms"] = value
                row[f"{label}added_p{q}_ms"] = value - base
                row[f"{label}p{q}_ratio"] = value / base
        out[cond] = row
    return out


def wait_served(log: Path, ids: set[str]) -> dict[str, dict]:
    served = read_served(log)
    deadline = time.monotonic() + 10
    while not ids <= served.keys() and time.monotonic() < deadline:
        time.sleep(0.1)  # the simulator logs a request when its stream has ended
        served = read_served(log)
    return served


# --- set-up ------------------------------------------------------------------------------------


def start_proxy(profile_out: Path | None) -> tuple:
    serve = ["serve", "--host", LOOPBACK, "--port", "0", "--metrics"]
    if profile_out is None:
        cmd = [sys.executable, "-m", "aichaos.experiments.toxiproxy", *serve]
    else:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_out),
               "-m", "aichaos.experiments.toxiproxy", *serve]  # fmt: skip
    return spawn(pinned(0, cmd), r"ready: (http://\S+)")


def make_proxy(api: str, name: str, upstream_port: int) -> str:
    body = {"name": name, "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{upstream_port}"}
    resp = httpx.post(f"{api}/proxies", json=body, timeout=10)
    resp.raise_for_status()
    return f"http://{resp.json()['listen']}"


def first_token_s(url: str) -> float:
    body = {"model": "fixed-latency", "messages": [{"role": "user", "content": "check"}],
            "max_tokens": 2, "ignore_eos": True, "stream": True}  # fmt: skip
    sent = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as resp:
        for line in resp.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - sent
    raise RuntimeError(f"{url}: no token")


def check_toxic(api: str, url: str) -> None:
    """The LLM layer is really there: at toxicity 1 the first token is a second late."""
    toxic = f"{api}/proxies/bench-llm/toxics/{TOXIC['name']}"
    httpx.post(toxic, json={"toxicity": 1.0}, timeout=10).raise_for_status()
    late = first_token_s(url)
    httpx.post(toxic, json={"toxicity": 0.0}, timeout=10).raise_for_status()
    if late < 1.0:
        raise RuntimeError(f"first_token_delay at toxicity 1 gave TTFT {late:.3f} s, not >= 1 s")
    if httpx.get(toxic, timeout=10).json()["toxicity"] != 0.0:
        raise RuntimeError("toxicity did not go back to 0")


# --- report ------------------------------------------------------------------------------------


def summarise(result: dict, served: dict[str, dict], quiet_limit: float) -> list[dict]:
    window = result["window_s"]
    every = latency(result, served, None)
    quiet = quiet_slots(result["outside"], quiet_limit)
    calm = latency(result, served, quiet)
    rows = []
    for cond in CONDITIONS:
        count = result["counts"][cond]
        own_s = window / len(CONDITIONS)  # the measured time of its slots
        row: dict = {"condition": cond, **count, "events_per_s": count["events"] / own_s,
                     **every[cond], "quiet_slots": len(quiet),
                     **{f"quiet_{k}": v for k, v in calm[cond].items()}}  # fmt: skip
        if cond in PROXIED:
            user, system = result["cpu"][cond]
            row["proxy_cpu_s"] = user + system
            row["proxy_cpu_share"] = (user + system) / own_s
            row["proxy_sys_fraction"] = system / (user + system) if user + system else 0.0
            row["cpu_us_per_event"] = (user + system) / count["events"] * 1e6
            row["cpu_us_per_request"] = (user + system) / count["requests"] * 1e6
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| condition | requests | SSE events | TTFT p50 / p99 (ms) | vs direct p50 / p99"
        " | added p50 / p99 (ms) | net TTFT p50 / p99 (ms) | net added p50 / p99 (ms)"
        " | proxy CPU per event (µs) | per request (µs)"
        " | proxy CPU (% of a core in its slots; sys) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["condition"] in PROXIED:
            added = f"{r['added_p50_ms']:+.3f} / {r['added_p99_ms']:+.3f}"
            net_added = f"{r['net_added_p50_ms']:+.3f} / {r['net_added_p99_ms']:+.3f}"
            cpu = (
                f"{r['cpu_us_per_event']:.2f} | {r['cpu_us_per_request']:.0f}"
                f" | {r['proxy_cpu_share']:.1%}; {r['proxy_sys_fraction']:.0%}"
            )
        else:
            added = net_added = "—"
            cpu = "— | — | —"
        lines.append(
            f"| {r['condition']} | {r['requests']} | {r['events']}"
            f" | {r['p50_ms']:.2f} / {r['p99_ms']:.2f}"
            f" | {r['p50_ratio']:.4f}× / {r['p99_ratio']:.4f}× | {added}"
            f" | {r['net_p50_ms']:.3f} / {r['net_p99_ms']:.3f} | {net_added} | {cpu} |"
        )
    return "\n".join(lines)


def quiet_table(rows: list[dict]) -> str:
    lines = [
        "| condition (quiet slots only) | requests | TTFT p50 / p99 (ms) | added p50 / p99 (ms)"
        " | net TTFT p50 / p99 (ms) | net added p50 / p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        proxied = r["condition"] in PROXIED
        added = f"{r['quiet_added_p50_ms']:+.3f} / {r['quiet_added_p99_ms']:+.3f}"
        net_added = f"{r['quiet_net_added_p50_ms']:+.3f} / {r['quiet_net_added_p99_ms']:+.3f}"
        lines.append(
            f"| {r['condition']} | {r['quiet_n']}"
            f" | {r['quiet_p50_ms']:.2f} / {r['quiet_p99_ms']:.2f}"
            f" | {added if proxied else '—'}"
            f" | {r['quiet_net_p50_ms']:.3f} / {r['quiet_net_p99_ms']:.3f}"
            f" | {net_added if proxied else '—'} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    def mark_ms(value: float, target: float) -> str:
        return "n/a (no quiet slot)" if math.isnan(value) else mark(value < target)

    out = []
    for row in rows[1:]:
        name = "no toxic" if row["condition"] == "proxy" else "LLM toxic at toxicity 0"
        added, quiet, cpu = row["added_p99_ms"], row["quiet_added_p99_ms"], row["cpu_us_per_event"]
        out.append(
            f"{name}: added TTFT p99 {added:+.3f} ms (quiet slots {quiet:+.3f} ms; net "
            f"{row['net_added_p99_ms']:+.3f} / {row['quiet_net_added_p99_ms']:+.3f} ms), "
            f"target < {TARGET_ADDED_P99_MS:g} ms: {mark(added < TARGET_ADDED_P99_MS)} "
            f"(quiet slots: {mark_ms(quiet, TARGET_ADDED_P99_MS)}); proxy CPU per event "
            f"{cpu:.2f} µs, target <= {TARGET_CPU_PER_EVENT_US:g} µs: "
            f"{mark(cpu <= TARGET_CPU_PER_EVENT_US)}"
            + ("" if row["condition"] == "proxy" else "  (the targets are for no toxic)")
        )
    return out


def print_profile(path: Path, limit: int = 25) -> None:
    import pstats

    print(f"\n=== {path}: top {limit} by own time, then by cumulative time")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


def uvloop_version() -> str:
    try:
        import uvloop
    except ImportError:
        return "none"
    return uvloop.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams")
    parser.add_argument("--seconds", type=float, default=45.0,
                        help="measured seconds per condition")  # fmt: skip
    parser.add_argument("--slot", type=float, default=1.5, help="seconds before switching")
    parser.add_argument("--warmup-cycles", type=int, default=2,
                        help="unmeasured cycles of the three conditions first")  # fmt: skip
    parser.add_argument("--tokens", type=int, nargs=2, default=[16, 48], metavar=("MIN", "MAX"),
                        help="max_tokens of each answer, drawn uniformly")  # fmt: skip
    parser.add_argument("--quiet", type=float, default=0.1,
                        help="quiet slot: other processes used at most N cores")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="6 s per condition: about 30 s")
    parser.add_argument("--profile-proxy", type=Path, metavar="DIR",
                        help="run each proxy under cProfile, its stats in DIR")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.slot, args.warmup_cycles = 6.0, 1.0, 1
    if not 1 <= args.streams <= 2000 or not 0 < args.seconds <= 600:
        parser.error("--streams in 1..2000, --seconds in (0, 600]")
    if not 0.5 <= args.slot <= args.seconds or not 1 <= args.warmup_cycles <= 10:
        parser.error("--slot in [0.5, --seconds], --warmup-cycles in 1..10")
    if not 1 <= args.tokens[0] <= args.tokens[1] <= 4096:
        parser.error("--tokens MIN MAX in 1..4096")
    if args.profile_proxy:
        args.profile_proxy.mkdir(parents=True, exist_ok=True)

    tmp = tempfile.TemporaryDirectory(prefix="bench-llm-proxy-")
    log = Path(tmp.name) / "served.jsonl"
    sim_port = free_port()
    sim_cmd = [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--port",
               str(sim_port), "--profile", "fixed-latency", "--request-log", str(log)]  # fmt: skip
    sim = Server(sim_cmd, sim_port, core=1)
    servers: dict[str, object] = {}
    try:
        urls = {"direct": sim.url}
        procs = {}
        for cond, name in (("proxy", "bench-plain"), ("proxy+llm", "bench-llm")):
            out = args.profile_proxy / f"{name}.prof" if args.profile_proxy else None
            servers[cond], api = start_proxy(out)
            urls[cond] = make_proxy(api, name, sim_port)
            procs[cond] = psutil.Process(servers[cond].pid)  # type: ignore[attr-defined]
            if cond == "proxy+llm":
                toxics = f"{api}/proxies/{name}/toxics"
                httpx.post(toxics, json=TOXIC, timeout=10).raise_for_status()
                check_toxic(api, urls[cond])
        procs["sim"] = psutil.Process(sim.proc.pid)
        procs["client"] = psutil.Process()
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})  # the client shares core 1 with the simulator
        info = {
            **machine(),
            "aiohttp": aiohttp.__version__,
            "uvloop": uvloop_version(),
            "psutil": psutil.__version__,
            "load_avg_before": os.getloadavg(),
            **{k: v for k, v in vars(args).items() if k not in ("json", "profile_proxy")},
        }
        print(json.dumps(info, default=str), flush=True)
        started = time.monotonic()
        result = run(drive(urls, args, procs))
        info["wall_s"] = round(time.monotonic() - started, 1)
        info["load_avg_after"] = os.getloadavg()
        ids = {rid for c in CONDITIONS for rid in result["ttfts"][c]}
        served = wait_served(log, ids)
    finally:
        for server in servers.values():
            stop(server)  # type: ignore[arg-type]
        sim.stop()
        tmp.cleanup()
    rows = summarise(result, served, args.quiet)
    outside = result["outside"]
    cpu = {k: [round(v, 2) for v in result["cpu"][k]] for k in result["cpu"]}
    print(
        json.dumps(
            {
                "window_s": round(result["window_s"], 2),
                "cycles": result["cycles"],
                "quiet_slots": f"{rows[0]['quiet_slots']} of {len(outside)}",
                "outside_cores_mean": round(sum(outside) / len(outside), 3),
                "outside_cores_max": round(max(outside), 3),
                "irq_cores": round(result["irq_s"] / result["window_s"], 3),
                "unfinished": result["unfinished"],
                "cpu_user_sys_s": cpu,
                "wall_s": info["wall_s"],
                "load_avg_after": info["load_avg_after"],
            }
        )
    )
    print()
    print(table(rows))
    print()
    print(quiet_table(rows))
    print()
    for line in verdict(rows):
        print(line)
    if args.profile_proxy:
        for name in ("bench-plain", "bench-llm"):
            print_profile(args.profile_proxy / f"{name}.prof")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "cpu_user_sys_s": cpu,
                    "rows": rows,
                    "outside_cores_per_slot": outside,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
