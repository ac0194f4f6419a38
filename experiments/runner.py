"""Run one Chaos Toolkit experiment inside an aichaos run, with chaoslib as a library.

    run = ChaosRun(experiment, run_dir, configuration={...}, t0=time.time())
    run.start()          # background thread; method actions placed on the run clock
    ...
    run.stop()           # abort: the method is interrupted, the rollbacks run
    status = run.wait()  # completed | failed | aborted | interrupted

Writes ``RUN_DIR/journal.json`` (the Chaos Toolkit journal, as chaoslib made it),
``RUN_DIR/chaostoolkit.log`` (chaoslib's log) and events (source ``experiments``) to
``RUN_DIR/events.jsonl``:

- ``kind: "experiment"``  start / end of the experiment; detail {experiment, status, deviated}
- ``kind: "fault"``       start when a method action has taken effect, end when its window
                          closes (its duration ran out and its rollback ran, or the rollbacks
                          phase undid it); same ``name`` (the action's name); detail
                          {experiment, activity, arguments} (+ at, duration, undo, reason)
- ``kind: "rollback"``    start / end of every rollback activity run; detail
                          {experiment, activity, arguments, status, phase: window|rollbacks}

Rollbacks run whatever happens: the rollback strategy is ``always`` (chaoslib's default skips
them after a failure or an interruption).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from chaoslib.activity import run_activity
from chaoslib.exceptions import ChaosException
from chaoslib.run import RunEventHandler, Runner
from chaoslib.types import Strategy

from aichaos.rundir import EVENTS_JSONL, JOURNAL_JSON, EventKind, EventLog, write_json
from aichaos.schedule import ActionTiming, action_timing, experiment_timing

from . import clock, policy
from .context import ALLOWED, CONFIG_KEYS, RUN_DIR, RUN_KEY, allowed_names
from .policy import Permissions

SETTINGS = {"runtime": {"rollbacks": {"strategy": "always"}}}
LOG_FILE = "chaostoolkit.log"


def _arguments(activity: dict[str, Any]) -> dict[str, Any]:
    return dict((activity.get("provider") or {}).get("arguments") or {})


class _Window:
    def __init__(self, activity: dict[str, Any], start: float):
        timing = action_timing(activity) or ActionTiming()
        self.name = str(activity.get("name"))
        self.activity = activity
        self.start = start
        self.end: float | None = None
        self.at = timing.at
        self.duration = timing.duration
        self.undo = timing.rollback

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "at": self.at,
            "duration": self.duration,
            "rollback": self.undo,
            "arguments": _arguments(self.activity),
        }


class _Events(RunEventHandler):
    """Follows chaoslib's phases and writes the fault and rollback events."""

    def __init__(self, run: ChaosRun):
        self.run = run

    def start_method(self, experiment: dict) -> None:
        self.run.phase = "method"

    def start_rollbacks(self, experiment: dict) -> None:
        self.run.phase = "rollback"

    def start_activity(self, activity: dict) -> None:
        if self.run.phase == "rollback":
            self.run.emit_rollback(activity, "start", phase="rollbacks")

    def activity_completed(self, activity: dict, run: dict) -> None:
        if self.run.phase == "rollback":
            status, output = run.get("status"), run.get("output")
            self.run.emit_rollback(activity, "end", phase="rollbacks", status=status, output=output)
            self.run.close_windows(undo=activity.get("name"), reason="rollback")
        elif (
            self.run.phase == "method"
            and activity.get("type") == "action"
            and run.get("status") == "succeeded"
        ):
            self.run.open_window(activity, run.get("output"))

    def rollbacks_completed(self, experiment: dict, journal: dict) -> None:
        self.run.close_windows(undo=None, reason="rollbacks")


