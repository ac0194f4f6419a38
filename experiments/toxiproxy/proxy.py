"""A proxy: one listening socket, its open connections and its toxics."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from .connection import Connection, Side
from .errors import TOXIC_EXISTS, TOXIC_NOT_FOUND, ApiError, bad_body
from .spec import TLS_FIELDS, SpecError, join_address, split_address
from .toxics import DIRECTIONS, Toxic, parse_toxicity, set_attributes
from .upstream import client_context

BACKLOG = 1024


class Proxy:
    def __init__(
        self,
        name: str,
        listen: str,
        upstream: str,
        upstream_tls: bool = False,
        upstream_server_name: str | None = None,
        upstream_ca_file: str | None = None,
        upstream_verify: bool = True,
    ):
        self.name = name
        self.listen = listen
        self.upstream = upstream
        # TLS to the upstream (spec.TLS_FIELDS); set_upstream changes them
        self.upstream_tls = upstream_tls
        self.upstream_server_name = upstream_server_name
        self.upstream_ca_file = upstream_ca_file
        self.upstream_verify = upstream_verify
        self.ssl_context: ssl.SSLContext | None = _context(self.tls_settings())
        self.enabled = False
        self.toxics: dict[str, list[Toxic]] = {d: [] for d in DIRECTIONS}
        self.connections: set[Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        # [bytes received, bytes sent] per direction, for /metrics; plain ints on the hot path
        self.stats: dict[str, list[int]] = {d: [0, 0] for d in DIRECTIONS}
        self.accepted = 0

    @property
    def upstream_address(self) -> tuple[str, int]:
        host, port = split_address(self.upstream)
        return host or "127.0.0.1", port

    def tls_settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TLS_FIELDS}

    def set_upstream(self, upstream: str, **tls: Any) -> None:
        """A new upstream and TLS settings (``spec.TLS_FIELDS``; absent ones keep theirs).

        The client context is rebuilt when the TLS settings changed; when it cannot be, the
        ApiError is raised before anything changes. Open connections keep their upstream:
        callers restart the proxy.
        """
        settings = {**self.tls_settings(), **tls}
        context = self.ssl_context
        if settings != self.tls_settings():
            context = _context(settings)
        self.upstream = upstream
        for key, value in settings.items():
            setattr(self, key, value)
        self.ssl_context = context

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxic_list()],
        }
        if self.upstream_tls:  # Toxiproxy's own fields only, unless the proxy speaks TLS
            data.update(self.tls_settings())
        return data

    # --- listening ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``listen``; the bound address (a port 0 made real) is written back."""
        if self.enabled:
            return
        loop = asyncio.get_running_loop()
        host, port = split_address(self.listen)
        try:
            address = await _resolve(loop, host or "0.0.0.0", port)
            self.server = await loop.create_server(
                lambda: Side(self),
                address,
                port,
                reuse_address=True,
                backlog=BACKLOG,
            )
        except OSError as exc:
            raise ApiError(f"listen tcp {self.listen}: {exc.strerror or exc}", 500) from None
        bound = self.server.sockets[0].getsockname()
        self.listen = join_address(bound[0], bound[1])
        self.enabled = True

    def stop(self) -> None:
        """Close the listener and every open connection."""
        if not self.enabled:
            return
        self.enabled = False
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections):
            conn.close()

    # --- toxics ---------------------------------------------------------------------------

    def toxic_list(self) -> list[Toxic]:
        return [t for d in DIRECTIONS for t in self.toxics[d]]

    def find_toxic(self, name: str) -> Toxic:
        for toxic in self.toxic_list():
            if toxic.name == name:
                return toxic
        raise TOXIC_NOT_FOUND

    def llm_toxics(self) -> list[Toxic]:
        return [t for t in self.toxics["downstream"] if t.llm is not None]

    @property
    def reads_http(self) -> bool:
        """Whether its connections go through the HTTP layer (``http_tap``): for LLM toxics,
        and for TLS upstreams, whose requests must name the upstream's host."""
        return self.upstream_tls or bool(self.llm_toxics())

    def add_toxic(self, toxic: Toxic) -> None:
        if any(t.name == toxic.name for t in self.toxic_list()):
            raise TOXIC_EXISTS
        self.toxics[toxic.stream].append(toxic)
        for conn in list(self.connections):  # toxics apply to open connections too
            if toxic.llm is not None:
                conn.attach_tap(at_start=False)
                continue
            link = conn.links.get(toxic.stream)
            if link is not None and not link.done:
                link.add_toxic(toxic)

    def update_toxic(self, name: str, body: Any) -> Toxic:
        """Merge ``attributes`` and ``toxicity``; open connections see the new values."""
        toxic = self.find_toxic(name)
        if not isinstance(body, dict):
            raise bad_body("expected a JSON object")
        toxicity = toxic.toxicity
        if body.get("toxicity") is not None:
            toxicity = parse_toxicity(body["toxicity"])
        set_attributes(toxic, body.get("attributes"))
        toxic.toxicity = toxicity
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.find_toxic(name)
        self.toxics[toxic.stream].remove(toxic)
        for conn in list(self.connections):
            if toxic.llm is not None:
                conn.toxic_removed(name, last=not self.reads_http)
                continue
            link = conn.links.get(toxic.stream)
            if link is not None:
                link.remove_toxic(name)

    def remove_all_toxics(self) -> None:
        for toxic in self.toxic_list():
            self.remove_toxic(toxic.name)


def _context(settings: dict[str, Any]) -> ssl.SSLContext | None:
    """The client context for these TLS settings; a CA file that stopped loading since the
    declaration was checked is a 400 naming the field."""
    try:
        return client_context(
            settings["upstream_tls"], settings["upstream_ca_file"], settings["upstream_verify"]
        )
    except (OSError, ValueError) as exc:
        raise SpecError(
            "upstream_ca_file",
            f"the path of a readable PEM file of CA certificates ({exc})",
            settings["upstream_ca_file"],
        ).api_error() from None


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """One address for ``host``: binding every address of a name would give several ports."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        pass
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, like "localhost"
    return infos[0][4][0]
