"""Replica faults, as a pod kill or a crashed engine would hit a Deployment.

A killed replica is brought back by the stack's supervisor after its ``restart_delay``; the
rollback (``wait_replicas_ready``) waits for that. The PID signalled is read from the state
file at action time and checked against its recorded start time, so a PID the kernel has given
to another process since is never signalled.
"""

from __future__ import annotations

import signal as signals
from typing import Any

import httpx
import psutil
from chaoslib.exceptions import ActivityFailed

from aichaos.rundir import EVENTS_JSONL, EventLog
from aichaos.signalling import kill_service
from aichaos.stackfile import ServiceState
from aichaos.waiting import wait_until

from .. import context
from . import network, provider

POLL_S = 0.2
ENGINE_TITLE = "EngineCore"  # vLLM titles its engine process VLLM::EngineCore


def _alive(svc: ServiceState) -> bool:
    """A live process; for an endpoint aichaos does not run, any HTTP answer."""
    if svc.external:
        try:
            httpx.get(f"{svc.url}/v1/models", timeout=context.HTTP_TIMEOUT)
        except httpx.HTTPError:
            return False
        return True
    return svc.running()


def _signal(value: str | int) -> signals.Signals:
    try:
        return signals.Signals[value] if isinstance(value, str) else signals.Signals(value)
    except (KeyError, ValueError):
        raise ActivityFailed(f"signal: expected SIGKILL or SIGTERM, got {value!r}") from None


