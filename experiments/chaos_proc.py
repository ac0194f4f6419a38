"""The process that runs one Chaos Toolkit experiment for ``ChaosRun`` (``runner.py``).

chaoslib's public runner installs its own SIGTERM / SIGUSR1 / SIGUSR2 handlers, which only a
process's main thread may do, while an aichaos run's main thread follows the load and owns
Ctrl-C. So the experiment gets a process of its own, in a session of its own (a Ctrl-C at the
terminal reaches the run, which stops the experiment on purpose), and runs there on the main
thread through ``chaoslib.experiment.run_experiment``.

    python -m aichaos.experiments.chaos_proc  < one ChaosJob (JSON) line, then "stop" lines

A ``stop`` line, or the end of standard input (its owner died: nothing outlives its owner),
stops the experiment: the method is interrupted, the rollbacks run. SIGTERM does the same
through chaoslib's handler. What it writes is the contract with its owner:

- ``kind: "experiment"``  start / end of the experiment; detail {experiment, status, deviated}
- ``kind: "fault"``       start when a method action has taken effect, end when its window
                          closes (its duration ran out and its rollback ran, or the rollbacks
                          phase undid it); same ``name`` (the action's name); detail
                          {experiment, activity, arguments, at, duration, rollback, late_s,
                          output} at the start, {..., undo, reason} at the end
- ``kind: "rollback"``    start / end of every rollback activity run; detail
                          {experiment, activity, arguments, status, phase: window|rollbacks}

and ``RUN_DIR/journal.json`` (the journal, as chaoslib made it) and ``chaostoolkit.log``.
Rollbacks run whatever happens: the rollback strategy is ``always`` (chaoslib's default skips
them after a failure or an interruption).
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chaoslib.activity import run_activity
from chaoslib.exceptions import ChaosException
from chaoslib.experiment import run_experiment
from chaoslib.run import RunEventHandler
from chaoslib.types import Strategy
from pydantic import BaseModel, ConfigDict, JsonValue

from aichaos.rundir import EVENTS_JSONL, JOURNAL_JSON, EventKind, EventLog, write_json
from aichaos.schedule import ActionTiming, action_timing, experiment_timing

from . import clock
from .context import RUN_KEY

SETTINGS = {"runtime": {"rollbacks": {"strategy": "always"}}}
LOG_FILE = "chaostoolkit.log"
STOP = "stop"


class ChaosJob(BaseModel):
    """What ``ChaosRun`` hands its process: the experiment (Chaos Toolkit's own documented
    format), the run's configuration (policy-checked by ``ChaosRun``), where to write, and
    the run's time 0 the method's ``at`` offsets count from."""

    model_config = ConfigDict(extra="forbid")

    experiment: dict[str, JsonValue]
    configuration: dict[str, JsonValue]
    run_dir: Path
    t0: float


def final_status(journal: dict[str, Any] | None) -> str:
    """The experiment's status from its journal: ``failed`` when there is none, and when the
    steady state did not hold before the method (chaoslib says completed; the method never
    ran)."""
    status = str((journal or {}).get("status") or "failed")
    before = ((journal or {}).get("steady_states") or {}).get("before") or {}
    return "failed" if before.get("steady_state_met") is False else status


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


class _Events(RunEventHandler):
    """Follows chaoslib's phases and writes the fault and rollback events."""

    def __init__(self, run: ExperimentRun):
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


class ExperimentRun:
    """The experiment on the run's clock: what the clock control (``clock.py``) asks of it —
    where chaoslib is (``phase``), whether to stop, when an action may start, how long its
    fault holds — and the fault windows it writes as events."""

    def __init__(self, job: ChaosJob):
        self.experiment: dict[str, Any] = copy.deepcopy(job.experiment)
        self.title = str(self.experiment.get("title", "experiment"))
        self.run_dir = job.run_dir
        self.t0 = job.t0
        self.configuration: dict[str, Any] = dict(job.configuration)
        self.key = str(self.configuration[RUN_KEY])
        self.events = EventLog(self.run_dir / EVENTS_JSONL, source="experiments")
        self.phase = "init"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._windows: list[_Window] = []
        self._by_activity: dict[int, _Window] = {}
        self._rollbacks = {r.get("name"): r for r in self.experiment.get("rollbacks") or []}

    def stop(self) -> None:
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the clock (called by the control) --------------------------------------------------

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
        detail = self._detail(
            activity, at=window.at, duration=window.duration, rollback=window.undo
        )
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

    # --- the run ------------------------------------------------------------------------------

    def _prepared(self) -> dict[str, Any]:
        """The experiment with the clock control and the run's configuration: the run's keys
        are declared in the file's ``configuration`` (replacing any the file declares), so
        chaoslib hands every activity the run's values."""
        experiment = copy.deepcopy(self.experiment)
        experiment.setdefault("controls", []).append(copy.deepcopy(clock.CONTROL))
        experiment["configuration"] = {
            **(experiment.get("configuration") or {}),
            **self.configuration,
        }
        return experiment

    def run(self) -> str:
        log = logging.getLogger("chaostoolkit")
        handler = logging.FileHandler(self.run_dir / LOG_FILE, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # chaoslib's own lines go to the log file, once
        self.events.emit(EventKind.EXPERIMENT, self.title, "start", {"experiment": self.title})
        clock.RUNS[self.key] = self
        journal: dict[str, Any] | None = None
        try:
            journal = run_experiment(
                self._prepared(),
                settings=copy.deepcopy(SETTINGS),
                strategy=Strategy.DEFAULT,
                event_handlers=[_Events(self)],
            )
        except Exception as exc:  # a broken experiment must not leave faults behind
            log.exception("aichaos: the experiment run failed")
            journal = {**(journal or {}), "status": "failed", "error": str(exc)}
        finally:
            self.close_windows(undo=None, reason="end")
            status = final_status(journal)
            try:
                write_json(self.run_dir / JOURNAL_JSON, journal)
            finally:
                deviated = bool((journal or {}).get("deviated"))
                detail = {"experiment": self.title, "status": status, "deviated": deviated}
                self.events.emit(EventKind.EXPERIMENT, self.title, "end", detail)
                clock.RUNS.pop(self.key, None)
                log.removeHandler(handler)
                handler.close()
        return status


def _listen(run: ExperimentRun) -> None:
    """Stop at a ``stop`` line or when standard input ends (the owner is gone)."""
    for line in sys.stdin:
        if line.strip() == STOP:
            break
    run.stop()


def main() -> int:
    job = ChaosJob.model_validate_json(sys.stdin.readline())
    run = ExperimentRun(job)
    threading.Thread(target=_listen, args=(run,), name="aichaos-stop", daemon=True).start()
    run.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
