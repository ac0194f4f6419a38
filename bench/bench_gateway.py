"""What the gateway adds to TTFT, and what it costs in CPU per request and per relayed event.

One fixed-latency simulator (100 ms TTFT, no contention, so any difference is the gateway's),
one gateway in front of it (no retriever: retrieval is excluded, rate limits and shedding set
out of the way, every prompt unique so the cache never answers: it carries the request id,
unique over the whole run). A load client keeps N streams busy (5 tokens each, re-issued when
done) first straight at the simulator, then through the gateway, alternating for 3 rounds;
TTFT = send → first content chunk. Processes: gateway on core 0; simulator and client on core 1
in both cases. "Added" TTFT p50 / p99 = the percentile through the gateway minus direct's.

Net added: at 200 streams the simulator and the client saturate core 1, so the simulator
serves late and direct TTFT itself is inflated; "added p99" then compares two saturated runs
(noisy, even negative). So every request carries an ``X-Request-Id`` (the gateway forwards it
upstream unchanged), the simulator logs the TTFT it served for it (``--request-log``), and net
TTFT = client TTFT − served TTFT, request by request, as ``bench_llm_proxy.py`` nets it: the
path without the simulator's own lateness. Direct, that is loopback and the client; through
the gateway, also the gateway and its two hops. ``gw_first_token_delay_p{50,99}_ms_at_most``
is the gateway's own view of its share on the way back (``gateway_first_token_delay_seconds``,
first token read from the simulator to written to the client, scraped around each round
through it): the bound of the histogram bucket holding that percentile.
``net_added_p50_ms`` / ``net_added_p99_ms`` = the net percentile through the gateway minus
direct's; ``timed`` and ``matched`` (direct, gateway) count the requests with a TTFT and those
of them found in the simulator's log.

Gateway CPU: user + system time of the gateway process and its children (psutil), read just
before and just after each round. Around a direct round the gateway is idle; that idle cost
(its timers, a few ms a second) is subtracted from the round through it that follows,
for the per-request and per-event figures. The client counts the requests it completed and
the events (``data:`` lines) it received. With two or more answer lengths (``--tokens 5,40``)
each level solves ``cpu = a·requests + b·events`` over the lengths (least squares; exact for
two) and prints ``cpu_per_request_us`` (a) and ``cpu_per_event_us`` (b). The TTFT columns are
those of the first length.

Output: one JSON line per level on stdout (``--json FILE`` also writes them as one list), and a
table on stderr. ``--profile DIR`` runs the gateway under cProfile and leaves
``DIR/gateway-<pid>.prof`` when it stops (the CPU figures then include the profiler's cost).

The floor, in the same rounds: a byte relay (the project's Toxiproxy-compatible proxy with no
toxic, which copies each read to the other side without looking at it) between the client
and the simulator, pinned to core 0 like the gateway, measured as the gateway is (TTFT added
against the same direct runs, net TTFT, CPU per request and per event by the same fit). What
the relay adds is what any hop in this harness adds; the gateway's cost above it is its own.
``--syscalls`` then runs each of the two once more under ``strace -c -f`` (slowed by it; only
the counts are kept) and gives their system calls per event.

BENCH_TOKENS=N sets the default answer length (5). Loopback only, bounded in time.
Run: cd bench && ../.venv/bin/python bench_gateway.py [--levels 50,200] [--tokens 5,40]
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
from bench_llm_proxy import make_proxy, start_proxy
from bench_simulator import Server, free_port, pinned
from bench_toxiproxy import stop

GATEWAY_CONFIG = """
rate_limits_per_min: {free: 100000000, pro: 100000000, enterprise: 100000000}
shed_in_flight: {free: 100000, pro: 100000, enterprise: 100000}
"""


async def measure(url: str, streams: int, seconds: float, max_tokens: int, prefix: str) -> dict:
    """Keep ``streams`` streams busy for ``seconds``; TTFTs by request id (``prefix`` + a
    number) plus what was asked and received."""
    ttfts: dict[str, float] = {}
    counts = {"requests": 0, "events": 0, "errors": 0}
    stop_at = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def one(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            rid = f"{prefix}{next(counter)}"
            body = {
                "messages": [{"role": "user", "content": f"question {rid}"}],
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "stream": True,
            }
            sent = time.perf_counter()
            async with session.post(
                f"{url}/v1/chat/completions",
                json=body,
                headers={"X-Tier": "enterprise", "X-Request-Id": rid},
            ) as resp:
                first = None
                events = 0
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        events += 1
                    if first is None and b'"content":"' in line and b'"content":""' not in line:
                        first = time.perf_counter() - sent
                counts["requests"] += 1
                counts["events"] += events
                if first is not None:
                    ttfts[rid] = first
                if first is None or resp.status != 200:
                    counts["errors"] += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.wait_for(
            asyncio.gather(*(one(session) for _ in range(streams))), seconds + 60
        )
    return {"ttfts": ttfts, **counts, "wall_s": time.monotonic() - started}


def client_main(args) -> None:
    import uvloop

    result = uvloop.run(measure(args.url, args.streams, args.seconds, args.max_tokens, args.prefix))
    args.out.write_text(json.dumps(result))


def run_client(url: str, streams: int, seconds: float, max_tokens: int, prefix: str) -> dict:
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
        "--max-tokens",
        str(max_tokens),
        "--prefix",
        prefix,
    ]
    with tempfile.TemporaryDirectory() as tmp:  # a file: the result runs to megabytes
        out = Path(tmp) / "result.json"
        subprocess.run([*pinned(1, cmd), "--out", str(out)], check=True, timeout=seconds + 120)
        return json.loads(out.read_text())


def net_since(log: Path, offset: int, ttfts: dict[str, float]) -> list[float]:
    """Net TTFTs of one client run: its TTFT minus the TTFT the simulator served for the same
    request id (``net_ttfts`` of bench_llm_proxy.py), from the ``--request-log`` lines written
    after ``offset``. The simulator writes a request's line when its stream has ended, so this
    waits (at most 10 s) until every id is there."""
    from bench_llm_proxy import net_ttfts

    from aichaos.scenarios.calibrate import read_served

    served = read_served(log, offset)
    deadline = time.monotonic() + 10
    while not ttfts.keys() <= served.keys() and time.monotonic() < deadline:
        time.sleep(0.1)
        served = read_served(log, offset)
    return net_ttfts(ttfts, served)


def delay_counts(gw_url: str) -> dict[float, float]:
    """The gateway's ``gateway_first_token_delay_seconds``: cumulative count per bucket bound."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{gw_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        float(s.labels["le"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_first_token_delay_seconds_bucket"
    }


