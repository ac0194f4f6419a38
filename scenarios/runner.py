"""LoadRunner: drive a scenario at a target from Locust processes, from plain (non-gevent) code.

The runner writes a config next to the run, starts one Locust process (``workers`` = 1) or a
Locust master and ``workers`` local Locust workers, and reads their progress from a small JSON
file they rewrite twice a second. Records land in ``RUN_DIR/requests/`` as Parquet chunks
named after the runner's ``name``, so a second runner (a noisy neighbour) can write into the
same run directory under another name.

Distributed runs share a token (``worker_gate``): the runner's own local workers get it through
their environment, remote ones through ``aichaos worker`` (``$AICHAOS_LOAD_TOKEN``). Every Locust
process watches the run's owner (by default the process that created the runner) and stops,
flushing its records, when the owner dies.

    runner = LoadRunner(scenario, "http://127.0.0.1:8000", run_dir, workers=2)
    runner.start(t0=time.time() + 3)      # t0: epoch of schedule time 0
    while runner.alive: print(runner.progress()); time.sleep(1)
    code = runner.wait()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aichaos.load_health import LoadProgress
from aichaos.loopback import free_port, is_wildcard
from aichaos.processes import ProcessRef
from aichaos.rundir import EVENTS_JSONL, EventKind, EventLog, write_json
from aichaos.waiting import wait_until

from .load_config import LoadConfig
from .schedule import build_schedule
from .spec import Scenario
from .worker_gate import TOKEN_ENV, resolve_token

PROC_MODULE = "aichaos.scenarios.locust_proc"


def _write_private(path: Path, text: str) -> None:
    """Only this user may read it: it holds the worker token and the scenario's headers."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


