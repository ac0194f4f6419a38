"""Wall time and memory of a whole game day, `aichaos run`.

    python bench/bench_run.py                 # aichaos run --quick: wall time, peak memory
    python bench/bench_run.py --soak 30m      # the soak scenario for 30 minutes: memory over
                                              # time of every process, and its slope
    python bench/bench_run.py --vllm          # aichaos run --quick on the simulators, then
                                              # with real vLLM replicas (--backend vllm)

Memory is the resident set size summed over `aichaos run` and every process it started (the
stack, Locust, Prometheus), sampled every few seconds with psutil. The soak reports the
slope of each kind of process after warm-up (MiB per hour, from a third of the run to the
end of the load): a leak shows as a steady climb, a warm-up as a step at the start.
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
    if "vllm" in text.lower():  # the API server, VLLM::EngineCore and VLLM::Worker
        return "vllm"
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


def by_kind(values: dict[str, int]) -> dict[str, float]:
    """MiB per kind of process (the three simulators add up under ``llm_sim``)."""
    kinds: dict[str, float] = defaultdict(float)
    for key, rss in values.items():
        kinds[key.split(":")[0]] += rss / 2**20
    return kinds


def slope_after_warmup(samples: list[tuple[float, dict]]) -> dict[str, float]:
    """MiB per hour per kind of process, by least squares from a third of the run to the end
    of the load (the first third is warm-up: caches filling to their TTL, allocator arenas;
    after the load, evaluation reads every record and Locust exits)."""
    loaded = [t for t, values in samples if any(k.startswith("locust:") for k in values)]
    end = max(loaded) if loaded else samples[-1][0]
    tail = [(t, v) for t, v in samples[len(samples) // 3 :] if t <= end]
    rows = [(t, by_kind(values)) for t, values in tail]
    kinds = sorted({k for _, kinds in rows for k in kinds})
    slopes = {}
    for kind in kinds:
        points = [(t, kinds_[kind]) for t, kinds_ in rows if kind in kinds_]
        if len(points) < 2:
            continue
        mean_t = sum(t for t, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        var = sum((t - mean_t) ** 2 for t, _ in points)
        cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
        slopes[kind] = round(cov / var * 3600, 1) if var else 0.0
    return slopes


def write_csv(samples: list[tuple[float, dict]], path: Path) -> None:
    rows = [(t, by_kind(values)) for t, values in samples]
    kinds = sorted({k for _, kinds in rows for k in kinds})
    path.parent.mkdir(exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "total_mib", *(f"{k}_mib" for k in kinds)])
        for t, kinds_ in rows:
            per = [round(kinds_.get(k, 0.0), 1) for k in kinds]
            writer.writerow([round(t, 1), round(sum(kinds_.values()), 1), *per])


def quick(args: list[str], out: Path) -> dict:
    """One game day: exit code, wall time, peak memory in all and by kind of process."""
    code, wall, samples = run(args, 1.0, out)
    totals = [sum(v.values()) for _, v in samples]
    peak = max(range(len(totals)), key=totals.__getitem__) if totals else None
    return {
        "command": "aichaos run " + " ".join(args),
        "exit_code": code,
        "wall_s": round(wall, 1),
        "peak_rss_mib_all_processes": round(totals[peak] / 2**20, 1) if totals else None,
        "at_peak_mib_by_kind": by_kind(samples[peak][1]) if totals else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", help="run the soak scenario this long (e.g. 30m)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument("--vllm", action="store_true",
                        help="the quick game day on the simulators, then on real vLLM")  # fmt: skip
    opts = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="aichaos-bench-run-"))
    if opts.vllm:
        results = [quick(["--quick", "--ci"], out / "sim"),
                   quick(["--quick", "--ci", "--backend", "vllm"], out / "vllm")]  # fmt: skip
        print(json.dumps(results, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        return
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
        result["slope_mib_per_hour_after_warmup"] = slope_after_warmup(samples)
        csv_path = ROOT / "bench" / "results" / "soak-memory.csv"
        write_csv(samples, csv_path)
        result["memory_csv"] = str(csv_path.relative_to(ROOT))
    print(json.dumps(result, indent=2))
    if opts.keep:
        print(f"run directory kept in {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