def bucket_pct_ms(counts: dict[float, float], q: int) -> float | None:
    """The bound (ms) of the first bucket holding the q-th percentile: the percentile is at most
    this."""
    total = counts.get(float("inf"), 0.0)
    if not total:
        return None
    bound = next(b for b in sorted(counts) if counts[b] >= total * q / 100)
    return bound * 1000 if bound != float("inf") else None


def tree_cpu_s(proc) -> float:
    """User + system CPU seconds of ``proc``, its reaped children and its live descendants."""
    import psutil

    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # gone between listing and reading; its parent has not reaped it yet
        total += c.user + c.system
    return total


def pct(data: list[float], q: int) -> float | None:
    """Exact percentile with linear interpolation (numpy's default), in ms."""
    if len(data) < 2:
        return None
    return statistics.quantiles(data, n=100, method="inclusive")[q - 1] * 1000


def fit(points: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Least-squares (a, b) of cpu = a·requests + b·events over (requests, events, cpu) points.

    None when the points cannot separate the two (one answer length, or no requests).
    """
    srr = sum(r * r for r, _, _ in points)
    see = sum(e * e for _, e, _ in points)
    sre = sum(r * e for r, e, _ in points)
    src = sum(r * c for r, _, c in points)
    sec = sum(e * c for _, e, c in points)
    det = srr * see - sre * sre
    if len(points) < 2 or det <= 1e-9 * srr * see:
        return None
    return (see * src - sre * sec) / det, (srr * sec - sre * src) / det


def us(x: float | None) -> float | None:
    return None if x is None else round(x * 1e6, 1)


def ms(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def compare(row: dict, label: str, direct: list[float], via: list[float]) -> None:
    """p50 and p99 direct and through the gateway, and what the gateway adds, into ``row``."""
    for q in (50, 99):
        d, v = pct(direct, q), pct(via, q)
        row[f"{label}direct_p{q}_ms"] = ms(d)
        row[f"{label}gateway_p{q}_ms"] = ms(v)
        row[f"{label}added_p{q}_ms"] = ms(None if d is None or v is None else v - d)


def relay_summary(direct: list[dict], relay: list[dict]) -> dict:
    """The byte relay's columns of one answer length: its TTFTs and what it adds (against the
    same direct runs the gateway is compared with), its requests, events and CPU."""
    both: dict = {}
    compare(both, "", [t for r in direct for t in r["ttfts"].values()],
            [t for r in relay for t in r["ttfts"].values()])  # fmt: skip
    compare(both, "net_", [t for r in direct for t in r["net"]],
            [t for r in relay for t in r["net"]])  # fmt: skip
    row = {k.replace("gateway", "relay"): v for k, v in both.items() if "direct" not in k}
    for key in ("requests", "events", "errors"):
        row[key] = sum(r[key] for r in relay)
    row["cpu_s"] = round(sum(r["relay_cpu_s"] for r in relay), 3)
    row["idle_cpu_s"] = round(sum(r["relay_cpu_s"] for r in direct), 3)
    return row


def summarize(tokens: int, direct: list[dict], via: list[dict], relay: list[dict]) -> dict:
    """One answer length at one level: TTFTs, net TTFTs, counts and the gateway's CPU over
    every round; the byte relay's alike under ``relay``."""
    row: dict = {"tokens": tokens}
    for key in ("requests", "events", "errors"):
        row[key] = [sum(r[key] for r in direct), sum(r[key] for r in via)]
    ttfts = [[t for r in runs for t in r["ttfts"].values()] for runs in (direct, via)]
    nets = [[t for r in runs for t in r["net"]] for runs in (direct, via)]
    compare(row, "", *ttfts)
    compare(row, "net_", *nets)
    delay = {b: sum(r["delay"][b] for r in via) for b in via[0]["delay"]}
    for q in (50, 99):  # the gateway's own view: first token read -> written, bucket bounds
        row[f"gw_first_token_delay_p{q}_ms_at_most"] = bucket_pct_ms(delay, q)
    row["timed"] = [len(t) for t in ttfts]
    row["matched"] = [len(t) for t in nets]
    cpu = sum(r["gateway_cpu_s"] for r in via)
    idle = sum(r["gateway_cpu_s"] for r in direct)
    row["gateway_cpu_s"] = round(cpu, 3)
    row["gateway_idle_cpu_s"] = round(idle, 3)
    # the share of one core the gateway used while the client drove it (1.0: saturated)
    row["gateway_busy"] = round(cpu / sum(r["wall_s"] for r in via), 3)
    net = cpu - idle
    row["cpu_us_per_request_all_in"] = us(net / row["requests"][1] if row["requests"][1] else None)
    row["relay"] = relay_summary(direct, relay)
    return row


