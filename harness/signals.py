"""The one signal scheme of every command that runs something (``aichaos run``, ``chaos``,
``load``): Ctrl-C and SIGTERM set a flag the command polls, never an exception in the middle
of its clean-up; only a step marked interruptible is stopped where it stands. Whatever was
running, the command then stops what it started, rolls back what it faulted, marks what it
recorded as aborted and exits 3.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TICK = 0.1


class SignalFlag:
    """A stop flag a signal handler may set: unlike ``threading.Event.set()`` it takes no
    lock, so it cannot deadlock against the main thread it interrupts."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if not self._set:
            time.sleep(TICK if timeout is None else min(timeout, TICK))
        return self._set


class Interrupted(BaseException):
    """Ctrl-C / SIGTERM inside an interruptible step (evaluation, rendering). A BaseException,
    so that no ``except Exception`` on the way (a Prometheus query's) swallows it."""


@dataclass
class Signals:
    """SIGINT / SIGTERM set a flag and are counted. They never raise inside the clean-up; they
    stop an ``interruptible`` step (evaluation, rendering), as the user asked. The handler does
    no I/O (it may run while the main thread holds the event log's lock): the first signal's
    time, name and stage are kept for the ``interrupt`` event the harness writes later.
    ``on_signal`` runs in the handler at every signal (it must be as careful)."""

    flag: SignalFlag = field(default_factory=SignalFlag)
    count: int = 0
    stage: str = "starting"  # the lifecycle step running now, set by GameDay
    first: tuple[float, str, str] | None = None  # (time, signal, stage) of the first signal
    on_signal: Callable[[], None] | None = None
    _raising: bool = False
    _previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        if self._previous:  # installed already (run_game_day does it before planning)
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.first is None:
            self.first = (time.time(), name, self.stage)
        self.flag.set()
        if self.on_signal is not None:
            self.on_signal()
        if self._raising:
            self._raising = False  # once: what the step does on its way out is not interrupted
            raise Interrupted(name)

    def interruptible(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """``fn(*args, **kwargs)``, stopped by a signal that comes while it runs: (whether a
        signal came, fn's value or None when it was stopped)."""
        before = self.count
        value = None
        # the outer try also catches a signal that lands after fn returned, before the
        # inner finally has turned raising off
        try:
            try:
                self._raising = True
                value = fn(*args, **kwargs)
            finally:
                self._raising = False
        except Interrupted:
            return True, value
        return self.count > before, value

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
