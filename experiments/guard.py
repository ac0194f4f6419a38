"""The blast-radius guard: an experiment may touch only the services and proxies of the run's
topology (the stack's ``stack.json``), or Kubernetes namespaces and proxy names the run allows
explicitly (``aichaos_allowed``: the namespaces named on the command line). Checked before
anything starts; the activities check their targets again when they act.

Refused outright: ``process`` providers (an arbitrary command touches anything) and Python
providers from modules whose targets the guard cannot read (only ``aichaos.experiments`` and
``chaosk8s`` activities are known).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaoslib import substitute

from aichaos.rundir import InputError

from .context import REPLICA_KINDS, STACK_FILE, allowed_names

LOCAL_MODULES = "aichaos.experiments."
K8S_MODULES = "chaosk8s"
SERVICE_ARGS = ("service", "services")
PROXY_ARGS = ("proxy", "proxies")


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _stack(configuration: dict[str, Any]) -> dict[str, Any] | None:
    path = configuration.get(STACK_FILE)
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _activities(experiment: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    probes = (experiment.get("steady-state-hypothesis") or {}).get("probes") or []
    for section, items in (
        ("steady-state-hypothesis.probes", probes),
        ("method", experiment.get("method") or []),
        ("rollbacks", experiment.get("rollbacks") or []),
    ):
        for i, activity in enumerate(items):
            if isinstance(activity, dict) and "provider" in activity:
                found.append((f"{section}[{i}]", activity))
    return found


def check(experiment: dict[str, Any], configuration: dict[str, Any], source: str = "") -> None:
    """Raise ``InputError`` naming the first activity whose target is outside the run."""
    source = source or str(experiment.get("title", "experiment"))
    allowed = allowed_names(configuration)
    stack = _stack(configuration)
    services: set[str] = set()
    proxies: set[str] = set()
    if stack is not None:
        for name, svc in (stack.get("services") or {}).items():
            if svc.get("kind") in REPLICA_KINDS:
                services |= {name, str(svc.get("service")), str(svc.get("kind"))}
        proxies = set((stack.get("proxies") or {}).keys())
    for where, activity in _activities(experiment):
        provider = activity["provider"]
        kind = provider.get("type")
        field = f"{where}.provider"
        if kind == "process":
            raise InputError(source, field, "no process provider (its blast radius is unknown)")
        if kind != "python":
            continue
        module = str(provider.get("module", ""))
        arguments = substitute(dict(provider.get("arguments") or {}), configuration, {})
        if module.startswith(K8S_MODULES):
            ns = arguments.get("ns")
            if ns is None:
                raise InputError(source, f"{field}.arguments.ns", "an explicit namespace")
            if ns not in allowed:
                raise InputError(
                    source,
                    f"{field}.arguments.ns",
                    f"a namespace allowed for this run ({', '.join(sorted(allowed)) or 'none'})",
                    ns,
                )
            continue
        if not module.startswith(LOCAL_MODULES):
            raise InputError(
                source, f"{field}.module", "an aichaos.experiments or chaosk8s activity", module
            )
        for arg in SERVICE_ARGS:
            for name in _names(arguments.get(arg)):
                if name in allowed:
                    continue
                if stack is None:
                    raise InputError(source, f"{field}.arguments.{arg}", "a running stack", name)
                if name not in services:
                    raise InputError(
                        source,
                        f"{field}.arguments.{arg}",
                        f"a replica of this run's topology ({', '.join(sorted(services))})",
                        name,
                    )
        for arg in PROXY_ARGS:
            for name in _names(arguments.get(arg)):
                if name in allowed:
                    continue
                if name not in proxies:
                    raise InputError(
                        source,
                        f"{field}.arguments.{arg}",
                        f"a proxy of this run's topology ({', '.join(sorted(proxies)) or 'none'})",
                        name,
                    )
