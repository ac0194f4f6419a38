"""How the rest of aichaos drives a Toxiproxy server: ours (``aichaos toxiproxy serve``) or a
real one (``--toxiproxy-url``), through ``toxiproxy-python`` and nothing else.

``toxiproxy-python`` keeps its server address in class attributes (``APIConsumer.host`` and
``.port``), so every call here sets them first; a ``ToxiproxyClient`` is therefore not for
use from several threads at once. Its 500 answers do not raise (it parses the error body as if
it were a proxy), so the calls that can fail with a 500 check the status themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy
from toxiproxy.toxic import Toxic

from aichaos.documents import read_document
from aichaos.errors import NotCompleted
from aichaos.rundir import InputError
from aichaos.waiting import wait_until

from .toxiproxy.spec import split_address
from .toxiproxy.toxics import TOXIC_TYPES  # Toxiproxy's, and the LLM toxics of ours

DEFAULT_URL = "http://127.0.0.1:8474"


class ToxiproxyError(NotCompleted):
    """A Toxiproxy call failed; the message is one line for the user."""


class TopologyError(ToxiproxyError):
    """A proxy declaration in a topology is invalid."""


@dataclass(frozen=True)
class ProxyDecl:
    """One proxy of a topology: clients connect to ``listen``, it forwards to ``upstream``."""

    name: str
    listen: str
    upstream: str
    enabled: bool = True
    upstream_tls: bool = False  # the embedded server's own field: TLS to an https upstream

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
        }
        if self.upstream_tls:
            body["upstream_tls"] = True
        return body


def _is_address(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        split_address(value)
    except ValueError:
        return False
    return True


def parse_topology(entries: Any, source: str = "topology") -> list[ProxyDecl]:
    """Proxy declarations (a list of ``{name, listen, upstream}``), checked field by field."""
    if not isinstance(entries, Sequence) or isinstance(entries, str | bytes):
        raise TopologyError(f"{source}: expected a list of proxies, got {type(entries).__name__}")
    decls: list[ProxyDecl] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{source}: proxies[{i}]"
        if not isinstance(entry, Mapping):
            raise TopologyError(f"{where}: expected an object with name, listen, upstream")
        name = entry.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise TopologyError(f"{where}.name: expected a non-empty name without '/'")
        if name in seen:
            raise TopologyError(f"{where}.name: expected a unique name, {name!r} is repeated")
        seen.add(name)
        for field in ("listen", "upstream"):
            if not _is_address(entry.get(field)):
                raise TopologyError(
                    f"{where}.{field}: expected 'host:port', got {entry.get(field)!r}"
                )
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise TopologyError(f"{where}.enabled: expected true or false, got {enabled!r}")
        decls.append(ProxyDecl(name, entry["listen"], entry["upstream"], enabled))
    return decls


def load_topology(path: str | Path) -> list[ProxyDecl]:
    """Proxy declarations from a JSON or YAML file: a list, or a mapping with ``proxies``."""
    path = Path(path)
    try:
        data = read_document(path)
    except InputError as exc:
        raise TopologyError(str(exc)) from None
    if isinstance(data, Mapping):
        if "proxies" not in data:
            raise TopologyError(f"{path}: expected a list of proxies or a 'proxies' key")
        data = data["proxies"]
    return parse_topology(data, str(path))


def _message(exc: Exception) -> str:
    """The ``error`` text of a Toxiproxy error body carried by a toxiproxy-python exception."""
    raw = exc.args[0] if exc.args else b""
    try:
        body = json.loads(raw)
        return str(body.get("error", raw)) if isinstance(body, dict) else str(body)
    except (TypeError, ValueError):
        return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


class ToxiproxyClient:
    def __init__(self, url: str = DEFAULT_URL, timeout: float = 10.0):
        parts = urlsplit(url if "//" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ToxiproxyError(f"toxiproxy url: expected http://host:port, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 8474
        self.timeout = timeout
        self.server = Toxiproxy()

    # --- plumbing -------------------------------------------------------------------------

    def _bind(self) -> None:
        APIConsumer.host = self.host
        APIConsumer.port = self.port

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        self._bind()
        try:
            yield
        except ProxyExists as exc:
            raise ToxiproxyError(f"{action}: {_message(exc)}") from None
        except NotFound as exc:
            raise ToxiproxyError(f"{action}: {_message(exc)}") from None
        except InvalidToxic as exc:
            raise ToxiproxyError(f"{action}: {_message(exc)}") from None
        except requests.RequestException as exc:
            raise ToxiproxyError(f"{action}: cannot reach toxiproxy at {self.url}: {exc}") from None

    @staticmethod
    def _check(response: requests.Response, action: str) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise ToxiproxyError(f"{action}: {detail} (HTTP {response.status_code})")
        return response.json() if response.content else None

    # --- server ---------------------------------------------------------------------------

    def version(self) -> str:
        with self._errors("version"):
            response = APIConsumer.get("/version", timeout=self.timeout)
        return str(self._check(response, "version")["version"])

    def wait_ready(self, timeout: float = 10.0, interval: float = 0.05) -> str:
        """Poll ``/version`` until it answers (at most ``timeout`` seconds); its version."""
        last = ""

        def version() -> str | None:
            nonlocal last
            try:
                return self.version()
            except ToxiproxyError as exc:
                last = str(exc)
                return None

        found = wait_until(version, timeout, interval)
        if found is not None:
            return found
        raise ToxiproxyError(f"toxiproxy at {self.url} not ready after {timeout:.0f}s: {last}")

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        with self._errors("reset"):
            self.server.reset()

    # --- proxies --------------------------------------------------------------------------

    def proxies(self) -> dict[str, Proxy]:
        with self._errors("list proxies"):
            return self.server.proxies()

    def proxy(self, name: str) -> Proxy:
        proxy = self.proxies().get(name)
        if proxy is None:
            raise ToxiproxyError(f"proxy {name!r}: proxy not found")
        return proxy

    def create(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> Proxy:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        with self._errors(f"create proxy {name!r}"):
            response = APIConsumer.post("/proxies", json=body, timeout=self.timeout)
        return Proxy(**self._check(response, f"create proxy {name!r}"))

    def populate(self, decls: Sequence[ProxyDecl]) -> dict[str, Proxy]:
        """Create the proxies of a topology in one ``/populate`` call: the server checks every
        declaration before it changes anything, and leaves alone those already as declared."""
        body = [d.to_json() for d in decls]
        with self._errors("populate"):
            response = APIConsumer.post("/populate", json=body, timeout=self.timeout)
        data = self._check(response, "populate")
        return {p["name"]: Proxy(**p) for p in data.get("proxies") or []}

    def destroy(self, name: str) -> None:
        with self._errors(f"delete proxy {name!r}"):
            self.proxy(name).destroy()

    def disable(self, name: str) -> None:
        """Stop listening and drop every open connection (an outage of that edge)."""
        with self._errors(f"disable proxy {name!r}"):
            self.proxy(name).disable()

    def enable(self, name: str) -> None:
        with self._errors(f"enable proxy {name!r}"):
            self.proxy(name).enable()

    @contextmanager
    def outage(self, name: str) -> Iterator[Proxy]:
        """The proxy is down inside the block and back up after it, whatever happens."""
        self.disable(name)
        try:
            yield self.proxy(name)
        finally:
            self.enable(name)

    # --- toxics ---------------------------------------------------------------------------

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Toxic:
        if type not in TOXIC_TYPES:
            raise ToxiproxyError(f"toxic type: expected one of {', '.join(TOXIC_TYPES)}")
        toxic_name = name or f"{type}_{stream}"
        with self._errors(f"add toxic {toxic_name!r} to {proxy!r}"):
            self.proxy(proxy).add_toxic(
                type=type,
                stream=stream,
                toxicity=toxicity,
                attributes=dict(attributes or {}),
                name=toxic_name,
            )
        return self.toxic(proxy, toxic_name)

    def toxics(self, proxy: str) -> dict[str, Toxic]:
        with self._errors(f"list toxics of {proxy!r}"):
            return self.proxy(proxy).toxics()

    def toxic(self, proxy: str, name: str) -> Toxic:
        found = self.toxics(proxy).get(name)
        if found is None:
            raise ToxiproxyError(f"toxic {name!r} of {proxy!r}: toxic not found")
        return found

    def remove_toxic(self, proxy: str, name: str) -> None:
        with self._errors(f"remove toxic {name!r} from {proxy!r}"):
            self.proxy(proxy).destroy_toxic(name)

    @contextmanager
    def toxic_applied(
        self,
        proxy: str,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, int] | None = None,
        name: str | None = None,
    ) -> Iterator[Toxic]:
        """The toxic is on inside the block and removed after it, whatever happens."""
        toxic = self.add_toxic(
            proxy, type, stream=stream, toxicity=toxicity, attributes=attributes, name=name
        )
        try:
            yield toxic
        finally:
            self.remove_toxic(proxy, toxic.name)


def start_topology(
    entries: Any, url: str = DEFAULT_URL, source: str = "topology", ready_timeout: float = 10.0
) -> dict[str, Proxy]:
    """Create the proxies a topology declares (a list of ``{name, listen, upstream}``, or a
    file holding one), once the server at ``url`` answers."""
    if isinstance(entries, str | Path):
        decls = load_topology(entries)
    else:
        decls = parse_topology(entries, source)
    client = ToxiproxyClient(url)
    client.wait_ready(ready_timeout)
    return client.populate(decls)
