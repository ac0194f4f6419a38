"""How long ``aichaos sweep`` takes to locate the knee within ±10%, against a fixed grid.

Both find the highest rate at which a small stack holds its SLOs, on the same stack and
machine, one after the other:

- **sweep**: the coarse grid ``--rates`` (doubling) up to the first break, then ``--narrow 3``
  (the default) bisection steps, which put the interval between the highest hold and the
  lowest break within ±10% of its middle (±6% when the break is the grid's next rate);
- **fixed grid**: rates 10% apart from the same start, climbed until the first break (what a
  load tool without narrowing does to get the same resolution).

The stack is the embedded topology with replicas that saturate at a few requests a second
(``tests/data/sweep/slow-replica.yaml``, the sweep tests' stack), so the knee is known to be
low and each step short; the scenario and SLO spec are the tests' too. Wall time per method,
steps run, and the knee each found; the ratio of wall times is the figure.

    cd bench && ../.venv/bin/python bench_sweep.py [--step 16] [--json FILE]

Loopback only; each sweep is bounded by its steps' length plus a fixed margin each.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_sweep import slow_topology  # noqa: E402 - the sweep tests' stack, built one way

DATA = ROOT / "tests" / "data" / "sweep"
AICHAOS = str(Path(sys.executable).parent / "aichaos")
MARGIN_S = 60.0  # per step: stack start, drain, evaluation and report
START_RPS = 2.0
TOP_RPS = 8.0


def run(work: Path, name: str, rates: list[float], narrow: int, step_s: float) -> dict:
    out = work / name
    cmd = [AICHAOS, "sweep", "--scenario", str(DATA / "scenario.yaml"), "--slo",
           str(DATA / "slo.yaml"), "--topology", str(slow_topology(work)), "--rates",
           ",".join(f"{r:g}" for r in rates), "--step", f"{step_s:g}s", "--narrow", str(narrow),
           "--out", str(out), "--ci"]  # fmt: skip
    started = time.monotonic()
    limit = (len(rates) + narrow) * (step_s + MARGIN_S)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    wall = time.monotonic() - started
    found = sorted(out.glob("sweep-*/sweep.json"))
    if not found:
        raise SystemExit(f"{name}: no sweep.json (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    (condition,) = json.loads(found[-1].read_text())["conditions"]
    low, high = condition["capacity_rps"], condition["broken_rps"]
    width = (high - low) / (high + low) if low and high else None  # ± around the middle
    return {"method": name, "wall_s": round(wall, 1), "steps": len(condition["steps"]),
            "capacity_rps": low, "broken_rps": high,
            "within_pct": round(100 * width, 1) if width is not None else None}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=float, default=16.0, help="each step's length, s")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    doubling = [START_RPS * 2**i for i in range(int(math.log2(TOP_RPS / START_RPS)) + 1)]
    fine = [round(START_RPS * 1.1**i, 3) for i in range(int(math.log(TOP_RPS, 1.1)) + 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="aichaos-bench-sweep-") as tmp:
        for name, rates, narrow in (("sweep", doubling, 3), ("fixed grid", fine, 0)):
            row = run(Path(tmp), name.replace(" ", "-"), rates, narrow, args.step)
            row["method"] = name
            rows.append(row)
            print(json.dumps(row), flush=True)
    sweep, grid = rows
    ratio = grid["wall_s"] / sweep["wall_s"] if sweep["wall_s"] else None
    print(f"{'method':<11} {'wall s':>7} {'steps':>5} {'holds':>6} {'breaks':>6} {'±%':>5}",
          file=sys.stderr)  # fmt: skip
    for r in rows:
        print(f"{r['method']:<11} {r['wall_s']:>7} {r['steps']:>5} {r['capacity_rps']!s:>6} "
              f"{r['broken_rps']!s:>6} {r['within_pct']!s:>5}", file=sys.stderr)  # fmt: skip
    print(f"the fixed grid took {ratio:.2f}x the sweep's wall time", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "grid_over_sweep": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
