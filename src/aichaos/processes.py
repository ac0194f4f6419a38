"""Processes identified by PID *and* start time (psutil's ``create_time``), so a PID the kernel
has since given to an unrelated process is never taken for the one started earlier. Shared by
the supervisor (harness), the replica-kill activities (experiments) and the load processes
(scenarios), which must not import each other.

``ProcessRef`` is that identity as a typed record (it crosses processes in ``stack.json``,
``run.json`` and on command lines); ``wait_until_gone`` and ``OwnerWatch`` are how a helper
process notices that the process owning it has died, however it died (``kill -9`` included,
which no signal handler or ``atexit`` in the owner sees).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psutil
from pydantic import BaseModel, ConfigDict

WATCH_INTERVAL_S = 0.25


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds, as psutil reads it: the same value every time for
    one process); None when it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return proc.create_time()
    except (psutil.Error, ValueError):
        return None


def process_alive(pid: int | None, start_time: float | None = None) -> bool:
    """``pid`` runs and, when ``start_time`` is given, is the process that started then."""
    if not pid:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    return start_time is None or started == start_time


def signal_group(pgid: int, sig: int, start_time: float | None = None) -> bool:
    """Send ``sig`` to the process group ``pgid`` leads — when ``start_time`` is given, only
    while its leader is still the process that started then. False when nothing was signalled
    (the group is empty, or its PID now belongs to another process)."""
    if start_time is not None and not process_alive(pgid, start_time):
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ProcessRef(BaseModel):
    """One process, recorded so that another process can tell later whether it still runs."""

    model_config = ConfigDict(frozen=True)

    pid: int
    start_time: float  # epoch seconds, as ``process_start_time`` reads it

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """``pid`` as it runs now; None when it is not running."""
        started = process_start_time(pid)
        return None if started is None else cls(pid=pid, start_time=started)

    @classmethod
    def current(cls) -> ProcessRef:
        ref = cls.of(os.getpid())
        assert ref is not None  # this process runs
        return ref

    @classmethod
    def parse(cls, data: object) -> ProcessRef | None:
        """A ref from a JSON record (``{"pid": .., "start_time": ..}``); None when the record
        has none or an unusable one (a file written by an older aichaos)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls.model_validate(data)
        except ValueError:
            return None

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_time)


def wait_until_gone(
    ref: ProcessRef,
    *,
    stop: Callable[[], bool] | None = None,
    interval: float = WATCH_INTERVAL_S,
) -> bool:
    """Block until ``ref`` is gone (True) or ``stop()`` says to give up (False). Polls: a
    process that is not our child cannot be waited for, and ``pidfd`` is not everywhere."""
    while ref.alive():
        if stop is not None and stop():
            return False
        time.sleep(interval)
    return True


class OwnerWatch:
    """Calls ``on_gone`` once, from a daemon thread, when ``owner`` dies; ``stop()`` ends the
    watch without calling it. Under gevent's monkey patching the thread is a greenlet, so the
    Locust processes can use it as well."""

    def __init__(
        self,
        owner: ProcessRef,
        on_gone: Callable[[], None],
        interval: float = WATCH_INTERVAL_S,
    ):
        self.owner = owner
        self.on_gone = on_gone
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="aichaos-owner-watch", daemon=True)

    def start(self) -> OwnerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        if wait_until_gone(self.owner, stop=self._stopped.is_set, interval=self.interval):
            self.on_gone()


__all__ = [
    "OwnerWatch",
    "ProcessRef",
    "group_alive",
    "process_alive",
    "process_start_time",
    "signal_group",
    "wait_until_gone",
]
