"""``aichaos run``: the game day command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from aichaos.rundir import InputError
from aichaos.units import parse_duration

from .allow_options import Allow, AllowExtension, AllowHttp, AllowProcess, permissions
from .run import run_game_day
from .run_plan import RunOptions


def run(
    scenario: Annotated[
        str | None, typer.Option(help="Built-in scenario name or a YAML file (default: tiered).")
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(help="Built-in experiment, a file, or 'none' (default: provider-outage)."),
    ] = None,
    slo: Annotated[
        str | None, typer.Option(help="Built-in SLO spec name or a YAML file (default: tiered).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Run length: 90, 90s, 5m (default: the scenario's).")
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="Send the load to this OpenAI-compatible URL instead of a stack."),
    ] = None,
    topology: Annotated[
        Path | None, typer.Option(help="Topology file (default: the embedded stack).")
    ] = None,
    backend: Annotated[str, typer.Option(help="LLM replicas: sim or vllm.")] = "sim",
    model: Annotated[
        str | None,
        typer.Option(help="Model for --backend vllm (default: the built one, see `model build`)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Locust worker processes.")] = 1,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Read server metrics from this Prometheus.")
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Baseline directory to compare with (and promote into).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Parent of the run directory.")] = Path("runs"),
    seed: Annotated[int | None, typer.Option(help="Seed of arrivals and prompts.")] = None,
    quick: Annotated[bool, typer.Option(help="A one-minute game day.")] = False,
    ci: Annotated[
        bool, typer.Option(help="Nightly CI mode: plain logs, step summary, baseline gate.")
    ] = False,
    promote: Annotated[
        bool, typer.Option(help="With --baseline: add this run to it when it passes.")
    ] = False,
    replay: Annotated[
        Path | None, typer.Option(help="Run the game day recorded in this run directory again.")
    ] = None,
    allow: Allow = None,
    allow_extension: AllowExtension = None,
    allow_process: AllowProcess = False,
    allow_http: AllowHttp = None,
    open_report: Annotated[
        bool, typer.Option("--open", help="Open the report in a browser at the end.")
    ] = False,
) -> None:
    """Run a game day: stack, traffic, faults, SLO evaluation and report, one exit code
    (0 SLOs met, 1 an SLO failed, 2 bad input, 3 could not run, 4 a key objective
    inconclusive)."""
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        raise InputError("command line", "--duration", str(exc), duration) from None
    allowed = permissions(allow, allow_extension, allow_process, allow_http)
    options = RunOptions(
        scenario=scenario,
        experiment=experiment,
        slo=slo,
        duration_s=seconds,
        target=target,
        topology=topology,
        backend=backend,
        model=model,
        workers=workers,
        prometheus_url=prometheus_url,
        baseline=baseline,
        out=out,
        seed=seed,
        quick=quick,
        ci=ci,
        promote=promote,
        replay=replay,
        open_report=open_report,
        permissions=allowed,
        command=["aichaos", *sys.argv[1:]],
    )
    raise typer.Exit(run_game_day(options))
