"""Run one Chaos Toolkit experiment inside an aichaos run.

    run = ChaosRun(experiment, run_dir, configuration={...}, t0=time.time())
    run.start()          # its own process; method actions placed on the run clock
    ...
    run.stop()           # abort: the method is interrupted, the rollbacks run
    status = run.wait()  # completed | failed | aborted | interrupted

The blast-radius policy runs here, before anything starts. The experiment runs in a process
of its own (``chaos_proc.py``: chaoslib's public runner needs a main thread), which writes
the journal, chaoslib's log and the ``experiment`` / ``fault`` / ``rollback`` events; the
fault windows are read back from those events (``aichaos.rundir.fault_windows``), the one
derivation the verdict's phases use too. When this process dies, the experiment's standard
input ends and it stops: its rollbacks run without an owner.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from aichaos.rundir import (
    JOURNAL_JSON,
    EventKind,
    FaultWindow,
    fault_windows,
    read_events,
)

from . import policy
from .chaos_proc import LOG_FILE, STOP, ChaosJob, final_status
from .context import ALLOWED, CONFIG_KEYS, RUN_DIR, RUN_KEY, allowed_names
from .policy import Permissions


class ChaosRun:
    """One experiment run in a process of its own, aligned on the run clock ``t0``.

    ``permissions``: what the user allowed beyond the blast-radius policy's default
    (extensions, process and outside http providers, and ``targets``: Kubernetes namespaces or
    proxy names of a real Toxiproxy besides the services and proxies of the stack,
    ``configuration["aichaos_stack_file"]``). The policy runs here against the stack, so a
    refused activity or target never starts anything (``aichaos.rundir.InputError``).
    """

    def __init__(
        self,
        experiment: dict[str, Any],
        run_dir: Path,
        *,
        configuration: dict[str, Any],
        t0: float,
        permissions: Permissions | None = None,
    ):
        self.experiment = copy.deepcopy(experiment)
        self.title = str(self.experiment.get("title", "experiment"))
        self.run_dir = Path(run_dir)
        self.t0 = float(t0)
        self.key = uuid.uuid4().hex
        config = dict(configuration)
        config.setdefault(RUN_DIR, str(self.run_dir))
        permissions = permissions or Permissions()
        if permissions.targets:
            config[ALLOWED] = sorted(allowed_names(config) | set(permissions.targets))
        config[RUN_KEY] = self.key
        for key in CONFIG_KEYS:  # the run's, never the file's: an experiment may declare
            config.setdefault(key, None)  # these keys, and chaoslib keeps what the run leaves
        self.configuration = config
        policy.check(self.experiment, self.title, permissions, config)
        self._proc: psutil.Popen | None = None
        self._since: float | None = None
        self._stopping = False
        self.journal: dict[str, Any] | None = None
        self.status: str | None = None

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("this ChaosRun was already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        job = ChaosJob(
            experiment=self.experiment,
            configuration=self.configuration,
            run_dir=self.run_dir.resolve(),
            t0=self.t0,
        )
        self._since = time.time()
        with open(self.run_dir / LOG_FILE, "ab") as log:  # its stray output and tracebacks
            self._proc = psutil.Popen(
                [sys.executable, "-m", "aichaos.experiments.chaos_proc"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a Ctrl-C at the terminal is the run's to handle
            )
        self._send(job.model_dump_json())

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line.encode("utf-8") + b"\n")
            stdin.flush()
        except OSError:  # it has ended already
            pass

    def stop(self) -> None:
        """Abort: waits end at once, the method is interrupted, the rollbacks run."""
        if not self._stopping:
            self._stopping = True
            self._send(STOP)

    def stopping(self) -> bool:
        return self._stopping

    def wait(self, timeout: float | None = None) -> str:
        """The final status (the journal's; ``failed`` when the steady state did not hold
        before the method, which then never ran, or when the experiment's process died), or
        ``running`` if not done in ``timeout`` (or not started)."""
        if self.status is not None:
            return self.status
        if self._proc is None:
            return "running"
        try:
            self._proc.wait(timeout)
        except psutil.TimeoutExpired:
            return "running"
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self.journal = self._read_journal()
        self.status = self._ended_status()
        return self.status

    def _read_journal(self) -> dict[str, Any] | None:
        try:
            journal = json.loads((self.run_dir / JOURNAL_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return journal if isinstance(journal, dict) else None

    def _ended_status(self) -> str:
        """What the experiment's end event says (its process writes it last), else what the
        journal says; ``failed`` when there is neither."""
        events, _ = read_events(self.run_dir)
        for event in reversed(events):
            if (
                event.get("kind") == EventKind.EXPERIMENT
                and event.get("action") == "end"
                and float(event.get("t") or 0.0) >= (self._since or 0.0)
            ):
                return str((event.get("detail") or {}).get("status") or "failed")
        return final_status(self.journal)

    def windows(self) -> list[FaultWindow]:
        """This run's fault windows so far (``end`` None while a fault is on)."""
        if self._since is None:
            return []
        events, _ = read_events(self.run_dir)
        return fault_windows(events, since=self._since)[0]

    @property
    def deviated(self) -> bool:
        return bool((self.journal or {}).get("deviated"))
