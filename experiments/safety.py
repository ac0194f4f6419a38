"""The last line of defence, called on every exit path of a run (Ctrl-C included): whatever
the rollbacks did or did not do, every proxy is enabled with no toxic (Toxiproxy's
``POST /reset``) and every simulator leaves its fault modes (``DELETE /admin/faults`` on
its own admin port, the ``admin_url`` stack.json records).
Never raises: each step that fails is reported in the returned lines."""

from __future__ import annotations

from typing import Any

import httpx

from aichaos.stackfile import ServiceState

from . import context
from .actions import load, network

RESET_TIMEOUT = 5.0


def restore_all(configuration: dict[str, Any]) -> list[str]:
    """Reset the proxy server and clear every simulator's faults; one line per step."""
    notes: list[str] = []
    stopped = load.stop_noisy_neighbours()
    if stopped:
        notes.append(f"noisy neighbours stopped: {', '.join(sorted(stopped))}")
    try:
        url = context.toxiproxy_url(configuration)
        network.reset(configuration)
        notes.append(f"proxies reset at {url}")
    except Exception as exc:  # the next step must run whatever this did
        notes.append(f"proxies not reset: {exc}")
    services: dict[str, ServiceState] = {}
    try:
        state = context.stack_state(configuration, required=False)
    except Exception as exc:
        notes.append(f"simulators not cleared: {exc}")
    else:
        services = state.services if state is not None else {}
    for name, svc in sorted(services.items()):
        if svc.kind not in context.REPLICA_KINDS:
            continue
        url = context.faults_url(svc)
        if url is None:
            notes.append(f"{name}: no fault admin API (not a simulator)")
            continue
        try:
            response = context.admin_request("DELETE", url, timeout=RESET_TIMEOUT)
        except httpx.HTTPError as exc:
            notes.append(f"{name}: faults not cleared (unreachable: {type(exc).__name__})")
            continue
        if response.status_code == 200:
            removed = len(response.json().get("removed") or [])
            notes.append(f"{name}: {removed} fault(s) cleared")
        elif response.status_code == 404:
            notes.append(f"{name}: no fault admin API (not a simulator)")
        else:
            notes.append(f"{name}: faults not cleared (HTTP {response.status_code})")
    return notes
