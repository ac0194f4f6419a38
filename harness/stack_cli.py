"""``aichaos stack up|status|down``: the local reference stack from a topology file.

Exit codes (DESIGN): 0 done; 2 bad input (topology, flags, a stack already running);
3 the stack could not start or is not running.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from aichaos import exits
from aichaos.errors import BadInput, NotCompleted
from aichaos.stackfile import StackState

from .error_handler import HandledGroup
from .orphans import find_orphans, remove_orphans
from .signals import SignalFlag
from .stack import StackClient
from .stack_state import (
    DEFAULT_POINTER,
    STATE_FILE,
    StackNotFound,
    process_alive,
    read_state,
    stack_places,
)
from .supervisor import (
    StackInterrupted,
    StackStartError,
    Supervisor,
    log_tail,
)
from .targets import vllm_backend, with_llm_url, with_vllm
from .topology import DEFAULT_TOPOLOGY, Topology, TopologyError, load_topology
from .vllm_env import VllmUnavailable

app = typer.Typer(
    cls=HandledGroup,  # the supervisor child runs this command line on its own
    help="Bring the local reference stack up, show it, take it down.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _refuse_running(pointer: Path, run_dir: Path) -> None:
    """One stack per pointer (and per run directory): a second would be unreachable."""
    candidates = [run_dir]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        candidates.append(Path(json.loads(pointer.read_text())["run_dir"]))
    for candidate in candidates:
        try:
            state = read_state(candidate)
        except StackNotFound:
            continue
        owner = state.supervisor
        if owner is not None and owner.alive() and state.status in ("starting", "ready"):
            pid = owner.pid
            raise BadInput(
                f"a stack is already running from {candidate} (supervisor pid {pid}); "
                "run `aichaos stack down` first"
            )


def _say(command: str) -> Any:
    return lambda line: typer.echo(f"aichaos {command}: {line}", err=True)


def _default_run_dir() -> Path:
    return Path("runs") / time.strftime("stack-%Y%m%d-%H%M%S")


@app.command()
def up(
    topology: Annotated[
        Path, typer.Option("--topology", "-t", help="Topology file (YAML).")
    ] = DEFAULT_TOPOLOGY,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once ready; supervise in background.")
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="State, logs and events (default: runs/stack-<time>)."),
    ] = None,
    no_prometheus: Annotated[
        bool, typer.Option("--no-prometheus", help="Do not start Prometheus even if present.")
    ] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="LLM replicas: 'sim' (simulator) or 'vllm'.")
    ] = "sim",
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model for --backend vllm (default: the built one, see `model build`)."
        ),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option("--llm-url", help="Any OpenAI-compatible endpoint in place of the pool."),
    ] = None,
    pointer: Annotated[Path, typer.Option("--pointer", hidden=True)] = DEFAULT_POINTER,
) -> None:
    """Start every service of a topology, wait until all are ready, keep them running."""
    spec = load_topology(topology)
    run_dir = (run_dir or _default_run_dir()).resolve()
    # a stack nobody owns any more is stopped rather than left serving beside the new one
    remove_orphans(stack_places(pointer, run_dir.parent), _say("stack up"), "aichaos stack up")
    _refuse_running(pointer, run_dir)
    retargeted = _retarget(spec, backend, model, llm_url)
    if retargeted is not spec:
        spec = retargeted
        run_dir.mkdir(parents=True, exist_ok=True)
        topology = run_dir / "topology.yaml"
        topology.write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    if detach:
        raise typer.Exit(_up_detached(topology, run_dir, pointer, no_prometheus))
    raise typer.Exit(_up_foreground(spec, topology, run_dir, pointer, no_prometheus))


def _retarget(spec: Topology, backend: str, model: str | None, llm_url: str | None) -> Topology:
    """The topology with vLLM or an outside endpoint in place of the simulators."""
    if backend not in ("sim", "vllm"):
        raise TopologyError(f"--backend {backend}: expected 'sim' or 'vllm'")
    if model and backend != "vllm":
        raise TopologyError("--model: expected --backend vllm with it")
    if backend == "vllm":
        try:
            spec = with_vllm(spec, vllm_backend(model))
        except VllmUnavailable as exc:  # a flag this machine cannot honour: bad input here
            raise BadInput(f"--backend vllm: {exc}") from None
    if llm_url:
        spec = with_llm_url(spec, llm_url)
    return spec


def _up_foreground(
    spec: Topology, topology: Path, run_dir: Path, pointer: Path, no_prometheus: bool
) -> int:
    stop = SignalFlag()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        supervisor = Supervisor(
            spec, run_dir, source=str(topology), prometheus=not no_prometheus, pointer=pointer
        )
        try:
            supervisor.start(interrupt=stop)
        except StackStartError as exc:
            typer.echo(f"aichaos stack up: {exc.report()}", err=True)
            return exits.NOT_COMPLETED
        except StackInterrupted:
            typer.echo("aichaos stack up: interrupted; everything started is stopped", err=True)
            return 130
        try:
            typer.echo(_render(StackClient(run_dir).status()))
            typer.echo("supervising; Ctrl-C or `aichaos stack down` stops the stack")
            sys.stdout.flush()
            supervisor.run(stop)
        finally:
            supervisor.shutdown()
        name = signal.Signals(received[0]).name if received else "exit"
        typer.echo(f"stack stopped ({name}); no process left")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _up_detached(topology: Path, run_dir: Path, pointer: Path, no_prometheus: bool) -> int:
    """Run the foreground supervisor in a new session, return when it reports ready."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    state_path.unlink(missing_ok=True)  # so an old file is not taken for this start's
    command = [
        sys.executable,
        "-m",
        "aichaos.harness.stack_cli",
        "up",
        "--topology",
        str(topology.resolve()),
        "--run-dir",
        str(run_dir),
        "--pointer",
        str(pointer.resolve()),
    ]
    if no_prometheus:
        command.append("--no-prometheus")
    log_path = run_dir / "supervisor.log"
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no terminal: Ctrl-C in this shell does not reach it
        )
    deadline = time.monotonic() + _start_budget(topology)
    try:
        while time.monotonic() < deadline:
            code = child.poll()
            state = _try_state(run_dir)
            if state and state.status == "ready":
                typer.echo(_render(StackClient(run_dir).status()))
                typer.echo("supervising in the background; `aichaos stack down` stops the stack")
                return 0
            if code is not None:
                state = _try_state(run_dir)
                error = (state.error if state else None) or log_tail(log_path)
                typer.echo(f"aichaos stack up: {error}", err=True)
                return exits.NOT_COMPLETED
            time.sleep(0.1)
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        typer.echo("aichaos stack up: interrupted; everything started is stopped", err=True)
        return 130
    child.send_signal(signal.SIGTERM)
    child.wait(60)
    typer.echo(f"aichaos stack up: not ready in time; see {log_path}", err=True)
    return exits.NOT_COMPLETED


