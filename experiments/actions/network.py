"""Faults on the proxy edges, through ``toxiproxy-python`` (``experiments.proxies``), against
the embedded server or a real Toxiproxy: outages (proxy disabled: connections refused and open
ones dropped) and toxics (latency with jitter, bandwidth, reset_peer, timeout, slicer,
limit_data, slow_close). Proxies may be named only if the stack declares them or the run
allows them (``aichaos_allowed``)."""

from __future__ import annotations

import threading
from typing import Any

from chaoslib.exceptions import ActivityFailed

from .. import context
from ..proxies import TOXIC_TYPES, ToxiproxyClient, ToxiproxyError

# toxiproxy-python keeps the server address in class attributes: one call at a time.
_LOCK = threading.Lock()
TOXIC_PREFIX = "aichaos_"


def _client(configuration: dict | None) -> ToxiproxyClient:
    return ToxiproxyClient(context.toxiproxy_url(configuration), timeout=context.HTTP_TIMEOUT)


def _checked(proxies: str | list[str], configuration: dict | None) -> list[str]:
    names = context.as_list(proxies, "proxies")
    for name in names:
        context.check_proxy(configuration, name)
    return names


def disable_proxies(proxies: str | list[str], configuration: dict | None = None) -> list[str]:
    """Outage of those edges: the proxies stop listening and drop open connections."""
    return _switch(proxies, configuration, on=False)


def enable_proxies(proxies: str | list[str], configuration: dict | None = None) -> list[str]:
    """Rollback of ``disable_proxies``."""
    return _switch(proxies, configuration, on=True)


def _switch(proxies: str | list[str], configuration: dict | None, on: bool) -> list[str]:
    names = _checked(proxies, configuration)
    with _LOCK:
        client = _client(configuration)
        try:
            for name in names:
                (client.enable if on else client.disable)(name)
        except ToxiproxyError as exc:
            raise ActivityFailed(str(exc)) from None
    return names


def add_toxic(
    proxy: str,
    type: str,
    attributes: dict[str, Any] | None = None,
    stream: str = "downstream",
    toxicity: float = 1.0,
    name: str | None = None,
    configuration: dict | None = None,
) -> dict[str, Any]:
    """Any toxic on one edge, e.g. ``latency`` ``{latency: 500, jitter: 100}`` (ms),
    ``bandwidth`` ``{rate: KB/s}``, ``timeout`` ``{timeout: ms}``, ``reset_peer``,
    ``slicer``, ``limit_data`` ``{bytes}``, or an LLM toxic of the embedded server
    (``http_error``, ``error_event``, ``truncate``, ``stall``, ``first_token_delay``,
    ``slow_tokens``, ``hang``). Named ``aichaos_<type>_<stream>`` unless ``name``."""
    context.check_proxy(configuration, proxy)
    if type not in TOXIC_TYPES:
        raise ActivityFailed(f"type: expected one of {', '.join(TOXIC_TYPES)}, got {type!r}")
    if stream not in ("downstream", "upstream"):
        raise ActivityFailed(f"stream: expected downstream or upstream, got {stream!r}")
    toxic_name = name or f"{TOXIC_PREFIX}{type}_{stream}"
    with _LOCK:
        try:
            toxic = _client(configuration).add_toxic(
                proxy,
                type,
                stream=stream,
                toxicity=toxicity,
                attributes=attributes or {},
                name=toxic_name,
            )
        except ToxiproxyError as exc:
            raise ActivityFailed(str(exc)) from None
    return {"proxy": proxy, "name": toxic.name, "type": type, "attributes": toxic.attributes}


def add_latency(
    proxy: str,
    latency_ms: int = 500,
    jitter_ms: int = 0,
    stream: str = "downstream",
    configuration: dict | None = None,
) -> dict[str, Any]:
    """Latency on an edge: every chunk delayed ``latency_ms`` ± ``jitter_ms``."""
    attributes = {"latency": latency_ms, "jitter": jitter_ms}
    return add_toxic(proxy, "latency", attributes, stream, configuration=configuration)


def remove_toxics(
    proxies: str | list[str], only_ours: bool = False, configuration: dict | None = None
) -> list[str]:
    """Rollback of the toxics: remove every toxic of those proxies (or only aichaos-named
    ones). Returns ``proxy/toxic`` names removed."""
    names = _checked(proxies, configuration)
    removed = []
    with _LOCK:
        client = _client(configuration)
        try:
            for proxy in names:
                for toxic in client.toxics(proxy):
                    if only_ours and not toxic.startswith(TOXIC_PREFIX):
                        continue
                    client.remove_toxic(proxy, toxic)
                    removed.append(f"{proxy}/{toxic}")
        except ToxiproxyError as exc:
            raise ActivityFailed(str(exc)) from None
    return removed


def reset(configuration: dict | None = None) -> None:
    """Every proxy enabled, every toxic removed (Toxiproxy's ``POST /reset``)."""
    with _LOCK:
        try:
            _client(configuration).reset()
        except ToxiproxyError as exc:
            raise ActivityFailed(str(exc)) from None
