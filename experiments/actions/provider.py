"""Provider degradation. The faults any provider can have act through the LLM toxics of the
proxy in front of each instance (``toxiproxy/llm_toxics.py``), so they are the same against
the simulator, a real vLLM engine or an endpoint aichaos did not start: 429 / 503 / 529
storms, mid-stream error events, truncated streams, stalls, slow first tokens, slow tokens,
hangs. The faults only an engine can have (KV-cache shrink, and any ``inject_llm_fault``) go
to the simulator's fault admin API (``/admin/faults`` on its own loopback admin port,
``admin_url`` in stack.json).
``services`` names instances (``llm-1``), services or kinds (``llm`` is every LLM replica,
``fallback`` the fallback provider)."""

from __future__ import annotations

from typing import Any

import httpx
from chaoslib.exceptions import ActivityFailed

from .. import context
from . import network


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


def _llm_toxic(
    services: str | list[str],
    kind: str,
    attributes: dict[str, Any],
    rate: float,
    configuration: dict | None,
) -> list[dict[str, Any]]:
    """The LLM toxic ``kind`` (see ``toxiproxy/llm_toxics.py``) on the proxy in front of every
    matching instance, hitting a share ``rate`` of its requests."""
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise ActivityFailed(f"rate: expected a number from 0 to 1, got {rate!r}")
    done = []
    for name, proxy in proxies_of(services, configuration):
        made = network.add_toxic(proxy, kind, attributes, toxicity=float(rate),
                                 configuration=configuration)  # fmt: skip
        done.append({"service": name, **made})
    return done


def proxies_of(services: str | list[str], configuration: dict | None) -> list[tuple[str, str]]:
    """``(instance, proxy)`` for the proxy in front of each matching instance: LLM faults act
    there, so they mean the same against a simulator, a real engine or any endpoint."""
    found = []
    for item in context.as_list(services, "services"):
        for name, svc in context.match_services(configuration, item):
            proxies = context.proxies_in_front_of(name, svc, configuration)
            if not proxies:
                raise ActivityFailed(f"{name}: no proxy in front of it (LLM faults act through "
                                     "the proxy on its edge)")  # fmt: skip
            found += [(name, proxy) for proxy in proxies]
    return sorted(set(found))


def error_storm(
    services: str | list[str],
    status: int = 503,
    rate: float = 1.0,
    retry_after: float = 1.0,
    shape: str = "auto",
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """A share ``rate`` of requests answered with ``status`` in a provider's error shape
    (``auto``: Anthropic's for 529, OpenAI's otherwise; or ``openai``, ``anthropic``,
    ``vllm``): 429 (rate limited, with Retry-After and x-ratelimit-* headers), 503
    (unavailable), 529 (overloaded). The request never reaches the provider."""
    attributes = {"status": status, "retry_after": round(retry_after), "shape": shape,
                  "seed": seed}  # fmt: skip
    return _llm_toxic(services, "http_error", attributes, rate, configuration)


def mid_stream_error(
    services: str | list[str],
    after_tokens: int = 5,
    rate: float = 1.0,
    truncate: bool = False,
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Streams break after ``after_tokens`` content events: an error event, or
    (``truncate``) a closed connection without ``[DONE]``."""
    kind = "truncate" if truncate else "error_event"
    attributes = {"after": after_tokens, "seed": seed}
    return _llm_toxic(services, kind, attributes, rate, configuration)


def stall_stream(
    services: str | list[str],
    seconds: float = 30.0,
    after_tokens: int = 5,
    rate: float = 1.0,
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Streams stop for ``seconds`` after ``after_tokens`` content events, then go on."""
    attributes = {"after": after_tokens, "duration": round(seconds * 1000), "seed": seed}
    return _llm_toxic(services, "stall", attributes, rate, configuration)


def slow_responses(
    services: str | list[str],
    seconds: float = 30.0,
    rate: float = 1.0,
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """``seconds`` added before the first token: a provider that answers too late."""
    attributes = {"delay": round(seconds * 1000), "seed": seed}
    return _llm_toxic(services, "first_token_delay", attributes, rate, configuration)


def slow_tokens(
    services: str | list[str],
    seconds_per_token: float = 0.1,
    rate: float = 1.0,
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Content events at least ``seconds_per_token`` apart: a provider generating slowly."""
    attributes = {"delay": round(seconds_per_token * 1000), "seed": seed}
    return _llm_toxic(services, "slow_tokens", attributes, rate, configuration)


def hang(
    services: str | list[str],
    rate: float = 1.0,
    seed: int = 0,
    configuration: dict | None = None,
) -> list[dict[str, Any]]:
    """Requests accepted and never answered, until the client gives up or the rollback."""
    return _llm_toxic(services, "hang", {"seed": seed}, rate, configuration)


def outage(services: str | list[str], configuration: dict | None = None) -> list[str]:
    """The provider is unreachable: the proxies in front of those instances stop listening
    and drop their open connections (connections refused). Returns the proxies."""
    proxies = sorted({proxy for _, proxy in proxies_of(services, configuration)})
    return network.disable_proxies(proxies, configuration)


def end_outage(services: str | list[str], configuration: dict | None = None) -> list[str]:
    """Rollback of ``outage``."""
    proxies = sorted({proxy for _, proxy in proxies_of(services, configuration)})
    return network.enable_proxies(proxies, configuration)


def kv_exhaustion(
    services: str | list[str], blocks: int = 64, configuration: dict | None = None
) -> list[dict[str, Any]]:
    """The KV-cache pool shrinks to ``blocks`` blocks, as when GPU memory is taken: fewer
    sequences fit, the rest queue, running ones get preempted and recomputed."""
    return inject_llm_fault(services, {"kind": "kv_shrink", "blocks": blocks}, configuration)


def clear_faults(
    services: str | list[str] = "llm", configuration: dict | None = None
) -> dict[str, int]:
    """Rollback of every LLM fault on those instances: aichaos's toxics on the proxies in front
    of them, and the simulator's own faults (``DELETE /admin/faults``) on each that has a fault
    API and is up (one restarted since has no fault). Returns the number removed per
    instance."""
    removed: dict[str, int] = {}
    for name, proxy in proxies_of(services, configuration):
        removed[name] = removed.get(name, 0) + len(
            network.remove_toxics(proxy, only_ours=True, configuration=configuration)
        )
    for name, url in _instances(services, configuration):
        removed.setdefault(name, 0)
        if url is None:
            continue
        try:
            response = context.admin_request("DELETE", url)
        except httpx.HTTPError:
            continue  # down (killed, restarting): a new process starts clean
        if response.status_code != 200:
            raise ActivityFailed(f"{name}: clearing faults failed (HTTP {response.status_code})")
        removed[name] += len(response.json().get("removed") or [])
    return removed