def _start_budget(topology: Path) -> float:
    spec = load_topology(topology)
    return sum(s.ready_timeout * s.replicas for s in spec.services) + 90.0


def _try_state(run_dir: Path) -> StackState | None:
    try:
        return read_state(run_dir)
    except StackNotFound:
        return None


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Stack to show (default: the last started).")
    ] = None,
    pointer: Annotated[Path, typer.Option("--pointer", hidden=True)] = DEFAULT_POINTER,
) -> None:
    """Show the services, their URLs and states; exit 3 when the stack is not running."""
    try:
        client = StackClient.attach(run_dir, pointer)
    except StackNotFound:
        orphans = find_orphans(stack_places(pointer))
        for orphan in orphans:
            typer.echo(f"{orphan.describe()}; {orphan.remedy()}")
        if orphans:
            raise typer.Exit(exits.NOT_COMPLETED) from None
        raise
    state = client.status()
    typer.echo(json.dumps(state.model_dump(mode="json"), indent=2) if as_json else _render(state))
    if state.supervisor_alive:
        raise typer.Exit(0)
    for orphan in [] if as_json else find_orphans(stack_places(pointer)):
        # another stack nobody owns, e.g. one an `aichaos run` left
        if orphan.run_dir != client.run_dir.resolve():
            typer.echo(f"{orphan.describe()}; {orphan.remedy()}")
    raise typer.Exit(exits.NOT_COMPLETED)


@app.command()
def down(
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Stack to stop (default: the last started).")
    ] = None,
    pointer: Annotated[Path, typer.Option("--pointer", hidden=True)] = DEFAULT_POINTER,
) -> None:
    """Stop the stack and every process it started."""
    try:
        client = StackClient.attach(run_dir, pointer)
    except StackNotFound as exc:
        if not remove_orphans(stack_places(pointer), typer.echo, "aichaos stack down"):
            typer.echo(f"aichaos stack down: nothing to stop ({exc})")
        raise typer.Exit(0) from None
    result = client.down()
    left = [pid for pid in client.pids() if process_alive(pid)]
    if left:
        raise NotCompleted(f"processes still running: {left}")
    note = ""
    if result["leftovers_stopped"]:
        note = f" (stopped {len(result['leftovers_stopped'])} left by a dead supervisor)"
    typer.echo(f"stack stopped: {client.run_dir}{note}")


def _render(state: StackState) -> str:
    pid = state.supervisor.pid if state.supervisor else None
    lines = [f"stack {state.name}: {state.status}  (supervisor pid {pid}, run dir {state.run_dir})"]
    rows = [("SERVICE", "KIND", "STATE", "PID", "URL", "RESTARTS")]
    for name, svc in state.services.items():
        shown = svc.pid if svc.alive is not False else "-"
        rows.append((name, svc.kind, str(svc.state), str(shown), str(svc.url), str(svc.restarts)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    if state.proxies:
        lines.append("proxies:")
        for name, proxy in state.proxies.items():
            lines.append(f"  {name}: {proxy.url} -> {proxy.upstream}")
    admins = {name: svc.admin_url for name, svc in state.services.items() if svc.admin_url}
    if admins:
        lines.append("fault APIs (own loopback ports, never behind a proxy):")
        lines += [f"  {name}: {url}/admin/faults" for name, url in admins.items()]
    prom = state.prometheus
    if prom:
        lines.append(f"prometheus: {prom.url}" if prom.url else f"prometheus: {prom.skipped}")
    lines.append(f"events: {state.events}")
    if state.status == "orphaned":
        lines.append(
            "its owner is gone but services still run; "
            f"`aichaos stack down --run-dir {state.run_dir}` removes it"
        )
    if state.error:
        lines.append(f"error: {state.error}")
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    app()
