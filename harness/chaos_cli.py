"""``aichaos experiments list|show|validate`` and ``aichaos chaos EXPERIMENT``: run one
experiment against a running stack (``aichaos stack up --detach``), with or without load, and
restore everything after it, Ctrl-C and SIGTERM included."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from aichaos import exits
from aichaos.errors import BadInput, NotCompleted
from aichaos.experiments import catalog
from aichaos.experiments.context import RUN_DIR, STACK_FILE, TARGET, TOXIPROXY_URL
from aichaos.processes import ProcessRef
from aichaos.rundir import RUN_JSON, InputError, RunManifest
from aichaos.stackfile import StackState
from aichaos.units import parse_duration
from aichaos.waiting import wait_until

from . import owner_watch
from .allow_options import Allow, AllowExtension, AllowHttp, AllowProcess, permissions
from .lifecycle import RunLifecycle, versions
from .stack_state import STATE_FILE, StackNotFound, find_run_dir, read_state

experiments_app = typer.Typer(help="The shipped chaos experiments.", no_args_is_help=True)

ROLLBACK_WAIT_S = 120.0
DRAIN_S = 30.0  # the load's requests in flight at the end of its schedule get this long


@experiments_app.command("list")
def list_cmd() -> None:
    """Name and title of every shipped experiment."""
    for name, title in catalog.list_experiments():
        typer.echo(f"{name:24} {title}")


@experiments_app.command("show")
def show_cmd(experiment: Annotated[str, typer.Argument(help="Name or file.")]) -> None:
    """Print an experiment file as JSON (read only: ``validate`` checks it)."""
    data = catalog.read_experiment(experiment)
    typer.echo(json.dumps(data, indent=2))


@experiments_app.command("validate")
def validate_cmd(
    experiments: Annotated[
        list[str] | None, typer.Argument(help="Names or files (default: every shipped one).")
    ] = None,
    allow: Allow = None,
    allow_extension: AllowExtension = None,
    allow_process: AllowProcess = False,
    allow_http: AllowHttp = None,
) -> None:
    """Check experiments against the blast-radius policy (the same answer ``chaos`` and
    ``run`` give with the same flags), as ``chaos validate`` does (activities resolvable) and
    aichaos's schedule fields; one line per experiment."""
    refs = experiments or [name for name, _ in catalog.list_experiments()]
    allowed = permissions(allow, allow_extension, allow_process, allow_http)
    bad = 0
    for ref in refs:
        try:
            catalog.load_experiment(ref, allowed)
        except InputError as exc:
            bad += 1
            typer.echo(f"error: {exc}", err=True)
        else:
            typer.echo(f"ok: {ref}")
    if bad:
        raise typer.Exit(exits.BAD_INPUT)


def _start_load(scenario: str, duration: float | None, target: str, out: Path) -> Any:
    from aichaos.scenarios.runner import LoadRunner
    from aichaos.scenarios.spec import load_scenario

    runner = LoadRunner(load_scenario(scenario, duration_s=duration), target, out)
    return runner


def chaos(
    experiment: Annotated[str, typer.Argument(help="Shipped experiment name or file.")],
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run directory of the running stack (default: .aichaos/stack.json's)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where journal.json and events go (default: STACK_RUN_DIR/chaos-*)."),
    ] = None,
    scenario: Annotated[
        str | None, typer.Option(help="Also drive this load scenario (name or file).")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Scenario duration, with --scenario (90, 90s, 5m).")
    ] = None,
    allow: Allow = None,
    allow_extension: AllowExtension = None,
    allow_process: AllowProcess = False,
    allow_http: AllowHttp = None,
    toxiproxy_url: Annotated[
        str | None, typer.Option(help="Toxiproxy API (default: the stack's proxy server).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Gateway URL (default: the stack's).")] = None,
) -> None:
    """Run EXPERIMENT against the running stack; rollbacks and a full restore always run.

    Kubernetes experiments (no local stack needed) name what they may touch: ``--allow
    aichaos`` (a namespace), ``--allow retriever`` (a proxy of ``--toxiproxy-url``)."""
    from aichaos.experiments.runner import ChaosRun
    from aichaos.experiments.safety import restore_all

    allowed = permissions(allow, allow_extension, allow_process, allow_http)
    data = catalog.load_experiment(experiment, allowed)
    stack_dir, state = _running_stack(run_dir, without_stack=bool(allow) and run_dir is None)
    name = catalog.resolve(experiment).stem
    stamp = f"chaos-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out or (stack_dir / stamp if stack_dir else Path("runs") / stamp)
    if (out / RUN_JSON).exists():
        raise BadInput(f"--out: {out}: holds a run already; expected an empty or new directory")
    out.mkdir(parents=True, exist_ok=True)
    configuration: dict[str, Any] = {RUN_DIR: str(out.resolve())}
    if stack_dir is not None:
        configuration[STACK_FILE] = str((stack_dir / STATE_FILE).resolve())
    if toxiproxy_url:
        configuration[TOXIPROXY_URL] = toxiproxy_url
    if target:
        configuration[TARGET] = target
    seconds = parse_duration(duration) if duration is not None else None
    load = None
    if scenario is not None:
        load = _start_load(scenario, seconds, target or _gateway_url(state), out)
    run = ChaosRun(data, out, configuration=configuration, t0=time.time(), permissions=allowed)
    manifest = RunManifest(
        id=out.name,
        kind="chaos",
        owner=ProcessRef.current(),
        command=sys.argv,
        versions=versions(),
        started_at=time.time(),
        experiment=data,
        scenario=load.scenario.to_dict() if load is not None else None,
        target=load.target_url if load is not None else target,
    )
    # a kill -9 of this process runs no finally: the watch then restores what it faulted
    watch = owner_watch.spawn(out, ProcessRef.current(), restore=configuration)
    with RunLifecycle(out, manifest) as life:
        try:
            status = _drive(run, load, life)
        finally:
            try:
                if load is not None:
                    load.stop()
            finally:
                for note in restore_all(configuration):
                    typer.echo(f"restore: {note}")
                watch.terminate()  # restored already: nothing left for it to guard
                watch.wait(timeout=10)
        if status != "completed" and not life.interrupted:
            life.failed(f"the experiment ended {status} ({out / 'journal.json'})")
    _summary(run, status, out)
    raise typer.Exit(life.exit_code(_exit_code(status, run.deviated)))


