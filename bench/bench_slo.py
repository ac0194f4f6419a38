"""SLO evaluation of a large run: 1 000 000 request records with ITL lists against a
10-objective spec with confidence intervals, phases and tiers.

Steps:

1. build a synthetic run directory with ``tests/synthetic_run.py`` (``--records`` requests
   over one hour, three tiers, three faults: a provider outage served by the fallback, a
   latency spike, a replica kill; metrics and journal included) — not timed;
2. in a fresh child process (so its peak memory is the evaluator's alone): ``evaluate_run``
   then ``write_result``, timed with a monotonic clock; peak RSS from
   ``getrusage(RUSAGE_SELF).ru_maxrss``.

Every percentile objective gets a distribution-free interval (two order statistics); the spec
scopes objectives to the four phases and the three tiers, so the run has 30-odd objective rows.
Run (about a minute, most of it building the records):

    .venv/bin/python bench/bench_slo.py                  # --records 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SPEC = {
    "name": "bench-10",
    "objectives": [
        {
            "sli": "ttft",
            "percentile": 95,
            "threshold": "500ms",
            "key": True,
            "phases": ["baseline", "fault", "recovery", "all"],
        },
        {
            "sli": "ttft",
            "percentile": 99,
            "threshold": "1s",
            "tiers": ["free", "pro", "enterprise"],
        },
        {"sli": "tpot", "percentile": 95, "threshold": "50ms", "phases": ["baseline", "all"]},
        {"sli": "itl", "percentile": 99, "threshold": "100ms", "phases": ["baseline", "all"]},
        {"sli": "e2e", "percentile": 95, "threshold": "5s", "phases": ["baseline", "fault", "all"]},
        {"sli": "error_rate", "threshold": "1%", "phases": ["baseline", "fault", "all"]},
        {"sli": "availability", "threshold": "99.5%", "tiers": ["pro", "enterprise"]},
        {"sli": "goodput", "threshold": "90%", "phases": ["baseline", "all"]},
        {"sli": "fallback_share", "threshold": "50%", "phases": ["fault"]},
        {"sli": "time_to_recover", "threshold": "60s"},
    ],
}
FAULTS = [
    {
        "name": "provider-outage",
        "start": 900,
        "end": 1080,
        "error_ratio": 0.3,
        "ttft_shift_s": 0.2,
        "served_by": "fallback",
    },
    {"name": "latency-spike", "start": 1800, "end": 1920, "ttft_shift_s": 0.6},
    {"name": "replica-kill", "start": 2700, "end": 2760, "error_ratio": 0.1, "kill": "llm-1"},
]


def evaluate_child(run_dir: Path, spec_path: Path) -> None:
    from aichaos.slo.evaluate import evaluate_run, write_result
    from aichaos.slo.spec import load_spec

    spec = load_spec(spec_path)
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate_run(run_dir, spec)
    write_result(run_dir, result)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_mb": peak_kb / 1024,
                "verdict": result.verdict,
                "rows": len(result.objectives),
                "requests": result.requests,
                "itl_gaps": result.latency["all"].itl.count if result.latency["all"].itl else 0,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=3600.0)
    parser.add_argument("--repeat", type=int, default=3, help="evaluations (fresh process each)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="build the run here and keep it (reused)")
    parser.add_argument("--evaluate", nargs=2, metavar=("RUN_DIR", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate:
        evaluate_child(Path(args.evaluate[0]), Path(args.evaluate[1]))
        return
    from synthetic_run import make_run_dir

    with tempfile.TemporaryDirectory(prefix="bench-slo-") as tmp:
        t0 = time.perf_counter()
        run = args.keep or Path(tmp) / "run"
        if not (run / "run.json").exists():
            rps = args.records / args.duration
            make_run_dir(run, seed=1, duration_s=args.duration, rps=rps, faults=FAULTS, chunk_s=60)
        built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (run / "requests").glob("*.parquet"))
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        print(f"built {run} in {built:.1f} s; requests/*.parquet {size / 1e6:.0f} MB")
        results = []
        for _ in range(max(1, args.repeat)):
            cmd = [sys.executable, __file__, "--evaluate", str(run), str(spec_path)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print(
                f"evaluate: {row['seconds']:.2f} s wall, {row['cpu_seconds']:.2f} s CPU, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"{row['requests']} records, {row['itl_gaps']} ITL gaps, {row['rows']} rows, "
                f"verdict {row['verdict']}"
            )
    summary = {
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "records": args.records,
        "load_average": os.getloadavg(),
        "parquet_mb": size / 1e6,
        "runs": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
