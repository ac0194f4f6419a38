"""The stack as the rest of aichaos uses it.

``Stack`` runs a topology in this process (its supervisor in a background thread)::

    with Stack.up("fixtures/topology/default.yaml", run_dir) as stack:
        httpx.get(stack.url("gateway") + "/health")
        pid = stack.kill("llm-1")              # SIGKILL; the supervisor restarts it
        stack.wait_ready("llm-1", not_pid=pid)

``StackClient`` acts on a stack another process runs (``aichaos stack up``), through its
state file: ``StackClient.attach().kill("llm-1")``.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path
from typing import Any

from aichaos.rundir import EventLog
from aichaos.signalling import kill_service
from aichaos.stackfile import StackState
from aichaos.waiting import wait_until

from .orphans import clean_up, live_services
from .stack_state import (
    DEFAULT_POINTER,
    STATE_FILE,
    clear_pointer,
    find_run_dir,
    read_state,
    stop_groups,
)
from .supervisor import READY, StackError, StopFlag, Supervisor
from .topology import Topology, load_topology


class Stack:
    """A stack run by this process. Use ``Stack.up(...)``, best as a context manager."""

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor
        self.run_dir = supervisor.run_dir
        self.events_path = supervisor.events.path

    @classmethod
    def up(
        cls,
        topology: Topology | str | Path,
        run_dir: str | Path,
        *,
        prometheus: str | bool = True,
        pointer: Path | None = None,
        interrupt: StopFlag | None = None,
        source: str | None = None,
    ) -> Stack:
        """Start ``topology`` (a ``Topology`` or a file) with its state in ``run_dir``; returns
        once every service is ready, then keeps restarting those that exit. Raises
        ``TopologyError`` or ``StackStartError`` (nothing is left running then), or
        ``StackInterrupted`` when ``interrupt`` is set during start-up."""
        source = source or "topology"
        if not isinstance(topology, Topology):
            source = str(topology)
            topology = load_topology(topology)
        supervisor = Supervisor(
            topology, Path(run_dir), source=source, prometheus=prometheus, pointer=pointer
        )
        supervisor.start(interrupt)
        supervisor.start_monitor()
        atexit.register(supervisor.shutdown)  # a forgotten down() still leaves nothing behind
        return cls(supervisor)

    def url(self, name: str) -> str:
        """``http://127.0.0.1:PORT`` of a service instance (``llm-1``, ``gateway``)."""
        return self.supervisor.url(name)

    def admin_url(self, name: str) -> str:
        """``http://127.0.0.1:PORT`` of an instance's control API (the simulator's faults)."""
        return self.supervisor.admin_url(name)

    def proxy_url(self, name: str) -> str:
        return self.supervisor.proxy_url(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal an instance's process group; returns the PID. It restarts after its
        ``restart_delay``."""
        return self.supervisor.kill(name, sig)

    def pid(self, name: str) -> int | None:
        return self.supervisor._get(name).pid

    def wait_ready(self, name: str, timeout: float = 30.0, not_pid: int | None = None) -> int:
        """Wait until ``name`` is ready (in a process other than ``not_pid``); its PID."""
        p = self.supervisor._get(name)

        def new_pid() -> int | None:
            with self.supervisor._lock:
                return p.pid if p.state == READY and p.pid not in (None, not_pid) else None

        pid = wait_until(new_pid, timeout)
        if pid is not None:
            return pid
        raise StackError(f"service {name!r} not ready again within {timeout:g}s ({p.state})")

    def status(self) -> StackState:
        return self.supervisor.state()

    def down(self) -> None:
        self.supervisor.shutdown()
        atexit.unregister(self.supervisor.shutdown)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


class StackClient:
    """A stack run by another process (``aichaos stack up``), found through its state file."""

    def __init__(self, run_dir: Path, pointer: Path | None = None):
        self.run_dir = Path(run_dir)
        self.pointer = pointer

    @classmethod
    def attach(cls, run_dir: Path | None = None, pointer: Path = DEFAULT_POINTER) -> StackClient:
        """The stack in ``run_dir``, else the one the pointer names; ``StackNotFound`` if none."""
        found = find_run_dir(run_dir, pointer)
        read_state(found)  # fails early, with one line, when there is no state
        return cls(found, pointer)

    def status(self) -> StackState:
        """The state file, with what is really alive now: ``supervisor_alive`` and, per
        service, ``alive``. A dead supervisor makes the status ``orphaned`` while a service of
        it still runs, else ``gone``."""
        state = read_state(self.run_dir)
        alive = state.supervisor_alive = state.supervisor_running()
        for svc in state.services.values():
            svc.alive = svc.running()
        if not alive and live_services(state):
            state.status = "orphaned"
        elif not alive and state.status not in ("stopped", "failed", "crashed"):
            state.status = "gone"
        return state

    def url(self, name: str) -> str:
        svc = self.status().services.get(name)
        if svc is None or svc.url is None:
            raise StackError(f"no service {name!r} in {self.run_dir / STATE_FILE}")
        return svc.url

    def admin_url(self, name: str) -> str:
        svc = self.status().services.get(name)
        if not svc or not svc.admin_url:
            raise StackError(f"no admin port for service {name!r} in {self.run_dir / STATE_FILE}")
        return svc.admin_url

    def proxy_url(self, name: str) -> str:
        proxy = self.status().proxies.get(name)
        if not proxy or not proxy.url:
            raise StackError(f"no proxy {name!r} in {self.run_dir / STATE_FILE}")
        return proxy.url

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal one service's process group; its supervisor restarts it."""
        state = self.status()
        svc = state.services.get(name)
        if not svc or not svc.alive or svc.pid is None:
            raise StackError(f"service {name!r} is not running")
        events = EventLog(state.events, source="harness") if state.events else None
        if not kill_service(events, name, svc.pid, svc.start_time, sig):
            raise StackError(f"service {name!r} exited before it could be killed")
        return svc.pid

    def pids(self) -> list[int]:
        """The supervisor's, its owner watch's and every service's PID, as recorded."""
        state = read_state(self.run_dir)
        pids = [ref.pid for ref in (state.supervisor, state.watchdog) if ref is not None]
        pids += [svc.pid for svc in state.services.values() if svc.pid is not None]
        return [p for p in pids if p]

    def down(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the supervisor to stop (SIGTERM) and wait for it; then stop, by process group,
        any service it did not. A stack whose supervisor was already gone (killed with SIGKILL,
        its owner watch too) has its faults rolled back first and is recorded as crashed."""
        sup = read_state(self.run_dir).supervisor
        signalled = False
        if sup is not None and sup.alive():
            os.kill(sup.pid, signal.SIGTERM)
            signalled = True
            wait_until(lambda: not sup.alive(), timeout)
            if sup.alive():
                os.kill(sup.pid, signal.SIGKILL)
        state = read_state(self.run_dir)
        leftovers = [
            (svc.pid, svc.start_time)
            for svc in state.services.values()
            if svc.pid is not None and svc.running()
        ]
        if leftovers and not signalled:
            why = "its supervisor was gone; stopped by aichaos stack down"
            clean_up(self.run_dir, why, source="stack-down")
        else:
            stop_groups(leftovers)
        if self.pointer is not None:
            clear_pointer(self.pointer, self.run_dir)
        return {"supervisor_signalled": signalled, "leftovers_stopped": [p for p, _ in leftovers]}