def kill_replica(
    service: str = "llm",
    count: int = 1,
    signal: str = "SIGKILL",
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Signal the process group of ``count`` running instances of ``service`` (an instance
    name such as ``llm-1``, a service name, or a kind such as ``llm``). SIGKILL is a pod kill,
    SIGTERM a graceful termination. Returns ``[{name, pid, signal}]``."""
    sig = _signal(signal)
    if count < 1:
        raise ActivityFailed(f"count: expected at least 1, got {count}")
    candidates = [
        (name, svc)
        for name, svc in context.match_services(configuration, service)
        if svc.state == "ready" and _alive(svc)
    ]
    if len(candidates) < count:
        raise ActivityFailed(
            f"kill {count} of {service!r}: only {len(candidates)} instance(s) running and ready"
        )
    events = _timeline(configuration)
    killed = []
    for name, svc in candidates[:count]:
        pid = svc.pid
        if pid is None:
            raise ActivityFailed(f"kill {name}: no process (an endpoint aichaos did not start)")
        # the supervisor starts each service in its own group: the group goes
        if not kill_service(events, name, pid, svc.start_time, sig):
            raise ActivityFailed(f"kill {name}: process {pid} is gone")
        killed.append({"name": name, "pid": pid, "signal": sig.name})
    return killed


def _timeline(configuration: dict | None) -> EventLog | None:
    """The run's events.jsonl, where a kill is written like any other; None outside a run."""
    if not (configuration or {}).get(context.RUN_DIR):
        return None
    return EventLog(context.run_dir(configuration) / EVENTS_JSONL, source="experiments")


def terminate_replica(
    service: str = "llm", count: int = 1, configuration: dict | None = None
) -> list[dict[str, Any]]:
    """SIGTERM: the replica shuts down as on a rolling update; the supervisor restarts it."""
    return kill_replica(service, count, "SIGTERM", configuration)


def engine_process(pid: int) -> psutil.Process | None:
    """The EngineCore child of a vLLM API server (by process title: the kernel's 15-character
    name cuts it to ``VLLM::EngineCor``, the rewritten command line keeps it whole)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            title = " ".join(child.cmdline()) or child.name()
        except psutil.Error:
            continue
        if ENGINE_TITLE in title:
            return child
    return None


def kill_engine_core(
    service: str = "llm-1",
    count: int = 1,
    signal: str = "SIGKILL",
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Kill only the engine process (``VLLM::EngineCore``) of ``count`` running vLLM replicas,
    leaving their API servers: a crashed engine rather than a lost pod. What vLLM does then
    is in the README (reference stack). Returns ``[{name, pid, engine_pid, signal}]``."""
    sig = _signal(signal)
    candidates = [
        (name, svc)
        for name, svc in context.match_services(configuration, service)
        if svc.state == "ready" and _alive(svc)
    ]
    if len(candidates) < max(count, 1):
        raise ActivityFailed(
            f"kill the engine of {count} of {service!r}: only {len(candidates)} instance(s) "
            "running and ready"
        )
    killed = []
    for name, svc in candidates[:count]:
        engine = engine_process(svc.pid) if svc.pid is not None else None
        if engine is None:
            raise ActivityFailed(f"{name}: no {ENGINE_TITLE} process (not a vLLM replica?)")
        try:
            engine.send_signal(sig)
        except psutil.NoSuchProcess:
            raise ActivityFailed(f"{name}: its {ENGINE_TITLE} process is gone") from None
        killed.append({"name": name, "pid": svc.pid, "engine_pid": engine.pid, "signal": sig.name})
    return killed


def replicas_state(service: str, configuration: dict | None) -> dict[str, bool]:
    """Per matching instance: ready in a live process?"""
    return {
        name: svc.state == "ready" and _alive(svc)
        for name, svc in context.match_services(configuration, service)
    }


def wait_replicas_ready(
    service: str = "llm", timeout_s: float = 60.0, configuration: dict | None = None
) -> dict[str, bool]:
    """Rollback of the replica faults: wait until every instance of ``service`` is ready again
    (the supervisor restarts exited ones); fails after ``timeout_s``."""
    state: dict[str, bool] = {}

    def all_ready() -> bool:
        nonlocal state
        state = replicas_state(service, configuration)
        return all(state.values())

    if wait_until(all_ready, timeout_s, POLL_S):
        return state
    down = [name for name, ok in state.items() if not ok]
    raise ActivityFailed(f"{', '.join(down)} not ready again within {timeout_s:g}s")


def engine_death(
    service: str = "llm-1",
    count: int = 1,
    exit_after: float = 1.0,
    stay: bool = False,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """The engine dies (vLLM's EngineDeadError): in-flight streams get an error chunk, new
    requests a 500, /health 503; the process exits after ``exit_after`` seconds (and the
    supervisor restarts it) unless ``stay``, when it stays dead until the rollback."""
    fault = {"kind": "engine_death", "exit_after": exit_after, "stay": stay}
    names = [name for name, _ in context.match_services(configuration, service)][:count]
    return [provider.inject_fault(name, fault, configuration) for name in names]


def revive_replicas(
    service: str = "llm", timeout_s: float = 60.0, configuration: dict | None = None
) -> dict[str, bool]:
    """Rollback of ``engine_death``: clear the fault on those still up, then wait for all."""
    provider.clear_faults(service, configuration)
    return wait_replicas_ready(service, timeout_s, configuration)


def slow_start(
    service: str = "llm-1", count: int = 1, configuration: dict | None = None
) -> list[dict[str, Any]]:
    """A replica restarts and takes long to load its model: it is killed and its edge (the
    proxies in front of it) stays closed until the rollback, so for the fault's duration the
    gateway finds the port shut, as it would while weights load. (The simulator's own
    ``slow_start`` is a start-up flag, which the supervisor's restart does not pass.)"""
    matched = context.match_services(configuration, service)[:count]
    closed = []
    for name, svc in matched:
        proxies = context.proxies_in_front_of(name, svc, configuration)
        if not proxies:
            raise ActivityFailed(f"slow start of {name}: no proxy in front of it to hold closed")
        network.disable_proxies(proxies, configuration)
        killed = kill_replica(name, 1, "SIGKILL", configuration)
        closed.append({"name": name, "pid": killed[0]["pid"], "proxies": proxies})
    return closed


def finish_slow_start(
    service: str = "llm-1", timeout_s: float = 60.0, configuration: dict | None = None
) -> dict[str, bool]:
    """Rollback of ``slow_start``: the replica's edge opens and the replica is ready."""
    proxies: list[str] = []
    for name, svc in context.match_services(configuration, service):
        proxies += context.proxies_in_front_of(name, svc, configuration)
    if proxies:
        network.enable_proxies(proxies, configuration)
    return wait_replicas_ready(service, timeout_s, configuration)
