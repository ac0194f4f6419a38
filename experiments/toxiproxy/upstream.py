"""The proxy's side of the upstream connection: plain TCP, or TLS when the proxy asks for it.

A proxy's client context is built once, when its TLS settings are set or change
(``client_context``); every connection then opens with ``open_upstream``. A handshake the
upstream fails (a certificate not trusted, a name it is not valid for) raises ``OSError``,
as a refused connection does, so the caller closes the client's connection; it is logged
once, with the proxy's name and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("aichaos.toxiproxy")

HANDSHAKE_TIMEOUT = 30.0  # seconds an upstream may take to complete the TLS handshake

P = TypeVar("P", bound=asyncio.BaseProtocol)


def client_context(
    upstream_tls: bool = False,
    upstream_ca_file: str | None = None,
    upstream_verify: bool = True,
) -> ssl.SSLContext | None:
    """The context the proxy's upstream connections use; None: plain TCP.

    ``upstream_ca_file``: the only CAs trusted (PEM); None: the system's trust store.
    ``upstream_verify`` False: neither the certificate nor the name is checked. Raises
    ``OSError`` (``ssl.SSLError``) when the CA file does not load.
    """
    if not upstream_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=upstream_ca_file)
    if not upstream_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_name(proxy: Proxy) -> str:
    """The name sent as SNI and checked against the certificate."""
    return proxy.upstream_server_name or proxy.upstream_address[0]


async def open_upstream(
    proxy: Proxy, protocol_factory: Callable[[], P]
) -> tuple[asyncio.Transport, P]:
    """Connect to ``proxy``'s upstream, in TLS when its ``ssl_context`` is set."""
    host, port = proxy.upstream_address
    loop = asyncio.get_running_loop()
    context = proxy.ssl_context
    if context is None:
        return await loop.create_connection(protocol_factory, host, port)  # type: ignore[return-value]
    name = server_name(proxy)
    try:
        return await loop.create_connection(  # type: ignore[return-value]
            protocol_factory,
            host,
            port,
            ssl=context,
            server_hostname=name,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )
    # a handshake timeout is ConnectionAbortedError on asyncio and uvloop, TimeoutError elsewhere
    except (ssl.SSLError, ssl.CertificateError, ConnectionAbortedError, TimeoutError) as exc:
        reason = _reason(exc)
        log.warning(
            "proxy %s: TLS to upstream %s (name %s) failed: %s",
            proxy.name,
            proxy.upstream,
            name,
            reason,
        )
        if isinstance(exc, OSError):
            raise
        raise OSError(reason) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no handshake within {HANDSHAKE_TIMEOUT:g}s"
    verify = getattr(exc, "verify_message", None)  # "Hostname mismatch, ...", "self-signed ..."
    if verify:
        return f"certificate verify failed: {verify}"
    return str(exc) or type(exc).__name__
