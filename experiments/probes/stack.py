"""Probes on the stack itself: replicas ready (from the supervisor's state file) and the
gateway's circuit breakers (its ``gateway_breaker_state`` gauge: 0 closed, 1 half-open,
2 open)."""

from __future__ import annotations

import re

import httpx
from chaoslib.exceptions import ActivityFailed

from .. import context
from ..actions.replicas import replicas_state

BREAKER_LINE = re.compile(r'^gateway_breaker_state\{dependency="([^"]+)"\}\s+([0-9.eE+-]+)$')
BREAKER_NAMES = {0: "closed", 1: "half_open", 2: "open"}


def replicas_ready(service: str = "llm", configuration: dict | None = None) -> int:
    """How many instances of ``service`` (name, service or kind) are ready in a live process."""
    return sum(replicas_state(service, configuration).values())


def all_replicas_ready(service: str = "llm", configuration: dict | None = None) -> bool:
    return all(replicas_state(service, configuration).values())


def breaker_states(configuration: dict | None = None) -> dict[str, str]:
    """Each dependency's breaker state from the gateway's /metrics."""
    url = context.target_url(configuration)
    try:
        response = httpx.get(f"{url}/metrics", timeout=context.HTTP_TIMEOUT)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ActivityFailed(f"gateway metrics at {url}/metrics: {exc}") from None
    states = {}
    for line in response.text.splitlines():
        match = BREAKER_LINE.match(line.strip())
        if match:
            states[match.group(1)] = BREAKER_NAMES.get(int(float(match.group(2))), "unknown")
    return states


def breakers_open(configuration: dict | None = None) -> int:
    """How many of the gateway's breakers are open (half-open ones not counted)."""
    return sum(1 for state in breaker_states(configuration).values() if state == "open")


def breaker_state(dependency: str, configuration: dict | None = None) -> str:
    states = breaker_states(configuration)
    if dependency not in states:
        raise ActivityFailed(
            f"breaker {dependency!r}: the gateway has none (breakers: {', '.join(states)})"
        )
    return states[dependency]
