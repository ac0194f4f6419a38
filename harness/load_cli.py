"""``aichaos load``, ``aichaos scenarios`` and ``aichaos worker``: load only, no faults, no SLOs.

``aichaos load SCENARIO --target URL`` writes a run directory (run.json, requests/,
events.jsonl, load/) with one record per request; ``aichaos load calibrate`` measures this
machine's load generator against the simulator's fixed-latency profile. Exit codes: 0 done,
2 bad input, 3 target unreachable or the load generator failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from aichaos import exits
from aichaos.errors import BadInput, NotCompleted
from aichaos.harness.lifecycle import RunLifecycle, versions
from aichaos.harness.urls import check_url, unreachable
from aichaos.load_health import LoadProgress
from aichaos.processes import ProcessRef
from aichaos.rundir import EVENTS_JSONL, EventKind, EventLog, InputError, RunManifest
from aichaos.units import parse_duration
from aichaos.waiting import wait_until

scenarios_app = typer.Typer(help="Built-in and custom traffic scenarios.", no_args_is_help=True)

CALIBRATE_RATES = "5,10,20,40,80"


def _progress_line(p: LoadProgress) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(p.errors_by_kind.items())) or "none"
    ttft = f"{p.ttft_p95_s * 1000:.1f} ms" if p.ttft_p95_s is not None else "-"
    lag = f"{p.lag_p99_s * 1000:.2f} ms" if p.lag_p99_s is not None else "-"
    return (
        f"{p.elapsed_s:6.1f}s  sent {p.sent}/{p.scheduled}  done {p.done}  "
        f"{p.rps:.1f} rps  TTFT p95 {ttft}  lag p99 {lag}  errors: {errors}"
    )


def run_load(scenario_ref: str, target: str, duration: float | None, workers: int,
             out: Path | None, seed: int | None, web_ui: bool, remote_workers: int = 0,
             master_bind: str = "127.0.0.1", master_port: int | None = None) -> int:  # fmt: skip
    from aichaos.scenarios.runner import LoadRunner
    from aichaos.scenarios.spec import load_scenario
    from aichaos.scenarios.worker_gate import resolve_token

    scenario = load_scenario(scenario_ref, duration_s=duration, seed=seed)
    url = check_url("--target", target)
    if workers < 1 and remote_workers < 1:
        raise InputError("--workers", "workers", "at least 1", workers)
    token = resolve_token()  # $AICHAOS_LOAD_TOKEN, else a fresh one for this run
    why = unreachable(url)
    if why is not None:
        raise NotCompleted(f"target {url} unreachable: {why}")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out else Path("runs") / f"load-{stamp}-{scenario.name}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BadInput(f"--out: {run_dir}: expected an empty or new directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    events = EventLog(run_dir / EVENTS_JSONL, source="load")
    owner = ProcessRef.current()  # the Locust processes stop when this process dies
    manifest = RunManifest(
        id=run_dir.name,
        kind="load",
        owner=owner,
        command=sys.argv,
        versions=versions(),
        seed=scenario.seed,
        started_at=time.time(),
        scenario=scenario.to_dict(),
        target=url,
        warmup_s=scenario.warmup_s,
        duration_s=scenario.duration_s,
        workers=workers,
    )
    runner = LoadRunner(
        scenario,
        url,
        run_dir,
        workers=workers,
        web_ui=web_ui,
        remote_workers=remote_workers,
        master_bind=master_bind,
        master_port=master_port,
        token=token,
        owner=owner,
    )
    with RunLifecycle(run_dir, manifest, on_signal=runner.request_stop) as life:
        code = _drive(runner, life, events, scenario.name, master_bind)
    _summary(run_dir)
    if life.interrupted:
        typer.echo(f"interrupted: the load stopped; run.json says aborted ({run_dir})", err=True)
        return exits.NOT_COMPLETED
    if code != 0:
        typer.echo(f"error: the load generator exited with {code}:\n{runner.log_tail()}", err=True)
        return exits.NOT_COMPLETED
    return 0


def _drive(runner: Any, life: RunLifecycle, events: EventLog, name: str, master_bind: str) -> int:
    """Start the load, show its progress until it ends; the load generator's exit code."""
    from aichaos.loopback import is_loopback_name

    t0 = runner.start()
    life.manifest.t0 = t0
    life.save()
    events.emit(EventKind.LOAD, name, "start", {"t0": t0, "workers": runner.workers}, t=t0)
    tty = sys.stderr.isatty()
    typer.echo(f"run directory: {life.run_dir}", err=True)
    if runner.distributed and not is_loopback_name(master_bind):
        # beyond loopback only workers holding this run's token may join (and get the scenario)
        typer.echo(f"workers join with: {runner.worker_command()}", err=True)
    try:
        every = 1.0 if tty else 5.0  # a log file gets a line every 5 s
        shown = 0.0
        while runner.alive:
            if time.monotonic() - shown >= every:
                shown = time.monotonic()
                line = _progress_line(runner.progress())
                typer.echo(("\r" + line + "\033[K") if tty else line, err=True, nl=not tty)
            time.sleep(0.1)
        code = runner.wait(timeout=30, kill=True)
    finally:
        if runner.alive:
            runner.stop()
    final = runner.progress()
    if tty:
        typer.echo("", err=True)
    typer.echo(_progress_line(final), err=True)
    if final.refused_workers:
        typer.echo(f"warning: {final.refused_workers} worker connection(s) refused for lacking "
                   "the run's token; none of their rows were recorded", err=True)  # fmt: skip
    events.emit(EventKind.LOAD, name, "end", {"exit_code": code, "sent": final.sent})
    if code != 0:
        life.failed(f"the load generator exited with {code}")
    return code


