"""Whether a host name, address or ``Host`` header means this machine only. One answer for
every part that must tell loopback from the world: the control APIs of the embedded services
(fixtures), the Locust master's bind address (scenarios) and the blast-radius policy's
``http`` providers (experiments); and a free loopback port for a service to listen on.
Depends on nothing but the standard library, so the
services under test may use it too."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection


def is_loopback_name(host: str) -> bool:
    """``localhost``, an address of 127.0.0.0/8 or ``::1`` (no port, no brackets). A wildcard
    bind address (``is_wildcard``) and any other name are not."""
    host = host.lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """A bind address meaning every interface (``0.0.0.0``, ``::``, ``*`` or empty): neither
    loopback nor an address a remote peer can dial."""
    return host in ("0.0.0.0", "::", "*", "")


def is_loopback_host(value: str) -> bool:
    """A ``Host`` header naming loopback: ``localhost``, ``127.0.0.1:8001``, ``[::1]:8001``."""
    host = value.strip()
    if host.startswith("["):
        inside, closed, rest = host[1:].partition("]")
        if not closed or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return False
        return is_loopback_name(inside)
    if host.count(":") == 1:  # name or IPv4 with a port; more colons: a bare IPv6 address
        host, _, port = host.partition(":")
        if not port.isdigit():
            return False
    return is_loopback_name(host)


def free_port(taken: Collection[int] = ()) -> int:
    """A TCP port free on 127.0.0.1 now, not one of ``taken``; ``OSError`` after 50 tries."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise OSError("no free port on 127.0.0.1")
