"""What the embedded stack carries: the highest steady rate at which the default SLOs hold.

    python bench/bench_capacity.py                         # rates 4,8,12,16,24,32 rps
    python bench/bench_capacity.py --rates 10,20,30 --seconds 90
    python bench/bench_capacity.py --gateway-rev 7efc357   # the same with the gateway of a
                                                           # past commit (before / after)

Each rate is one `aichaos run --experiment none` of the built-in `steady` scenario (Poisson, chat
streams of 32-128 tokens after a ~200-token RAG prompt) at that constant rate, on the
default embedded topology with the gateway's rate limits and load shedding raised out of
the way (so they do not decide the figure), evaluated against the `default` SLO spec (TTFT
p95 < 500 ms, errors < 0.1%, both key; TPOT p95 < 50 ms). The steps climb until one fails;
the figure is the highest rate whose key objectives held. "Held" reads the point estimates:
a minute-long step has too few requests to *prove* errors < 0.1% (3,838 clean requests
would; the evaluator then says inconclusive, exit 4), so the table gives the verdict beside
the point values, and a step counts as holding when no key objective failed and every key
point estimate meets its threshold.

`--gateway-rev REV` runs the gateway package as it was at REV (extracted with git into a
temporary package, started from the same topology), so a before/after pair is measured on
one machine, one run after the other, with everything else equal.

One JSON line per rate on stdout (and `--json FILE`), a table on stderr. Loopback only; every
step is bounded by its run's duration plus a fixed margin.
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


def scenario(work: Path, rps: float, seconds: float) -> Path:
    data = yaml.safe_load((ROOT / "scenarios" / "builtin" / "steady.yaml").read_text())
    data["name"] = f"steady-{rps:g}rps"
    data["rate"] = {"shape": "constant", "rps": rps}
    data["duration"] = f"{seconds:g}s"
    path = work / f"steady-{rps:g}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def key_rows(slo: dict) -> list[dict]:
    return [r for r in slo.get("objectives", []) if r.get("key") and r.get("phase") == "all"]


def meets(row: dict) -> bool:
    value, threshold, op = row.get("value"), row.get("threshold"), row.get("op")
    if value is None or threshold is None:
        return False
    return value <= threshold if op in ("<=", "<") else value >= threshold


def step(work: Path, topo: Path, rps: float, seconds: float) -> dict:
    out = work / f"runs-{rps:g}"
    cmd = [AICHAOS, "run", "--scenario", str(scenario(work, rps, seconds)), "--topology",
           str(topo), "--experiment", "none", "--slo", "default", "--ci",
           "--out", str(out)]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                          timeout=seconds + MARGIN_S)  # fmt: skip
    wall = time.monotonic() - started
    run_dirs = sorted(p for p in out.iterdir() if (p / "slo.json").exists()) if out.exists() else []
    row = {"rps": rps, "exit": proc.returncode, "wall_s": round(wall, 1)}
    if not run_dirs:
        row["error"] = (proc.stderr.strip().splitlines() or ["no slo.json"])[-1]
        return row
    slo = json.loads((run_dirs[-1] / "slo.json").read_text())
    rows = {r["id"].split("@")[0]: r for r in slo.get("objectives", []) if r.get("phase") == "all"}
    keys = key_rows(slo)
    row.update(
        verdict=slo.get("verdict"),
        requests=slo.get("requests"),
        ttft_p95_ms=_ms(rows.get("ttft-p95", {}).get("value")),
        tpot_p95_ms=_ms(rows.get("tpot-p95", {}).get("value")),
        error_ratio=rows.get("error-rate", {}).get("value"),
        held=bool(keys) and all(r.get("status") != "fail" and meets(r) for r in keys),
    )
    return row


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="4,8,12,16,24,32", help="requests/s, ascending")
    parser.add_argument("--seconds", type=float, default=60.0, help="each step's length")
    parser.add_argument("--gateway-rev", default=None, help="the gateway of this git revision")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    work = Path(tempfile.mkdtemp(prefix="aichaos-capacity-"))
    rows: list[dict] = []
    try:
        topo = topology(work, args.gateway_rev)
        for rps in rates:
            row = step(work, topo, rps, args.seconds)
            row["gateway"] = args.gateway_rev or "HEAD"
            rows.append(row)
            print(json.dumps(row), flush=True)
            print(_line(row), file=sys.stderr, flush=True)
            if not row.get("held"):
                break  # the knee: higher rates only fail harder
    finally:
        shutil.rmtree(work, ignore_errors=True)
    held = [r["rps"] for r in rows if r.get("held")]
    summary = {"capacity_rps": max(held) if held else None, "gateway": args.gateway_rev or "HEAD",
               "seconds": args.seconds}  # fmt: skip
    print(json.dumps(summary), flush=True)
    print(f"holds the default SLOs up to {summary['capacity_rps']} rps", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['rps']:6g} rps  error: {row['error']}"
    err = row.get("error_ratio")
    return (f"{row['rps']:6g} rps  {row.get('verdict')!s:13} held={row.get('held')!s:5} "
            f"TTFT p95 {row.get('ttft_p95_ms')} ms  TPOT p95 {row.get('tpot_p95_ms')} ms  "
            f"errors {err if err is None else f'{err:.4%}'}  ({row.get('requests')} requests, "
            f"{row['wall_s']} s)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