def _summary(run_dir: Path) -> None:
    import numpy as np

    from aichaos.rundir import read_requests

    table, _ = read_requests(run_dir)
    df = table.to_pandas()
    ok = df[df.status == "ok"]
    parts = [f"{len(df)} requests, {len(ok)} ok"]
    if len(ok):
        ttft = ok.ttft_s.dropna().to_numpy(dtype=float)
        if len(ttft):
            p50, p95, p99 = (np.percentile(ttft, q) * 1000 for q in (50, 95, 99))
            parts.append(f"TTFT p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms")
    typer.echo("; ".join(parts), err=True)


def _start_fixed_sim(log_dir: Path) -> tuple[subprocess.Popen, str]:
    """The fixed-latency simulator, logging what it serves to ``LOG_DIR/served.jsonl``."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(log_dir / "fixed-latency-sim.log", "wb")  # noqa: SIM115 - child owns it
    cmd = [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--port", str(port),
           "--profile", "fixed-latency",
           "--request-log", str(log_dir / "served.jsonl")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answered_or_exited() -> str | None:
        if proc.poll() is not None:
            return "exited"
        try:
            return "ready" if httpx.get(f"{url}/health", timeout=0.5).status_code == 200 else None
        except httpx.HTTPError:
            return None

    if wait_until(answered_or_exited, 30, interval=0.1) == "ready":
        return proc, url
    _stop_proc(proc)
    raise NotCompleted("the fixed-latency simulator did not start")


def _stop_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def run_calibrate(rates_text: str, duration: float, workers: int, out: Path | None) -> int:
    from aichaos.scenarios.calibrate import floor_s, honest, sweep

    try:
        rates = [float(r) for r in rates_text.split(",") if r.strip()]
        if not rates or min(rates) <= 0:
            raise ValueError
    except ValueError:
        raise BadInput(
            f"--rates: expected positive numbers like 5,10,20, got {rates_text!r}"
        ) from None
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="aichaos-calibrate-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sim, url = _start_fixed_sim(out_dir)
    typer.echo(f"fixed-latency simulator at {url} (TTFT 100 ms, ITL 10 ms, 50 tokens)")
    served_log = out_dir / "served.jsonl"
    try:
        floor = floor_s(url, served_log)
    except OSError as exc:
        _stop_proc(sim)
        raise NotCompleted(f"the simulator does not answer: {exc}") from None
    typer.echo(
        "TTFT errors below: each request's reading minus the TTFT the server says it served, "
        f"minus the floor a bare socket sees at no load ({floor * 1000:.2f} ms)"
    )
    typer.echo(
        f"{'rate':>6} {'sent':>6} {'streams':>7} {'TTFT err p50/p99 ms':>21} "
        f"{'ITL err p50/p99 ms':>20} {'lag p50/p99 ms':>16} {'CPU%':>5}  honest"
    )

    def show(r: dict[str, Any]) -> None:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.2f}"

        cpu = "-" if r["cpu_max_percent"] is None else f"{r['cpu_max_percent']:.0f}"
        typer.echo(
            f"{r['rate']:>6g} {r['requests']:>6} {r['peak_streams']:>7} "
            f"{ms(r['ttft_err_p50_s']) + ' / ' + ms(r['ttft_err_p99_s']):>21} "
            f"{ms(r['itl_err_p50_s']) + ' / ' + ms(r['itl_err_p99_s']):>20} "
            f"{ms(r['lag_p50_s']) + ' / ' + ms(r['lag_p99_s']):>16} {cpu:>5}  "
            f"{'yes' if honest(r) else 'no'}"
        )

    try:
        rows = sweep(url, served_log, rates, out_dir, duration_s=duration, workers=workers,
                     on_step=show, floor=floor)  # fmt: skip
    finally:
        _stop_proc(sim)
    (out_dir / "calibration.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    good = [r["rate"] for r in rows if honest(r)]
    ceiling = f"{max(good):g} requests/s" if good else "below the lowest rate tried"
    typer.echo(f"honest ceiling (TTFT error < 1 ms p50, < 5 ms p99; lag p99 < 5 ms): {ceiling}")
    typer.echo(f"runs in {out_dir}")
    return 0


def load(
    scenario: Annotated[
        str, typer.Argument(help="Built-in name, a scenario file, or 'calibrate'.")
    ],
    target: Annotated[
        str | None, typer.Option(help="Base URL of the OpenAI-compatible target.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option(help="Override the duration (90, 90s, 5m).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Local Locust worker processes.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/load-...).")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    web_ui: Annotated[
        bool, typer.Option("--web-ui", help="Serve Locust's web UI on 127.0.0.1:8089.")
    ] = False,
    remote_workers: Annotated[
        int, typer.Option(help="Extra workers joining with 'aichaos worker'.")
    ] = 0,
    master_bind: Annotated[
        str, typer.Option(help="Address the Locust master listens on.")
    ] = "127.0.0.1",
    master_port: Annotated[int | None, typer.Option(help="Port of the Locust master.")] = None,
    rates: Annotated[str, typer.Option(help="calibrate: request rates to try.")] = CALIBRATE_RATES,
) -> None:
    """Drive a scenario at --target and record every request (or: load calibrate)."""
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        raise BadInput(f"--duration: expected {exc}, got {duration!r}") from None
    if scenario == "calibrate":
        raise typer.Exit(run_calibrate(rates, seconds or 8.0, workers, out))
    if target is None:
        raise BadInput("--target: expected the target's base URL (http://host:port)")
    code = run_load(scenario, target, seconds, workers, out, seed, web_ui, remote_workers,
                    master_bind, master_port)  # fmt: skip
    raise typer.Exit(code)


def worker(
    master: Annotated[str, typer.Option(help="Host of the Locust master ('aichaos load').")],
    master_port: Annotated[int, typer.Option(help="Port of the Locust master.")] = 5557,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="AICHAOS_LOAD_TOKEN",
            show_envvar=True,
            help="The run's worker token, as 'aichaos load' prints it (prefer the variable: "
            "an option shows in ps).",
        ),
    ] = None,
) -> None:
    """Join a load run's Locust master from this machine; records go back to the master.
    Exit 2 when the token is missing or the master refuses it."""
    from aichaos.scenarios.worker_gate import TOKEN_ENV

    if not token:
        raise BadInput(f"--token: expected the run's worker token (or {TOKEN_ENV})")
    me = ProcessRef.current()  # the worker process stops if this command is killed
    cmd = [sys.executable, "-m", "aichaos.scenarios.locust_proc", "worker", "--master", master,
           "--master-port", str(master_port), "--owner-pid", str(me.pid),
           "--owner-start-time", str(me.start_time)]  # fmt: skip
    raise typer.Exit(subprocess.call(cmd, env={**os.environ, TOKEN_ENV: token}))


@scenarios_app.command("list")
def list_scenarios() -> None:
    """The built-in scenarios."""
    from aichaos.scenarios.spec import builtin_names, load_scenario

    for name in builtin_names():
        s = load_scenario(name)
        typer.echo(f"{name:10} {s.duration_s:>7g}s  {s.description.strip().splitlines()[0]}")


@scenarios_app.command("show")
def show_scenario(
    scenario: Annotated[str, typer.Argument(help="Built-in name or scenario file.")],
    schedule: Annotated[bool, typer.Option(help="Also summarise its schedule.")] = False,
) -> None:
    """Print the resolved scenario (as run.json records it)."""
    from aichaos.scenarios.spec import load_scenario

    s = load_scenario(scenario)
    typer.echo(json.dumps(s.to_dict(), indent=2))
    if schedule:
        from aichaos.scenarios.schedule import build_schedule

        sch = build_schedule(s)
        typer.echo(
            f"{len(sch)} requests over {s.duration_s:g}s ({len(sch) / s.duration_s:.2f}/s), "
            f"prompt tokens mean {sch.prompt_tokens.mean():.0f}, "
            f"output tokens mean {sch.output_tokens.mean():.0f}"
        )


@scenarios_app.command("validate")
def validate_scenario(
    files: Annotated[list[str], typer.Argument(help="Scenario files or built-in names.")],
) -> None:
    """Check scenario files: one line per file, exit 2 on the first bad one."""
    from aichaos.scenarios.schedule import build_schedule
    from aichaos.scenarios.spec import load_scenario

    bad = False
    for ref in files:
        try:
            s = load_scenario(ref)
            n = len(build_schedule(s))
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            bad = True
            continue
        typer.echo(f"ok: {ref} ({s.name}, {s.duration_s:g}s, {n} requests)")
    raise typer.Exit(exits.BAD_INPUT if bad else exits.OK)


def register(app: typer.Typer) -> None:
    """Add ``load``, ``scenarios`` and ``worker`` to the ``aichaos`` app."""
    app.command("load")(load)
    app.command("worker")(worker)
    app.add_typer(scenarios_app, name="scenarios")
