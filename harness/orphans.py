"""Stacks whose owner died: find them, roll their faults back, stop them, record the crash.

The owner of a stack is the process that runs its supervisor (``aichaos run``, or
``aichaos stack up``); ``stack.json`` records it as ``supervisor`` (PID and start time). Its
services run in their own sessions, so a ``kill -9`` of the owner leaves them serving, with
whatever fault was in place. The owner watch (``owner_watch``) calls ``clean_up`` the moment
that happens; ``aichaos run`` and ``aichaos stack up`` call it for a stack whose watch died
too, and ``aichaos stack status`` reports one.

These commands may run as root, and a state file is only a claim: one anybody could write
would name any process group to kill and any URL to send requests to. So only state files
owned by this user and writable by nobody else are acted on, and only processes that carry
the stack's marker (``STACK_MARKER`` in their environment, set by the supervisor) are
stopped; any other process a state file names is left alone, with a line saying so.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from aichaos.processes import ProcessRef, wait_until_gone
from aichaos.rundir import EVENTS_JSONL, OWNER_GONE, EventKind, EventLog, read_manifest
from aichaos.stackfile import StackState

from .stack_state import (
    STACK_MARKER,
    STATE_FILE,
    StackNotFound,
    read_state,
    stop_groups,
    write_json,
)

WATCH_GRACE_S = 20.0  # how long a live owner watch gets to finish before we clean up for it


@dataclass(frozen=True)
class Orphan:
    """A stack whose owner is gone while some of its services still run."""

    run_dir: Path
    owner: ProcessRef | None
    services: dict[str, ProcessRef]  # the ones still running, carrying the stack's marker
    strangers: dict[str, ProcessRef]  # running under a service's PID, without the marker

    def where(self) -> str:
        owner = f"pid {self.owner.pid}" if self.owner else "unknown"
        return f"a stack left by a dead owner ({owner}) in {self.run_dir}"

    def describe(self) -> str:
        running = ", ".join(sorted(self.services))
        return f"{self.where()}: {len(self.services)} process(es) still running ({running})"

    def remedy(self) -> str:
        return f"`aichaos stack down --run-dir {self.run_dir}` removes it"

    def left_alone(self) -> str:
        pids = ", ".join(str(ref.pid) for ref in self.strangers.values())
        return (
            f"{self.run_dir / STATE_FILE} names process(es) {pids}, which this stack's "
            "supervisor did not start: left alone (stop them yourself if they are yours)"
        )


def trusted_state(run_dir: Path) -> bool:
    """A state file this user wrote and nobody else can change: the only kind acted on."""
    try:
        info = (Path(run_dir) / STATE_FILE).stat()
    except OSError:
        return False
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return info.st_uid == os.geteuid() and not writable_by_others


def is_stack_process(ref: ProcessRef, run_dir: Path) -> bool:
    """``ref`` runs and was started by the supervisor of the stack in ``run_dir``."""
    try:
        marker = psutil.Process(ref.pid).environ().get(STACK_MARKER)
    except (psutil.Error, OSError):
        return False
    return marker == str(Path(run_dir).resolve()) and ref.alive()


def live_services(state: StackState | None) -> dict[str, ProcessRef]:
    """The services of ``state`` whose recorded process still runs."""
    if state is None:
        return {}
    refs = {name: svc.ref for name, svc in state.services.items()}
    return {name: ref for name, ref in refs.items() if ref is not None and ref.alive()}


def stack_services(run_dir: Path, state: StackState | None) -> dict[str, ProcessRef]:
    """The services of ``state`` that still run and really are the stack's."""
    return {n: r for n, r in live_services(state).items() if is_stack_process(r, run_dir)}


def orphan_in(run_dir: Path) -> Orphan | None:
    """The stack in ``run_dir`` if its owner is gone and a service of it still runs."""
    if not trusted_state(run_dir):
        return None
    try:
        state = read_state(run_dir)
    except StackNotFound:
        return None
    owner = state.supervisor
    if owner is not None and owner.alive():
        return None
    live = live_services(state)
    if not live:
        return None
    services = stack_services(run_dir, state)
    strangers = {n: r for n, r in live.items() if n not in services}
    return Orphan(Path(run_dir), owner, services, strangers)


