"""Calibration fidelity: does the simulator, calibrated from a real vLLM engine, reproduce that
engine at loads the fit never saw?

1. Starts one real vLLM replica (the vLLM environment, the project's model) through the
   supervisor, sized as the embedded topology sizes its replicas (``--backend vllm``).
2. Calibrates against it (``aichaos sim calibrate``'s full design) and writes the profile.
3. Runs the held-out loads below against the engine, stops it, starts the simulator with the
   profile and runs the same loads against it; each load runs alone on the machine.
4. Compares TTFT p50 and ITL p50 load by load, over the streams not delivered in one burst
   (``calibration.BURST_SHARE``; their number is reported); prints a Markdown table and
   writes ``bench/results/calibration.json``.

Loopback only; every load is bounded in time. Run (about 12 minutes on 2 cores):

    .venv/bin/python bench/bench_calibration.py [--profile-out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from aichaos.harness.calibration import (
    FULL,
    Point,
    calibrate,
    engine_facts,
    measure_load,
    to_profile,
    write_profile,
)
from aichaos.harness.stack import Stack
from aichaos.harness.targets import vllm_backend, with_vllm
from aichaos.harness.topology import parse_topology

HERE = Path(__file__).resolve().parent
SIM = [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--port", "{port}",
       "--admin-port", "{admin_port}"]  # fmt: skip
ENGINE = {"max_model_len": 2048, "max_num_seqs": 64, "kv_cache_gib": 1}  # default topology's
LOAD_S = 20.0


def held_out(model: str) -> dict[str, dict]:
    """Loads unlike any calibration point: other lengths, concurrency, and open-loop traffic."""

    def closed(users: int, prompt: int, low: int, high: int) -> dict:
        output = {"dist": "uniform", "low": low, "high": high}
        return {"arrival": {"mode": "closed", "concurrency": users},
                "workload": {"prompt_tokens": prompt, "output_tokens": output}}  # fmt: skip

    def poisson(rps: float, prompt: dict | int, output: dict | int) -> dict:
        return {"arrival": {"process": "poisson"}, "rate": {"shape": "constant", "rps": rps},
                "workload": {"prompt_tokens": prompt, "output_tokens": output}}  # fmt: skip

    loads = {
        "closed 6 users, prompt 256, output 32-96": closed(6, 256, 32, 96),
        "closed 24 users, prompt 96, output 100-220": closed(24, 96, 100, 220),
        "closed 10 users, prompt 768, output 24-72": closed(10, 768, 24, 72),
        "poisson 8/s, prompt lognormal 300, output 32-128": poisson(
            8.0, {"dist": "lognormal", "mean": 300, "sigma": 0.5, "max": 1500},
            {"dist": "uniform", "low": 32, "high": 128}),
        "poisson 3/s, prompt 1200, output 32": poisson(3.0, 1200, 32),
    }  # fmt: skip
    for i, spec in enumerate(loads.values()):
        spec.update(name=f"held-out-{i}", duration=LOAD_S, seed=100 + i,
                    target={"model": model},
                    tiers=[{"name": "calibrate", "share": 1.0, "headers": {}}])  # fmt: skip
    return loads


def run_loads(url: str, model: str, work: Path) -> dict[str, Point]:
    out = {}
    for i, (name, spec) in enumerate(held_out(model).items()):
        users = spec["arrival"].get("concurrency", 0)
        out[name] = measure_load(url, spec, work / f"held-out-{i}", "held-out", skip=users)
        p = out[name]
        print(f"  {name}: TTFT p50 {p.ttft_p50_s * 1e3:.2f} ms, ITL p50 "
              f"{p.itl_p50_s * 1e3:.2f} ms ({p.requests} requests, {p.errors} errors, "
              f"{p.bursts} delivered in one burst)",
              flush=True)  # fmt: skip
    return out


def stack_memory(stack: Stack, name: str) -> float:
    """Resident memory (GiB) of one service's process tree."""
    proc = psutil.Process(stack.pid(name))
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**30


def one_service(command: list[str], name: str) -> dict:
    return {"services": [{"name": name, "kind": "llm", "command": command, "engine": ENGINE}]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile-out", type=Path, default=HERE / "results" / "vllm-cpu-tiny.yaml")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    backend = vllm_backend()
    topology = with_vllm(parse_topology(one_service(SIM, "llm")), backend)
    started = time.monotonic()
    with Stack.up(topology, work / "engine-stack", prometheus=False) as stack:
        ready_s = time.monotonic() - started
        url = stack.url("llm")
        facts = engine_facts(url, backend.served_name)
        print(f"engine ready in {ready_s:.0f} s at {url}; calibrating", flush=True)
        cal = calibrate(facts, FULL, work / "calibrate", ENGINE["max_num_seqs"], 2048,
                        on_point=lambda p: print(f"  {p}", flush=True))  # fmt: skip
        print("held-out loads on the engine", flush=True)
        engine_points = run_loads(url, backend.served_name, work)
        engine_gib = stack_memory(stack, "llm")
    profile = to_profile(cal, args.profile_out.stem)
    write_profile(profile, args.profile_out, cal)
    sim = parse_topology(one_service([*SIM, "--profile", str(args.profile_out)], "sim"))
    with Stack.up(sim, work / "sim-stack", prometheus=False) as stack:
        print("held-out loads on the calibrated simulator", flush=True)
        sim_points = run_loads(stack.url("sim"), profile.model, work / "sim")
    rows = []
    for name, eng in engine_points.items():
        s = sim_points[name]
        rows.append({"load": name, "engine": eng.model_dump(), "simulator": s.model_dump(),
                     "ttft_error": s.ttft_p50_s / eng.ttft_p50_s - 1,
                     "itl_error": s.itl_p50_s / eng.itl_p50_s - 1})  # fmt: skip
    result = {
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "engine_ready_s": ready_s,
        "engine_rss_gib": engine_gib,
        "fit": cal.fit.model_dump(),
        "calibration_points": [p.model_dump() for p in cal.points],
        "held_out": rows,
        "median_abs_ttft_error": float(np.median([abs(r["ttft_error"]) for r in rows])),
        "median_abs_itl_error": float(np.median([abs(r["itl_error"]) for r in rows])),
    }
    out = HERE / "results" / "calibration.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| held-out load | TTFT p50 engine | simulator | error | ITL p50 engine | simulator "
          "| error | bursts left out (engine) |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        e, s = r["engine"], r["simulator"]
        print(f"| {r['load']} | {e['ttft_p50_s'] * 1e3:.1f} ms | {s['ttft_p50_s'] * 1e3:.1f} ms "
              f"| {r['ttft_error']:+.0%} | {e['itl_p50_s'] * 1e3:.2f} ms | "
              f"{s['itl_p50_s'] * 1e3:.2f} ms | {r['itl_error']:+.0%} | "
              f"{e['bursts']} of {e['bursts'] + e['requests']} |")  # fmt: skip
    print(f"\nmedian |error|: TTFT p50 {result['median_abs_ttft_error']:.1%}, ITL p50 "
          f"{result['median_abs_itl_error']:.1%}; wrote {out} and {args.profile_out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
