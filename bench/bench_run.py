"""Wall time and memory of a whole game day, `aichaos run`.

    python bench/bench_run.py                 # aichaos run --quick: wall time, peak memory
    python bench/bench_run.py --soak 30m      # the soak scenario for 30 minutes: memory over
                                              # time of every process, and its growth

Memory is the resident set size summed over `aichaos run` and every process it started (the
stack, Locust, Prometheus), sampled every few seconds with psutil. The soak reports the
growth of each process between the first and the last third of the run: a leak shows as a
steady climb, a warm-up as a step at the start.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
AICHAOS = [str(Path(sys.executable).parent / "aichaos")]


def sample(proc: psutil.Process) -> dict[str, int]:
    """RSS in bytes of ``proc`` and its descendants, keyed by a readable process name."""
    found: dict[str, int] = {}
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for p in tree:
        try:
            cmd = p.cmdline()
            name = _label(cmd)
            found[f"{name}:{p.pid}"] = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _label(cmd: list[str]) -> str:
    text = " ".join(cmd)
    for key in ("llm_sim", "gateway", "retriever", "toxiproxy", "prometheus", "locust"):
        if key in text:
            return key
    return "aichaos-run" if "run" in cmd else (cmd[0] if cmd else "?")


def run(args: list[str], every: float, out: Path) -> tuple[int, float, list[tuple[float, dict]]]:
    started = time.monotonic()
    proc = subprocess.Popen([*AICHAOS, "run", *args, "--out", str(out)], cwd=ROOT)
    watcher = psutil.Process(proc.pid)
    samples: list[tuple[float, dict]] = []
    while proc.poll() is None:
        samples.append((time.monotonic() - started, sample(watcher)))
        time.sleep(every)
    return proc.returncode, time.monotonic() - started, samples


def growth(samples: list[tuple[float, dict]]) -> dict[str, float]:
    """MiB growth per process kind between the first and the last third of the run."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]

    def mean_by_kind(part: list[tuple[float, dict]]) -> dict[str, float]:
        sums: dict[str, list[float]] = defaultdict(list)
        for _, values in part:
            per_kind: dict[str, float] = defaultdict(float)
            for key, rss in values.items():
                per_kind[key.split(":")[0]] += rss
            for kind, rss in per_kind.items():
                sums[kind].append(rss)
        return {k: sum(v) / len(v) / 2**20 for k, v in sums.items()}

    a, b = mean_by_kind(first), mean_by_kind(last)
    return {k: round(b[k] - a.get(k, 0.0), 1) for k in b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", help="run the soak scenario this long (e.g. 30m)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    opts = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="aichaos-bench-run-"))
    if opts.soak:
        args = ["--scenario", "soak", "--duration", opts.soak, "--ci"]
        every = 10.0
    else:
        args = ["--quick", "--ci"]
        every = 1.0
    code, wall, samples = run(args, every, out)
    totals = [sum(v.values()) for _, v in samples]
    result = {
        "command": "aichaos run " + " ".join(args),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "peak_rss_mib_all_processes": round(max(totals) / 2**20, 1) if totals else None,
        "samples": len(samples),
    }
    if opts.soak:
        result["growth_mib_first_to_last_third"] = growth(samples)
        csv_path = ROOT / "bench" / "results" / "soak-memory.csv"
        csv_path.parent.mkdir(exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t_s", "rss_mib_total"])
            for (t, _), total in zip(samples, totals, strict=True):
                writer.writerow([round(t, 1), round(total / 2**20, 1)])
        result["memory_csv"] = str(csv_path.relative_to(ROOT))
    print(json.dumps(result, indent=2))
    if opts.keep:
        print(f"run directory kept in {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
