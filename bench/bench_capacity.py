"""What the embedded stack carries: the highest steady rate at which the default SLOs hold.

    python bench/bench_capacity.py                         # rates 4,8,...,128 rps
    python bench/bench_capacity.py --rates 10,20,30 --seconds 90
    python bench/bench_capacity.py --gateway-rev 7efc357   # the same with the gateway of a
                                                           # past commit (before / after)

It is one `aichaos sweep` (see the README: each rate one game day of the built-in `steady`
scenario, Poisson chat streams of 32-128 tokens after a ~200-token RAG prompt, at that
constant rate; the climb stops at the first break, then `--narrow` steps bisect) on the
default embedded topology with the gateway's rate limits and load shedding raised out of the
way (so they do not decide the figure), evaluated against the `default` SLO spec (TTFT p95 <
500 ms, errors < 0.1%, both key; TPOT p95 < 50 ms). "Holds" reads the point estimates: a
minute-long step has too few requests to *prove* errors < 0.1% (3,838 clean requests would),
so a step holds when no key objective failed and every key point estimate meets its
threshold, as the sweep defines it.

`--gateway-rev REV` runs the gateway package as it was at REV (extracted with git into a
temporary package, started from the same topology), so a before/after pair is measured on
one machine, one run after the other, with everything else equal.

The summary as one JSON line on stdout (and the whole sweep with `--json FILE`), a line per
step on stderr. Loopback only; the sweep is bounded by its steps' length plus a fixed margin
each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
AICHAOS = str(Path(sys.executable).parent / "aichaos")
OUT_OF_THE_WAY = [
    "--set", "rate_limits_per_min.free=10000000",
    "--set", "rate_limits_per_min.pro=10000000",
    "--set", "rate_limits_per_min.enterprise=10000000",
    "--set", "shed_in_flight.free=100000",
    "--set", "shed_in_flight.pro=100000",
    "--set", "shed_in_flight.enterprise=100000",
]  # fmt: skip
MARGIN_S = 240.0  # stack start, drain, evaluation and reports, beyond the scenario itself


def topology(work: Path, gateway_rev: str | None) -> Path:
    """The default topology, the gateway's limits raised; with ``gateway_rev``, that
    revision's gateway package (importable as ``gwrev``) in place of today's."""
    data = yaml.safe_load((ROOT / "fixtures" / "topology" / "default.yaml").read_text())
    gateway = next(s for s in data["services"] if s["kind"] == "gateway")
    command, original = [], gateway["command"]
    for i, part in enumerate(original):  # every part but the --set of the free tier's limit
        limit = "rate_limits_per_min" in part or (
            part == "--set" and "rate_limits_per_min" in original[i + 1]
        )
        if not limit:
            command.append(part)
    gateway["command"] = command + OUT_OF_THE_WAY
    if gateway_rev:
        package = work / "gwsrc" / "gwrev"
        package.mkdir(parents=True)
        listing = subprocess.run(
            ["git", "ls-tree", "--name-only", gateway_rev, "fixtures/gateway/"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        for path in listing:
            if path.endswith(".py"):
                show = ["git", "show", f"{gateway_rev}:{path}"]
                source = subprocess.run(show, cwd=ROOT, capture_output=True, text=True, check=True)
                (package / Path(path).name).write_text(source.stdout)
        at = gateway["command"].index("aichaos.fixtures.gateway")
        gateway["command"][at] = "gwrev"
        gateway["env"] = {"PYTHONPATH": str(package.parent)}
    path = work / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep(work: Path, topo: Path, rates: list[float], seconds: float, narrow: int) -> dict:
    """``aichaos sweep`` of the ``steady`` scenario over ``rates`` on ``topo``: its sweep.json
    (each step's verdict and key SLIs, the capacity) and the wall time."""
    out = work / "sweeps"
    cmd = [AICHAOS, "sweep", "--scenario", "steady", "--slo", "default", "--topology", str(topo),
           "--rates", ",".join(f"{r:g}" for r in rates), "--step", f"{seconds:g}s",
           "--narrow", str(narrow), "--out", str(out), "--ci"]  # fmt: skip
    started = time.monotonic()
    limit = len(rates) * (seconds + MARGIN_S) + narrow * (seconds + MARGIN_S)
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=limit)
    wall = time.monotonic() - started
    found = sorted(out.glob("sweep-*/sweep.json")) if out.exists() else []
    if not found:
        raise SystemExit(f"the sweep wrote no sweep.json (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")  # fmt: skip
    return {"wall_s": round(wall, 1), "exit": proc.returncode,
            **json.loads(found[-1].read_text())}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="4,8,16,32,64,96,128", help="requests/s, ascending")
    parser.add_argument("--seconds", type=float, default=60.0, help="each step's length")
    parser.add_argument("--narrow", type=int, default=1, help="steps between hold and break")
    parser.add_argument("--gateway-rev", default=None, help="the gateway of this git revision")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    work = Path(tempfile.mkdtemp(prefix="aichaos-capacity-"))
    try:
        topo = topology(work, args.gateway_rev)
        result = sweep(work, topo, rates, args.seconds, args.narrow)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (condition,) = result["conditions"]
    for step in sorted(condition["steps"], key=lambda s: s["offered_rps"]):
        print(_line(step), file=sys.stderr, flush=True)
    summary = {"capacity_rps": condition["capacity_rps"], "broken_rps": condition["broken_rps"],
               "stopped_because": condition["stopped_because"],
               "gateway": args.gateway_rev or "HEAD", "seconds": args.seconds,
               "wall_s": result["wall_s"]}  # fmt: skip
    print(json.dumps(summary), flush=True)
    print(f"holds the default SLOs up to {summary['capacity_rps']} rps "
          f"({summary['stopped_because']})", file=sys.stderr)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"sweep": result, "summary": summary}, indent=2))
    return 0


def _line(step: dict) -> str:
    slis = ", ".join(f"{p['id']} {p['value']:.4g}" for p in step["slis"] if p["value"] is not None)
    state = "saturated" if step["saturated"] else ("holds" if step["holds"] else "broken")
    return (f"{step['offered_rps']:6g} rps  {step['verdict']:13} {state:9}  completed "
            f"{step['achieved_rps']:.1f} rps  {slis}  ({step['requests']} requests)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