class LoadRunner:
    def __init__(self, scenario: Scenario, target_url: str, run_dir: Path, *, workers: int = 1,
                 web_ui: bool = False, name: str = "load", remote_workers: int = 0,
                 master_bind: str = "127.0.0.1", master_port: int | None = None,
                 web_port: int | None = None, token: str | None = None,
                 owner: ProcessRef | None = None) -> None:  # fmt: skip
        if workers < 0 or workers + remote_workers < 1:
            raise ValueError("at least one worker is needed")
        self.scenario = scenario
        self.target_url = target_url.rstrip("/")
        self.run_dir = Path(run_dir)
        self.workers = workers
        self.remote_workers = remote_workers
        self.web_ui = web_ui
        self.web_port = web_port
        self.name = name
        self.master_bind = master_bind
        self.master_port = master_port
        # one secret per run (InputError when a given one is too short)
        self.token = resolve_token(token)
        self.owner = owner or ProcessRef.current()
        self.t0: float | None = None
        self.procs: list[subprocess.Popen] = []
        self._logs: list[Any] = []
        self._stop_requested = False
        self._scheduled = len(build_schedule(scenario)) if scenario.mode == "open" else 0
        self.sizing: dict[str, Any] | None = None  # set by size_prompts()
        self.load_dir = self.run_dir / "load"
        self.progress_path = self.load_dir / f"{name}.progress.json"

    @property
    def distributed(self) -> bool:
        return self.workers + self.remote_workers > 1 or self.remote_workers > 0

    def size_prompts(self) -> dict[str, Any]:
        """Count the schedule's lengths in the target's tokens and cap them by its context
        (``sizing``), before any request goes out; the summary goes to
        ``load/<name>.sizing.json`` and ``events.jsonl``. Done once; ``start`` calls it."""
        from .sizing import size_schedule

        self.load_dir.mkdir(parents=True, exist_ok=True)
        result = size_schedule(self.scenario, build_schedule(self.scenario), self.target_url)
        self.sizing = result.wire
        write_json(self.load_dir / f"{self.name}.sizing.json", result.summary)
        events = EventLog(self.run_dir / EVENTS_JSONL, source="load")
        events.emit(EventKind.LOAD, "prompt_sizing", detail=result.summary)
        for note in result.summary["notes"]:
            print(f"note: prompt lengths: {note}", file=sys.stderr)
        return result.summary

    def start(self, t0: float | None = None) -> float:
        """Start the Locust process(es) without waiting; returns t0 (epoch of schedule 0)."""
        if self.procs:
            raise RuntimeError("this LoadRunner was already started")
        self.load_dir.mkdir(parents=True, exist_ok=True)
        if self.sizing is None:
            self.size_prompts()
        (self.run_dir / "requests").mkdir(parents=True, exist_ok=True)
        # Locust processes take 1-2 s to import and start, more on a busy machine; arrivals
        # due before they are ready go out late (and say so in t_sent)
        lead = 3.5 + (1.0 + 0.5 * self.workers if self.distributed else 0.0)
        self.t0 = float(t0) if t0 is not None else time.time() + lead
        port = self.master_port = self.master_port or free_port()
        cfg = LoadConfig(
            runner_id=self.name,
            run_dir=self.run_dir.resolve(),
            target_url=self.target_url,
            scenario=self.scenario.to_dict(),
            t0=self.t0,
            workers=self.workers + self.remote_workers,
            master=self.distributed,
            master_bind=self.master_bind,
            master_port=port,
            web_ui=self.web_ui,
            web_port=self.web_port,
            owner=self.owner,
            token=self.token if self.distributed else None,
            sizing=self.sizing,
        )
        config_path = self.load_dir / f"{self.name}.config.json"
        _write_private(config_path, cfg.model_dump_json(indent=2))
        self._spawn([sys.executable, "-m", PROC_MODULE, "run", str(config_path)], self.name)
        if self.distributed:
            owner = ["--owner-pid", str(self.owner.pid),
                     "--owner-start-time", str(self.owner.start_time)]  # fmt: skip
            for i in range(self.workers):
                cmd = [sys.executable, "-m", PROC_MODULE, "worker", "--master", "127.0.0.1",
                       "--master-port", str(port), *owner]  # fmt: skip
                self._spawn(cmd, f"{self.name}-worker{i}")
        return self.t0

    def worker_command(self) -> str:
        """How a remote worker joins this run (the token goes in the environment, not ``ps``)."""
        host = socket.gethostname() if is_wildcard(self.master_bind) else self.master_bind
        return (f"{TOKEN_ENV}={self.token} aichaos worker --master {host} "
                f"--master-port {self.master_port}")  # fmt: skip

    def _spawn(self, cmd: list[str], log_name: str) -> None:
        log = open(self.load_dir / f"{log_name}.log", "ab")  # noqa: SIM115 - closed in wait()
        self._logs.append(log)
        env = {**os.environ, TOKEN_ENV: self.token}
        # its own session: a Ctrl-C in the terminal reaches the caller, which stops us in order
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        self.procs.append(proc)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until the Locust process(es) are ready to send (their first progress report),
        so a caller can tell whether t0 was far enough ahead."""
        wait_until(lambda: self.progress_path.exists() or not self.alive, timeout)
        return self.progress_path.exists()

    @property
    def alive(self) -> bool:
        return bool(self.procs) and self.procs[0].poll() is None

    def progress(self) -> LoadProgress:
        """Totals so far (``load/<name>.progress.json``), with the time elapsed now; before the
        first report, zeros."""
        elapsed = max(0.0, time.time() - self.t0) if self.t0 else 0.0
        try:
            found = LoadProgress.model_validate_json(self.progress_path.read_bytes())
        except (OSError, ValueError):
            return LoadProgress(scheduled=self._scheduled, elapsed_s=elapsed, t0=self.t0)
        if not self.alive:
            return found.model_copy(update={"rps": 0.0})
        return found.model_copy(update={"elapsed_s": elapsed})

    def request_stop(self) -> None:
        """Ask the processes to stop sending and flush; safe in a signal handler."""
        self._stop_requested = True
        if self.procs:
            self._signal(self.procs[0], signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int:
        """Stop sending, flush the records and end the processes. Safe to call twice."""
        if not self.procs:
            return 0
        if self.alive:
            self.request_stop()
        return self.wait(timeout=timeout, kill=True)

    def wait(self, timeout: float | None = None, kill: bool = False) -> int:
        """The exit code of the load (0: the schedule ran to its end). With a timeout, returns
        -1 if still running (or kills everything when ``kill``)."""
        if not self.procs:
            return 0
        deadline = None if timeout is None else time.monotonic() + timeout
        main = self.procs[0]
        try:
            main.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if not kill:
                return -1
            self._signal(main, signal.SIGKILL)
            main.wait()
        for proc in self.procs[1:]:  # workers end when the master quits them
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        for log in self._logs:
            log.close()
        self._logs = []
        return main.returncode

    def _signal(self, proc: subprocess.Popen, sig: int) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.load_dir / f"{self.name}.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""
