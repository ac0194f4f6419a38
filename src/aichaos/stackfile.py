"""A running stack's state file (``RUN_DIR/stack.json``) as a typed contract: the supervisor
builds a ``StackState`` after every change and writes its ``model_dump(mode="json")``; the
harness and the experiments, which must not import each other, both read it here
(``read_stack_state``).

Every field but a service's ``kind`` is optional on reading, so a file written by hand (the
tests, a planted file) with only what its reader needs still reads; the supervisor always
writes them all. ``alive`` (per service) and ``supervisor_alive`` are not in the file: they
are what a reader found when it looked (``StackClient.status``), and they are written out
only once set (``aichaos stack status --json`` prints them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from .errors import InputError, NotCompleted
from .processes import ProcessRef, process_alive
from .validation import read_json_model


class StackNotFound(NotCompleted):
    """No stack state where one was looked for; ``str()`` is one line for the user."""


class ExitRecord(BaseModel):
    """How a service's process last exited."""

    pid: int | None = None
    returncode: int
    signal: str | None = None  # the signal's name, when one ended it
    t: float  # epoch seconds


class ServiceState(BaseModel):
    """One instance of a topology's service (``llm-1``, ``gateway``)."""

    service: str | None = None  # the topology service it is an instance of (``llm``)
    kind: str  # ``llm``, ``fallback``, ``gateway``, ``proxy`` (the Toxiproxy server), ...
    external: bool = False  # an endpoint given by url: aichaos runs no process for it
    replica: int | None = None  # 1-based
    state: str | None = None  # pending, starting, ready, restarting, stopped
    pid: int | None = None  # its process (the leader of its process group); None before
    start_time: float | None = None  # that process's, as ``processes.process_start_time``
    port: int | None = None
    url: str | None = None
    admin_port: int | None = None  # its control API's own loopback port, never proxied
    admin_url: str | None = None
    ready_url: str | None = None
    log: Path | None = None
    restarts: int = 0
    started_at: float | None = None  # epoch seconds
    ready_at: float | None = None
    last_exit: ExitRecord | None = None
    alive: bool | None = None  # not in the file: whether a reader found its process running

    @property
    def ref(self) -> ProcessRef | None:
        """Its process, when the state names one with its start time."""
        if self.pid is None or self.start_time is None:
            return None
        return ProcessRef(pid=self.pid, start_time=self.start_time)

    def running(self) -> bool:
        """Its recorded process runs (and is the one that started then, when that is known)."""
        return process_alive(self.pid, self.start_time)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.alive is None:  # nobody looked: not part of the state
            data.pop("alive", None)
        return data


class ProxyState(BaseModel):
    """A Toxiproxy proxy of the topology."""

    listen: str | None = None  # host:port it listens on; None until the server has it
    url: str | None = None  # ``http://`` + listen
    upstream: str | None = None  # the instance or service it forwards to
    upstream_url: str | None = None
    enabled: bool = True


class PrometheusState(BaseModel):
    """The stack's Prometheus: where it runs, or why it does not."""

    url: str | None = None  # None: not started (``skipped`` says why)
    config: Path | None = None  # the prometheus.yml written for it
    skipped: str | None = None


class StackState(BaseModel):
    """``RUN_DIR/stack.json``."""

    name: str | None = None  # the topology's name
    topology: str | None = None  # where it came from (a file, or what built it)
    run_dir: Path | None = None
    events: Path | None = None  # the stack's events.jsonl
    status: str | None = None  # starting, ready, stopping, stopped, failed, crashed
    error: str | None = None  # why it failed or crashed
    started_at: float | None = None  # epoch seconds
    ready_at: float | None = None
    stopped_at: float | None = None
    supervisor: ProcessRef | None = None  # the process running the supervisor: the owner
    watchdog: ProcessRef | None = None  # its owner watch (``harness.owner_watch``)
    services: dict[str, ServiceState] = Field(default_factory=dict)  # by instance name
    proxies: dict[str, ProxyState] = Field(default_factory=dict)  # by proxy name
    prometheus: PrometheusState | None = None  # None: the topology declares none
    # not in the file: whether a reader found the supervisor running (``supervisor.alive``)
    supervisor_alive: bool | None = Field(default=None, exclude=True)

    def supervisor_running(self) -> bool:
        return self.supervisor is not None and self.supervisor.alive()

    def service_of_kind(self, kind: str) -> ServiceState | None:
        """The first service of ``kind``, in the file's order."""
        return next((svc for svc in self.services.values() if svc.kind == kind), None)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.supervisor_alive is not None:
            data["supervisor"] = {**(data.get("supervisor") or {}), "alive": self.supervisor_alive}
        return data


def read_stack_state(path: Path) -> StackState:
    """The state file as it is now; ``StackNotFound`` when it is missing, unreadable or not a
    stack state."""
    try:
        state = read_json_model(Path(path), StackState)
    except InputError as exc:
        raise StackNotFound(f"unreadable stack state: {exc}") from None
    if state is None:
        raise StackNotFound(f"{path}: no stack state (is the stack up?)")
    return state


__all__ = [
    "ExitRecord",
    "PrometheusState",
    "ProxyState",
    "ServiceState",
    "StackNotFound",
    "StackState",
    "read_stack_state",
]
