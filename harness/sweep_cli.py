"""``aichaos sweep``: the rate at which the SLOs break, with no fault and under each fault."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aichaos.validation import validate_model

from .allow_options import Allow, AllowExtension, AllowHttp, AllowProcess, permissions
from .sweep import SweepOptions, run_sweep


def sweep(
    scenario: Annotated[
        str, typer.Option(help="Built-in scenario or YAML file: its workload, at each rate.")
    ] = "steady",
    rates: Annotated[
        str | None, typer.Option(help="The rates to climb, req/s: 4,8,16 (else --start..--max).")
    ] = None,
    start: Annotated[float, typer.Option(help="The first rate, req/s.")] = 2.0,
    factor: Annotated[float, typer.Option(help="Each rate is the one before times this.")] = 2.0,
    max_rps: Annotated[float, typer.Option("--max", help="The highest rate, req/s.")] = 128.0,
    step: Annotated[str, typer.Option(help="Each step's length: 60, 60s, 2m.")] = "60s",
    slo: Annotated[str, typer.Option(help="Built-in SLO spec or YAML file.")] = "default",
    under: Annotated[
        list[str] | None,
        typer.Option(help="An experiment whose fault is held through every step (repeatable)."),
    ] = None,
    narrow: Annotated[
        int, typer.Option(help="Steps bisecting between the last hold and the break.")
    ] = 3,
    require_rps: Annotated[
        float | None, typer.Option(help="Exit 1 when the no-fault capacity is below this.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Sweep this OpenAI-compatible URL instead of a stack.")
    ] = None,
    topology: Annotated[
        Path | None, typer.Option(help="Topology file (default: the embedded stack).")
    ] = None,
    backend: Annotated[str, typer.Option(help="LLM replicas: sim or vllm.")] = "sim",
    model: Annotated[str | None, typer.Option(help="Model for --backend vllm.")] = None,
    workers: Annotated[int, typer.Option(help="Locust worker processes.")] = 1,
    out: Annotated[Path, typer.Option(help="Parent of the sweep directory.")] = Path("runs"),
    seed: Annotated[int | None, typer.Option(help="Seed of arrivals and prompts.")] = None,
    ci: Annotated[bool, typer.Option(help="Plain logs for CI.")] = False,
    allow: Allow = None,
    allow_extension: AllowExtension = None,
    allow_process: AllowProcess = False,
    allow_http: AllowHttp = None,
) -> None:
    """Climb offered rates until the SLOs break, then narrow to the highest rate that holds;
    with --under, again with each fault held through every step: capacity, capacity under
    failure and the headroom between them, in sweep.json and sweep.html (exit 0 done, 1 below
    --require-rps, 2 bad input, 3 could not run or interrupted)."""
    data = {
        "scenario": scenario,
        "rates": [x for x in rates.split(",") if x.strip()] if rates else None,
        "start_rps": start,
        "factor": factor,
        "max_rps": max_rps,
        "step_s": step,
        "slo": slo,
        "under": under or [],
        "narrow": narrow,
        "require_rps": require_rps,
        "target": target,
        "topology": topology,
        "backend": backend,
        "model": model,
        "workers": workers,
        "out": out,
        "seed": seed,
        "ci": ci,
        "permissions": permissions(allow, allow_extension, allow_process, allow_http),
    }
    options = validate_model(data, SweepOptions, "command line")
    raise typer.Exit(run_sweep(options))