def level_row(
    streams: int, by_tokens: list[dict], rounds: list[list[dict]], relay_rounds: list[list[dict]]
) -> dict:
    """The level's JSON line: the first length's columns, the CPU split, every length's detail.

    ``rounds[i]`` holds round i's via requests, events and CPU (net of idle), one per answer
    length; the fit per round shows how much the split moves from one round to the next.
    ``relay_rounds`` alike for the byte relay.
    """
    first = by_tokens[0]
    row = {"streams": streams, **first}
    ab = fit(
        [
            (b["requests"][1], b["events"][1], b["gateway_cpu_s"] - b["gateway_idle_cpu_s"])
            for b in by_tokens
        ]
    )
    row["cpu_per_request_us"], row["cpu_per_event_us"] = (
        (us(ab[0]), us(ab[1])) if ab else (None,) * 2
    )
    per_round = [fit([(v["requests"], v["events"], v["cpu_s"]) for v in r]) for r in rounds]
    row["fit_rounds"] = [
        {"cpu_per_request_us": us(f[0]), "cpu_per_event_us": us(f[1])} for f in per_round if f
    ]
    ab = fit(
        [(b["relay"]["requests"], b["relay"]["events"],
          b["relay"]["cpu_s"] - b["relay"]["idle_cpu_s"]) for b in by_tokens]
    )  # fmt: skip
    row["relay_cpu_per_request_us"], row["relay_cpu_per_event_us"] = (
        (us(ab[0]), us(ab[1])) if ab else (None,) * 2
    )
    per_round = [fit([(v["requests"], v["events"], v["cpu_s"]) for v in r]) for r in relay_rounds]
    row["relay_fit_rounds"] = [
        {"cpu_per_request_us": us(f[0]), "cpu_per_event_us": us(f[1])} for f in per_round if f
    ]
    row["by_tokens"] = by_tokens
    return row


def fmt(x, width: int) -> str:
    return f"{'-' if x is None else x:>{width}}"