class ChaosRun:
    """One experiment run in a background thread, aligned on the run clock ``t0``.

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
        self.events = EventLog(self.run_dir / EVENTS_JSONL, source="experiments")
        self.phase = "init"
        self.journal: dict[str, Any] | None = None
        self.status: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._windows: list[_Window] = []
        self._by_activity: dict[int, _Window] = {}
        self._thread: threading.Thread | None = None
        self._rollbacks = {r.get("name"): r for r in self.experiment.get("rollbacks") or []}

    # --- the lead's API ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this ChaosRun was already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        controls = self.experiment.setdefault("controls", [])
        controls.append(copy.deepcopy(clock.CONTROL))
        clock.RUNS[self.key] = self
        self._thread = threading.Thread(target=self._main, name="aichaos-chaos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Abort: waits end at once, the method is interrupted, the rollbacks run."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> str:
        """The final status (the journal's; ``failed`` when the steady state did not hold
        before the method, which then never ran), or ``running`` if not done in ``timeout``."""
        if not self._done.wait(timeout):
            return "running"
        return self.status or "failed"

    def windows(self) -> list[dict[str, Any]]:
        """The fault windows so far: ``{name, start, end (None while open), at, duration,
        rollback, arguments}``, epoch seconds."""
        with self._lock:
            return [w.to_json() for w in self._windows]

    @property
    def deviated(self) -> bool:
        return bool((self.journal or {}).get("deviated"))

    # --- the clock (called by the control) --------------------------------------------------

    def stopping(self) -> bool:
        return self._stop.is_set()

    def _sleep_until(self, when: float) -> None:
        delay = when - time.time()
        if delay > 0:
            self._stop.wait(delay)

    def wait_for_start(self, activity: dict[str, Any]) -> None:
        timing = action_timing(activity)
        if timing is not None and timing.at is not None:
            self._sleep_until(self.t0 + timing.at)

    def hold_window(self, activity: dict[str, Any], configuration: dict[str, Any]) -> None:
        """After an action: keep its fault for ``duration`` seconds, then run its rollback."""
        with self._lock:
            window = self._by_activity.get(id(activity))
        if window is None or window.duration is None or window.end is not None:
            return
        self._sleep_until(window.start + float(window.duration))
        if self.stopping():
            return  # the rollbacks phase undoes it
        undo = self._rollbacks.get(window.undo)
        if undo is not None:
            self.emit_rollback(undo, "start", phase="window")
            status, output = "succeeded", None
            try:
                output = run_activity(undo, configuration, None)
            except ChaosException as exc:
                status = f"failed: {exc}"
            self.emit_rollback(undo, "end", phase="window", status=status, output=output)
        self._close(window, "duration")

    def settle(self) -> None:
        settle = experiment_timing(self.experiment).settle
        if settle:
            self._stop.wait(settle)

    # --- windows and events -------------------------------------------------------------------

    def _detail(self, activity: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "experiment": self.title,
            "activity": activity.get("name"),
            "arguments": _arguments(activity),
            **more,
        }

    def open_window(self, activity: dict[str, Any], output: Any) -> None:
        window = _Window(activity, time.time())
        with self._lock:
            self._windows.append(window)
            self._by_activity[id(activity)] = window
        detail = self._detail(activity, at=window.at, duration=window.duration)
        detail["late_s"] = (
            round(window.start - (self.t0 + float(window.at)), 3) if window.at is not None else None
        )
        detail["output"] = output
        self.events.emit(EventKind.FAULT, window.name, "start", detail, t=window.start)

    def _close(self, window: _Window, reason: str) -> None:
        with self._lock:
            if window.end is not None:
                return
            window.end = time.time()
        detail = self._detail(window.activity, undo=window.undo, reason=reason)
        self.events.emit(EventKind.FAULT, window.name, "end", detail, t=window.end)

    def close_windows(self, undo: str | None, reason: str) -> None:
        """Close the open windows this rollback undoes (``undo`` None: all still open)."""
        with self._lock:
            open_ = [w for w in self._windows if w.end is None]
        for window in open_:
            if undo is None or window.undo == undo:
                self._close(window, reason)

    def emit_rollback(self, activity: dict[str, Any], action: str, **more: Any) -> None:
        detail = self._detail(activity, **more)
        self.events.emit(EventKind.ROLLBACK, str(activity.get("name")), action, detail)

    # --- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        log = logging.getLogger("chaostoolkit")
        handler = logging.FileHandler(self.run_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # chaoslib's own lines go to the log file, not the user's terminal
        self.events.emit(EventKind.EXPERIMENT, self.title, "start", {"experiment": self.title})
        journal: dict[str, Any] | None = None
        try:
            runner = Runner(Strategy.DEFAULT)
            runner.register_event_handler(_Events(self))
            # load_configuration pops the keys it uses: a copy; the keys the experiment does
            # not declare are added after it, so every activity sees them
            config_vars = (dict(self.configuration), {})
            runner.configure(self.experiment, copy.deepcopy(SETTINGS), config_vars)
            runner.config = {**(runner.config or {}), **self.configuration}
            # Runner.run() installs signal handlers, which only the main thread may do: the
            # caller owns Ctrl-C / SIGTERM and calls stop(); the run itself is _run()
            journal = runner._run(
                runner.strategy,
                runner.schedule,
                self.experiment,
                None,
                runner.config,
                runner.secrets,
                runner.settings,
                runner.event_registry,
            )
        except Exception as exc:  # a broken experiment must not leave faults behind
            log.exception("aichaos: the experiment run failed")
            journal = {**(journal or {}), "status": "failed", "error": str(exc)}
        finally:
            self.close_windows(undo=None, reason="end")
            self.journal = journal
            status = (journal or {}).get("status") or "failed"
            before = ((journal or {}).get("steady_states") or {}).get("before") or {}
            if before.get("steady_state_met") is False:
                status = "failed"  # chaoslib says completed, but the method never ran
            self.status = status
            try:
                write_json(self.run_dir / JOURNAL_JSON, journal)
            finally:
                detail = {"experiment": self.title, "status": status, "deviated": self.deviated}
                self.events.emit(EventKind.EXPERIMENT, self.title, "end", detail)
                clock.RUNS.pop(self.key, None)
                log.removeHandler(handler)
                handler.close()
                self._done.set()