def _drive(run: Any, load: Any, life: RunLifecycle) -> str:
    """The experiment (and the load, with --scenario) to its end or to a signal; its status."""
    status = "failed"
    if load is not None:
        run.t0 = load.start()
        life.manifest.t0 = run.t0
        life.save()
    typer.echo(f"chaos: {run.title} (journal and events in {life.run_dir})")
    flag = life.signals.flag
    if not flag.is_set():
        run.start()
        status = _follow(run, load, flag)
    if load is not None:  # the scenario runs its course (Ctrl-C ends it)
        left = run.t0 + load.scenario.duration_s + DRAIN_S - time.time()
        wait_until(lambda: not load.alive or flag.is_set(), max(left, 0.0), 0.5)
    if flag.is_set():
        typer.echo("chaos: interrupted; rolling back", err=True)
        run.stop()
        # a second Ctrl-C: go straight to the restore
        wait_until(lambda: run.wait(0.2) != "running" or life.signals.count > 1, ROLLBACK_WAIT_S)
        status = "interrupted"
    return status


def _running_stack(
    run_dir: Path | None, without_stack: bool
) -> tuple[Path | None, StackState | None]:
    """The running local stack's directory and state. With only ``--allow`` targets (a
    Kubernetes cluster, a real Toxiproxy) and no local stack, ``(None, None)``."""
    try:
        stack_dir = find_run_dir(run_dir)
        state = read_state(stack_dir)
    except StackNotFound:
        if without_stack:
            return None, None
        raise
    if not state.supervisor_running() or state.status not in ("ready", "running"):
        if without_stack:
            return None, None
        message = f"the stack in {stack_dir} is not running (status {state.status})"
        raise NotCompleted(message)
    return stack_dir, state


def _gateway_url(state: StackState | None) -> str:
    gateway = state.service_of_kind("gateway") if state is not None else None
    if gateway is None or gateway.url is None:
        raise InputError("stack.json", "services", "a gateway service (or pass --target)")
    return gateway.url


def _follow(run: Any, load: Any, interrupted: Any) -> str:
    """Print each fault window as it opens and closes; stop the experiment if the load dies;
    return at a signal (``interrupted`` set) too."""
    seen: dict[str, tuple[bool, bool]] = {}
    while not interrupted.is_set():
        status = run.wait(0.5)
        for window in run.windows():
            key = f"{window.name}@{window.start}"
            opened, closed = seen.get(key, (False, False))
            if not opened:
                typer.echo(f"  +{window.start - run.t0:6.1f}s fault on:  {window.name}")
            if window.end is not None and not closed:
                typer.echo(f"  +{window.end - run.t0:6.1f}s fault off: {window.name}")
            seen[key] = (True, window.end is not None)
        if status != "running":
            return status
        if load is not None and not load.alive and not run.stopping():
            typer.echo("chaos: the load generator stopped; ending the experiment", err=True)
            run.stop()
    return "interrupted"


def _summary(run: Any, status: str, out: Path) -> None:
    deviated = " (steady state deviated)" if run.deviated else ""
    typer.echo(f"chaos: {status}{deviated}; journal {out / 'journal.json'}")


def _exit_code(status: str, deviated: bool) -> int:
    if status == "interrupted":
        return exits.NOT_COMPLETED
    if status == "completed":
        return exits.SLO_FAILED if deviated else exits.OK
    if status == "failed":
        return exits.SLO_FAILED
    return exits.NOT_COMPLETED