def pair(x, y, width: int) -> str:
    return fmt(f"{'-' if x is None else x}/{'-' if y is None else y}", width)


def print_table(rows: list[dict]) -> None:
    """The rows for a reader, on stderr (stdout stays one JSON object a line)."""
    out = sys.stderr
    print(
        f"{'streams':>7} {'tokens':>6} {'requests d/g':>13} {'events g':>9} {'err g':>5} "
        f"{'p50 d/g ms':>15} {'+p50':>7} {'p99 d/g ms':>15} {'+p99':>8} "
        f"{'+net p50':>8} {'+net p99':>8} {'gw p99<=':>8} {'relay +net p50/p99':>18} "
        f"{'gw cpu s':>8} {'idle s':>6} {'busy':>5} {'us/req all-in':>13}",
        file=out,
    )
    for row in rows:
        for b in row["by_tokens"]:
            print(
                f"{row['streams']:>7} {b['tokens']:>6} {pair(*b['requests'], 13)} "
                f"{b['events'][1]:>9} {b['errors'][1]:>5} "
                f"{pair(b['direct_p50_ms'], b['gateway_p50_ms'], 15)} "
                f"{fmt(b['added_p50_ms'], 7)} "
                f"{pair(b['direct_p99_ms'], b['gateway_p99_ms'], 15)} "
                f"{fmt(b['added_p99_ms'], 8)} "
                f"{fmt(b['net_added_p50_ms'], 8)} {fmt(b['net_added_p99_ms'], 8)} "
                f"{fmt(b['gw_first_token_delay_p99_ms_at_most'], 8)} "
                f"{pair(b['relay']['net_added_p50_ms'], b['relay']['net_added_p99_ms'], 18)} "
                f"{b['gateway_cpu_s']:>8} {b['gateway_idle_cpu_s']:>6} {b['gateway_busy']:>5} "
                f"{fmt(b['cpu_us_per_request_all_in'], 13)}",
                file=out,
            )
    if any(len(row["by_tokens"]) > 1 for row in rows):
        print(
            f"\n{'streams':>7} {'cpu_per_request_us':>18} {'cpu_per_event_us':>16}"
            f" {'relay req/event us':>18}  each round (request/event)",
            file=out,
        )
        for row in rows:
            each = ", ".join(
                f"{f['cpu_per_request_us']}/{f['cpu_per_event_us']}" for f in row["fit_rounds"]
            )
            print(
                f"{row['streams']:>7} {fmt(row['cpu_per_request_us'], 18)} "
                f"{fmt(row['cpu_per_event_us'], 16)} "
                f"{pair(row['relay_cpu_per_request_us'], row['relay_cpu_per_event_us'], 18)}"
                f"  {each}",
                file=out,
            )
    for row in rows:
        for name, calls in row.get("syscalls_per_event", {}).items():
            each = ", ".join(f"{k} {v}" for k, v in calls.items())
            print(f"{row['streams']:>7} {name} system calls per event: {each}", file=out)


def syscalls_per_event(urls: dict[str, str], procs: dict, streams: int, tokens: int,
                       seconds: float) -> dict[str, dict[str, float]]:  # fmt: skip
    """One more client run through the gateway and through the relay with ``strace -c -f``
    attached to it (ptrace slows it: no other figure is taken from this run): the system calls
    each made per event the client received, the ten most frequent."""
    out: dict[str, dict[str, float]] = {}
    for path, name in (("via", "gateway"), ("relay", "relay")):
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as report:
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-o", report.name, "-p", str(procs[name].pid)],
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(1.0)  # attached to every thread before the load starts
                got = run_client(urls[path], streams, seconds, tokens, f"strace-{path}-{streams}-")
            finally:
                tracer.terminate()
                tracer.wait(10)
            calls = {}
            for line in report.read().splitlines():
                cols = line.split()
                if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
                    calls[cols[-1]] = int(cols[3])
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:10]
        out[name] = {k: round(v / max(got["events"], 1), 3) for k, v in top}
    return out


