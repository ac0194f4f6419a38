"""What the activities know about the run and the stack they act on: the experiment
``configuration`` keys aichaos passes in, and the stack's state file read at action time.

Configuration keys (Chaos Toolkit ``configuration`` of an experiment; ``aichaos run`` and
``aichaos chaos`` set them, an experiment file may declare them with ``env`` defaults):

- ``aichaos_run_dir``        the run directory: ``requests/*.parquet`` for the probes,
                             ``events.jsonl`` for the timeline.
- ``aichaos_stack_file``     the running stack's ``stack.json`` (services with PID, start time,
                             URL, admin URL and state; proxies). Every local target is checked
                             against it.
- ``aichaos_target``         the gateway URL (default: the ``gateway`` kind service's URL).
- ``aichaos_toxiproxy_url``  the Toxiproxy API (default: the ``proxy`` kind service's URL).
- ``aichaos_allowed``        extra target names the blast-radius policy accepts besides the
                             stack's services and proxies: Kubernetes namespaces, or proxy names
                             of a real Toxiproxy (a list, or a comma-separated string).

``experiments/`` never imports ``harness``: it reads the state file the supervisor writes, as
another shell would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import httpx
from chaoslib.exceptions import ActivityFailed

from aichaos.stackfile import ServiceState, StackNotFound, StackState, read_stack_state

RUN_DIR = "aichaos_run_dir"
STACK_FILE = "aichaos_stack_file"
TARGET = "aichaos_target"
TOXIPROXY_URL = "aichaos_toxiproxy_url"
ALLOWED = "aichaos_allowed"
RUN_KEY = "aichaos_run_key"  # set by ChaosRun: which run the clock control belongs to
CONFIG_KEYS = (RUN_DIR, STACK_FILE, TARGET, TOXIPROXY_URL, ALLOWED)

REPLICA_KINDS = ("llm", "fallback")
HTTP_TIMEOUT = 5.0
FAULTS_PATH = "/admin/faults"  # the simulator's fault API, on its admin port


def _get(configuration: Mapping[str, Any] | None, key: str) -> Any:
    return (configuration or {}).get(key) or None


def run_dir(configuration: Mapping[str, Any] | None) -> Path:
    value = _get(configuration, RUN_DIR)
    if value is None:
        raise ActivityFailed(f"configuration {RUN_DIR!r} is not set (the run directory)")
    return Path(value)


def allowed_names(configuration: Mapping[str, Any] | None) -> set[str]:
    value = _get(configuration, ALLOWED)
    if value is None:
        return set()
    if isinstance(value, str):
        return {v.strip() for v in value.split(",") if v.strip()}
    return {str(v) for v in value}


@overload
def stack_state(
    configuration: Mapping[str, Any] | None, required: Literal[True] = True
) -> StackState: ...


@overload
def stack_state(configuration: Mapping[str, Any] | None, required: bool) -> StackState | None: ...


def stack_state(
    configuration: Mapping[str, Any] | None, required: bool = True
) -> StackState | None:
    """The stack's state file as it is now; None when none is configured and not required."""
    value = _get(configuration, STACK_FILE)
    if value is None:
        if required:
            raise ActivityFailed(f"configuration {STACK_FILE!r} is not set (the stack.json path)")
        return None
    try:
        return read_stack_state(Path(value))
    except StackNotFound as exc:
        raise ActivityFailed(str(exc)) from None


def services(configuration: Mapping[str, Any] | None) -> dict[str, ServiceState]:
    return dict(stack_state(configuration).services)


def target_url(configuration: Mapping[str, Any] | None) -> str:
    return _url(configuration, TARGET, "gateway", "gateway")


def toxiproxy_url(configuration: Mapping[str, Any] | None) -> str:
    return _url(configuration, TOXIPROXY_URL, "proxy", "proxy server")


def _url(configuration: Mapping[str, Any] | None, key: str, kind: str, what: str) -> str:
    """The URL set under ``key``, else that of the stack's service of ``kind``."""
    value = _get(configuration, key)
    if value is not None:
        return str(value).rstrip("/")
    state = stack_state(configuration, required=False)
    svc = state.service_of_kind(kind) if state is not None else None
    if svc is None or not svc.url:
        raise ActivityFailed(f"configuration {key!r} is not set and the stack has no {what}")
    return svc.url.rstrip("/")


def faults_url(svc: ServiceState) -> str | None:
    """The fault API of a stack instance: on its own loopback admin port (``admin_url`` in
    stack.json), never its serving URL, which proxies forward. None: it has none (real vLLM)."""
    admin = svc.admin_url
    return f"{admin.rstrip('/')}{FAULTS_PATH}" if admin else None


def admin_request(
    method: str, url: str, body: Any = None, timeout: float = HTTP_TIMEOUT
) -> httpx.Response:
    """One request to a control API, always as JSON: it refuses state changes without it."""
    headers = {"Content-Type": "application/json"}
    return httpx.request(method, url, json=body, headers=headers, timeout=timeout)


def match_services(
    configuration: Mapping[str, Any] | None, service: str, kinds: tuple[str, ...] = REPLICA_KINDS
) -> list[tuple[str, ServiceState]]:
    """Instances named ``service``, or of that service, or of that kind (``llm`` is every LLM
    replica), in name order; only replica kinds: the gateway or the proxy server is no target."""
    found = []
    for name, svc in sorted(services(configuration).items()):
        if svc.kind not in kinds:
            continue
        if service in (name, svc.service, svc.kind):
            found.append((name, svc))
    if not found:
        raise ActivityFailed(
            f"service {service!r}: not a replica of this stack "
            f"(replicas: {', '.join(replica_names(configuration)) or 'none'})"
        )
    return found


def replica_names(configuration: Mapping[str, Any] | None) -> list[str]:
    return sorted(
        name for name, svc in services(configuration).items() if svc.kind in REPLICA_KINDS
    )


def proxies_in_front_of(
    name: str, svc: ServiceState, configuration: Mapping[str, Any] | None
) -> list[str]:
    """The stack's proxies whose upstream is the instance ``name`` (or its service)."""
    proxies = stack_state(configuration).proxies
    return sorted(p for p, decl in proxies.items() if decl.upstream in (name, svc.service))


def check_proxy(configuration: Mapping[str, Any] | None, proxy: str) -> None:
    """A proxy may be touched when the stack declares it, or the run allows it by name."""
    if proxy in allowed_names(configuration):
        return
    state = stack_state(configuration, required=False)
    declared = set(state.proxies) if state is not None else set()
    if proxy not in declared:
        raise ActivityFailed(
            f"proxy {proxy!r}: not a proxy of this run's stack "
            f"(proxies: {', '.join(sorted(declared)) or 'none'}); refused"
        )


def as_list(value: str | list[str], field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ActivityFailed(f"{field}: expected a name or a non-empty list of names, got {value!r}")
