"""Provider degradation through the simulator's fault admin API (``/admin/faults`` on its own
loopback admin port, ``admin_url`` in stack.json): 429 / 503 / 529 storms, mid-stream error
chunks, truncated streams, stalls, inflated time to first token, KV-cache shrink.
``services`` names instances (``llm-1``), services or kinds (``llm`` is every LLM replica,
``fallback`` the fallback provider)."""

from __future__ import annotations

from typing import Any

import httpx
from chaoslib.exceptions import ActivityFailed

from .. import context


def _instances(
    services: str | list[str], configuration: dict | None
) -> list[tuple[str, str | None]]:
    """``(name, fault API URL)`` per matching instance; None for one without (real vLLM)."""
    found: dict[str, str | None] = {}
    for item in context.as_list(services, "services"):
        for name, svc in context.match_services(configuration, item):
            found[name] = context.faults_url(svc)
    return sorted(found.items())


def inject_fault(name: str, fault: dict[str, Any], configuration: dict | None) -> dict[str, Any]:
    url = _instances(name, configuration)[0][1]
    if url is None:
        raise ActivityFailed(f"{name}: no fault admin API (not a simulator: no admin_url)")
    try:
        response = context.admin_request("POST", url, fault)
    except httpx.HTTPError as exc:
        raise ActivityFailed(f"{name}: fault admin API at {url} unreachable: {exc}") from None
    if response.status_code != 201:
        detail = f"HTTP {response.status_code}: {response.text}"
        raise ActivityFailed(f"{name}: fault refused ({detail})")
    return {"service": name, **response.json()}


def inject_llm_fault(
    services: str | list[str], fault: dict[str, Any], configuration: dict | None = None
) -> list[dict[str, Any]]:
    """Any simulator fault (``{"kind": "error", "status": 529, "rate": 0.5}``, see
    ``fixtures/llm_sim/faults.py``) on every matching instance."""
    if not isinstance(fault, dict) or "kind" not in fault:
        raise ActivityFailed(f"fault: expected an object with a 'kind', got {fault!r}")
    names = [name for name, _ in _instances(services, configuration)]
    return [inject_fault(name, fault, configuration) for name in names]


def error_storm(
    services: str | list[str],
    status: int = 503,
    rate: float = 1.0,
    retry_after: float = 1.0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """A share ``rate`` of requests answered with ``status`` in the provider's error shape:
    429 (rate limited, with Retry-After), 503 (unavailable), 529 (overloaded)."""
    fault = {"kind": "error", "status": status, "rate": rate, "retry_after": retry_after}
    return inject_llm_fault(services, fault, configuration)


def mid_stream_error(
    services: str | list[str],
    after_tokens: int = 5,
    rate: float = 1.0,
    truncate: bool = False,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Streams break after ``after_tokens`` tokens: an error chunk, or (``truncate``) a closed
    connection without ``[DONE]``."""
    kind = "truncate" if truncate else "error_chunk"
    fault = {"kind": kind, "after_tokens": after_tokens, "rate": rate}
    return inject_llm_fault(services, fault, configuration)


def stall_stream(
    services: str | list[str],
    seconds: float = 30.0,
    after_tokens: int = 5,
    rate: float = 1.0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Streams stop for ``seconds`` after ``after_tokens`` tokens, then go on."""
    fault = {"kind": "stall", "seconds": seconds, "after_tokens": after_tokens, "rate": rate}
    return inject_llm_fault(services, fault, configuration)


def slow_responses(
    services: str | list[str],
    seconds: float = 30.0,
    rate: float = 1.0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """``seconds`` added before the first token: a provider that answers too late."""
    fault = {"kind": "ttft_inflate", "seconds": seconds, "rate": rate}
    return inject_llm_fault(services, fault, configuration)


def kv_exhaustion(
    services: str | list[str], blocks: int = 64, configuration: dict | None = None
) -> list[dict[str, Any]]:
    """The KV-cache pool shrinks to ``blocks`` blocks, as when GPU memory is taken: fewer
    sequences fit, the rest queue, running ones get preempted and recomputed."""
    return inject_llm_fault(services, {"kind": "kv_shrink", "blocks": blocks}, configuration)


def clear_faults(
    services: str | list[str] = "llm", configuration: dict | None = None
) -> dict[str, int]:
    """Rollback of every simulator fault: ``DELETE /admin/faults`` on each matching instance
    that is up (one restarted since has no fault; one without a fault API has none). Returns
    the number removed per instance."""
    removed: dict[str, int] = {}
    for name, url in _instances(services, configuration):
        if url is None:
            removed[name] = 0
            continue
        try:
            response = context.admin_request("DELETE", url)
        except httpx.HTTPError:
            removed[name] = 0  # down (killed, restarting): a new process starts clean
            continue
        if response.status_code != 200:
            raise ActivityFailed(f"{name}: clearing faults failed (HTTP {response.status_code})")
        removed[name] = len(response.json().get("removed") or [])
    return removed