def find_orphans(places: Iterable[Path]) -> list[Orphan]:
    """Orphaned stacks among run directories: each place is a run directory or a folder of
    them (``runs/``). Whatever its state file says, a stack counts by the processes that really
    run (a clean-up cut short leaves "crashed" with services still up)."""
    seen: set[Path] = set()
    found = []
    for place in places:
        candidates = [place] if (place / STATE_FILE).exists() else place.glob(f"*/{STATE_FILE}")
        for candidate in candidates:
            run_dir = (candidate if candidate.is_dir() else candidate.parent).resolve()
            if run_dir in seen:
                continue
            seen.add(run_dir)
            orphan = orphan_in(run_dir)
            if orphan is not None:
                found.append(orphan)
    return found


def remove_orphans(places: Iterable[Path], say: Callable[[str], None], source: str) -> list[Orphan]:
    """Clean up every orphaned stack found in ``places``, one line each through ``say``;
    ``source`` (the command) signs the events."""
    orphans = find_orphans(places)
    for orphan in orphans:
        if orphan.strangers:
            say(orphan.left_alone())
        if not orphan.services:
            continue
        _let_the_watch_finish(orphan.run_dir)
        notes = clean_up(orphan.run_dir, f"its owner died; removed by {source}", source)
        say(f"stopped {orphan.where()}: {notes.summary()}")
    return orphans


def _let_the_watch_finish(run_dir: Path) -> None:
    """A watch that is alive is cleaning up right now: two at once would interleave events."""
    try:
        watch = read_state(run_dir).watchdog
    except StackNotFound:
        return
    if watch is not None:
        deadline = time.monotonic() + WATCH_GRACE_S
        wait_until_gone(watch, stop=lambda: time.monotonic() > deadline)


@dataclass
class CleanUp:
    rollback: list[str]
    stopped: list[int]
    run_marked: bool

    def summary(self) -> str:
        reset = "faults rolled back" if self.rollback else "no fault to roll back"
        return f"{reset}, {len(self.stopped)} process(es) stopped"


def clean_up(run_dir: Path, reason: str, source: str = "owner-watch") -> CleanUp:
    """Roll back every fault the stack's state file knows of (proxies reset, simulator
    faults cleared), stop every service still running, and record the stack and its run as
    crashed, with events. Safe to run more than once."""
    run_dir = Path(run_dir)
    events = EventLog(run_dir / EVENTS_JSONL, source)
    state: StackState | None = None
    # a state file someone else could have written names nothing we act on
    if trusted_state(run_dir):
        try:
            state = read_state(run_dir)
        except StackNotFound:
            state = None
    owner = state.supervisor.pid if state is not None and state.supervisor else None
    events.emit(OWNER_GONE, str(run_dir.name), "start", {"owner_pid": owner, "reason": reason})
    rollback = _roll_back(run_dir, state, events)
    stopped = _stop_services(run_dir, state, events)
    if state is not None:
        state.status, state.stopped_at = "crashed", time.time()
        state.error = f"owner gone: {reason}"
        write_json(run_dir / STATE_FILE, state.model_dump(mode="json"))
    marked = mark_run_crashed(run_dir, f"the run's owner (pid {owner}) died: {reason}")
    detail = {"rollback": rollback, "stopped": stopped, "run_marked_crashed": marked}
    events.emit(OWNER_GONE, str(run_dir.name), "end", detail)
    return CleanUp(rollback, stopped, marked)


def _roll_back(run_dir: Path, state: StackState | None, events: EventLog) -> list[str]:
    """The run's last line of defence (``restore_all``), told about the stack by its state."""
    if not stack_services(run_dir, state):
        return []
    from aichaos.experiments.safety import restore_all

    configuration = {
        "aichaos_run_dir": str(run_dir),
        "aichaos_stack_file": str(run_dir / STATE_FILE),
    }
    notes = restore_all(configuration)
    events.emit(EventKind.ROLLBACK, "restore-all", "instant", {"notes": notes})
    return notes


def _stop_services(run_dir: Path, state: StackState | None, events: EventLog) -> list[int]:
    live = stack_services(run_dir, state)
    stop_groups([(ref.pid, ref.start_time) for ref in live.values()])
    for name, ref in live.items():
        events.emit(EventKind.STOP, name, "instant", {"pid": ref.pid})
    return [ref.pid for ref in live.values()]


def mark_run_crashed(run_dir: Path, problem: str) -> bool:
    """run.json says ``crashed`` if it still said ``running``; True when it was changed."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest.recorded_status != "running":
        return False
    manifest.status, manifest.ended_at, manifest.problem = "crashed", time.time(), problem
    manifest.write(run_dir)
    return True