def run_level(urls: dict[str, str], procs: dict, streams: int, lengths: list[int], args,
              log: Path) -> dict:  # fmt: skip
    """Alternate direct, gateway (via) and byte-relay rounds at one level, every answer length
    in each round; net each client run's TTFTs against what the simulator logged (``log``)
    while it ran. ``procs``: the gateway's and the relay's processes, whose CPU is read around
    every client run (around another path's run, that is the process's idle cost)."""
    runs: dict[str, dict[int, list[dict]]] = {p: {t: [] for t in lengths} for p in urls}
    rounds: dict[str, list[list[dict]]] = {"via": [], "relay": []}
    for n in range(args.rounds):
        this_round: dict[str, list[dict]] = {"via": [], "relay": []}
        for tokens in lengths:
            got = {}
            for name, url in urls.items():
                offset = log.stat().st_size
                prefix = f"{name}-{streams}-{n}-{tokens}-"  # request ids unique over the run
                delays = delay_counts(urls["via"])
                before = {p: tree_cpu_s(proc) for p, proc in procs.items()}
                got[name] = run_client(url, streams, args.seconds, tokens, prefix)
                for p, proc in procs.items():
                    got[name][f"{p}_cpu_s"] = tree_cpu_s(proc) - before[p]
                after = delay_counts(urls["via"])
                got[name]["delay"] = {b: after[b] - delays.get(b, 0.0) for b in after}
                got[name]["net"] = net_since(log, offset, got[name]["ttfts"])
                runs[name][tokens].append(got[name])
            for path, proc_name in (("via", "gateway"), ("relay", "relay")):
                net = got[path][f"{proc_name}_cpu_s"] - got["direct"][f"{proc_name}_cpu_s"]
                this_round[path].append(
                    {"requests": got[path]["requests"], "events": got[path]["events"], "cpu_s": net}
                )
        for path in rounds:
            rounds[path].append(this_round[path])
    by_tokens = [summarize(t, runs["direct"][t], runs["via"][t], runs["relay"][t]) for t in lengths]
    row = level_row(streams, by_tokens, rounds["via"], rounds["relay"])
    if args.syscalls:
        row["syscalls_per_event"] = syscalls_per_event(urls, procs, streams, max(lengths),
                                                       args.seconds)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--streams", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    c.add_argument("--max-tokens", type=int, required=True)
    c.add_argument("--prefix", default="", help="of every request id")
    c.add_argument("--out", type=Path, required=True, help="the result, as JSON")
    parser.add_argument("--levels", default="50,200")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tokens",
        default=os.environ.get("BENCH_TOKENS", "5"),
        help="answer lengths, e.g. 5,40: two or more split the CPU per request and per event",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--profile", type=Path, help="cProfile the gateway into this directory")
    parser.add_argument(
        "--syscalls",
        action="store_true",
        help="after each level, count the gateway's and the relay's system calls per event",
    )
    args = parser.parse_args()
    if args.cmd == "client":
        client_main(args)
        return
    import psutil

    lengths = [int(x) for x in args.tokens.split(",")]
    if args.rounds < 1 or not lengths or min(lengths) < 1:
        parser.error("--rounds and every --tokens length must be at least 1")
    sim_port, gw_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "served.jsonl"
        sim_cmd = [
            sys.executable,
            "-m",
            "aichaos.fixtures.llm_sim",
            "serve",
            "--port",
            str(sim_port),
            "--profile",
            "fixed-latency",
            "--request-log",
            str(log),
        ]
        sim = Server(sim_cmd, sim_port, core=1)
        cfg = Path(tmp) / "gateway.yaml"
        cfg.write_text(GATEWAY_CONFIG)
        gw_cmd = [
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
        ]
        if args.profile:
            gw_cmd += ["--profile", str(args.profile.resolve())]
        try:
            gw = Server(gw_cmd, gw_port, core=0)
        except BaseException:
            sim.stop()
            raise
        try:
            relay, relay_api = start_proxy(None)  # pinned to core 0, as the gateway
        except BaseException:
            gw.stop()
            sim.stop()
            raise
        # taskset execs the gateway and the relay, so these pids are their own
        procs = {"gateway": psutil.Process(gw.proc.pid), "relay": psutil.Process(relay.pid)}
        urls = {"direct": sim.url, "via": gw.url,
                "relay": make_proxy(relay_api, "bench-relay", sim_port)}  # fmt: skip
        try:
            rows = []
            for streams in [int(x) for x in args.levels.split(",")]:
                row = run_level(urls, procs, streams, lengths, args, log)
                print(json.dumps(row), flush=True)
                rows.append(row)
            print_table(rows)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
        finally:
            stop(relay)
            gw.stop()
            sim.stop()
    if args.profile:
        for prof in sorted(args.profile.glob("gateway-*.prof")):
            print(f"profile: {prof}", file=sys.stderr)


if __name__ == "__main__":
    main()
