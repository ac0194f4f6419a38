"""Topology files: which services make up a stack, how to start them, how they are wired.

A topology is YAML (see ``fixtures/topology/default.yaml``)::

    name: default
    services:
      - name: llm                 # unique; replicas > 1 become llm-1 .. llm-N
        kind: llm                 # free text, except ``proxy``: the Toxiproxy server
        command: ["{python}", "-m", "aichaos.fixtures.llm_sim", "serve", "--port", "{port}"]
        port: 0                   # 0: a free port, chosen once and kept across restarts
        ready: /health            # ready when GET answers 200
        ready_timeout: 60         # seconds from start to ready
        restart_delay: 5          # seconds between an exit and the restart
        depends_on: [retriever]   # started once these are ready
        replicas: 2
        env: {KEY: value}
        engine: {max_model_len: 2048, max_num_seqs: 64, kv_cache_gib: 1}  # a real engine's size
      - name: provider            # an endpoint aichaos does not run: never started or killed
        kind: fallback
        url: https://api.example.com   # a proxy in front of it speaks TLS to it
    proxies:
      - {name: llm, listen: "127.0.0.1:0", upstream: llm-1}
    prometheus: {scrape_interval: 1s, targets: [llm]}

Placeholders in ``command`` and ``env`` values: ``{python}``, ``{port}``, ``{admin_port}``,
``{run_dir}``, ``{name}`` (the instance name), ``{replica}`` (1..N), ``{url:NAME}`` and
``{proxy:NAME}``; ``{{`` and ``}}`` are literal braces. ``{admin_port}`` gives the instance a
second free loopback port for its control API (the simulator's ``--admin-port``); the stack
records it as ``admin_url`` and no proxy ever forwards it (a proxy's upstream is the
serving ``port``). A service whose command names a proxy starts after the
proxies exist, so it depends on the ``kind: proxy`` service without saying so.

Every problem is reported as one ``TopologyError`` line: ``FILE: field.path: expected ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

import aichaos.fixtures
from aichaos import units
from aichaos.documents import read_document
from aichaos.errors import BadInput
from aichaos.rundir import InputError
from aichaos.validation import describe

PROXY_KIND = "proxy"
DEFAULT_TOPOLOGY = Path(aichaos.fixtures.__file__).parent / "topology" / "default.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ADMIN_PORT = "admin_port"
SIMPLE_PLACEHOLDERS = ("python", "port", ADMIN_PORT, "run_dir", "name", "replica")
REFERENCE_PLACEHOLDERS = ("url", "proxy")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class TopologyError(BadInput):
    """A topology file is unreadable or invalid; ``str()`` is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineSpec(_Strict):
    """How a real engine replica is sized when ``--backend vllm`` puts one in this service's
    place (``--max-model-len``, ``--max-num-seqs``, and its KV cache: ``kv_blocks`` blocks
    (``--num-gpu-blocks-override``) when given, else ``kv_cache_gib`` GiB
    (``VLLM_CPU_KVCACHE_SPACE`` on the CPU build), with vLLM's prefix caching unless
    ``prefix_caching`` is false. The simulator ignores it."""

    max_model_len: int = Field(2048, ge=16, le=1_048_576)
    max_num_seqs: int = Field(64, ge=1, le=4096)
    kv_blocks: int | None = Field(None, ge=1)
    kv_cache_gib: float = Field(1.0, gt=0, le=1024)
    prefix_caching: bool = True  # off: requests sharing a prompt prefix no longer share blocks


class ServiceSpec(_Strict):
    name: Name
    kind: str = "service"
    command: list[Annotated[str, Field(min_length=1)]] = []
    # an endpoint aichaos does not run (a hosted provider, the user's own server): no command,
    # never started, restarted or killed; a proxy may stand in front of it (TLS for https)
    url: str | None = None
    port: int = Field(0, ge=0, le=65535)
    ready: str = "/health"
    ready_timeout: float = Field(60.0, gt=0, le=3600)
    restart_delay: float = Field(1.0, ge=0, le=3600)
    depends_on: list[Name] = []
    replicas: int = Field(1, ge=1, le=64)
    env: dict[str, str] = {}
    engine: EngineSpec = EngineSpec()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an http:// or https:// URL with a host, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"a URL with a port from 1 to 65535, got {value!r}") from None
        return value.rstrip("/")

    @model_validator(mode="after")
    def _command_or_url(self) -> ServiceSpec:
        if (self.url is None) == (not self.command):
            where = "both" if self.url is not None else "neither"
            raise ValueError(f"a command to run or the url of an endpoint, not {where}")
        if self.url is not None and (self.replicas != 1 or self.port or self.env):
            raise ValueError("no replicas, port or env for an endpoint given by url")
        return self

    @property
    def external(self) -> bool:
        return self.url is not None

    @property
    def upstream_address(self) -> tuple[str, int, bool]:
        """``(host, port, tls)`` of an endpoint given by url."""
        assert self.url is not None
        parts = urlsplit(self.url)
        tls = parts.scheme == "https"
        return parts.hostname or "", parts.port or (443 if tls else 80), tls

    @field_validator("ready")
    @classmethod
    def _ready_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"a URL path starting with '/', got {value!r}")
        return value

    @property
    def has_admin_port(self) -> bool:
        """Whether its command or env takes ``{admin_port}``: a control API of its own."""
        texts = [*self.command, *self.env.values()]
        return any(key == ADMIN_PORT for text in texts for key, _ in placeholders(text))


class ProxySpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[^/\s]+$")]
    listen: str = "127.0.0.1:0"
    upstream: Name
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"an address 'host:port' (port 0: a free one), got {value!r}")
        return value


class PrometheusSpec(_Strict):
    scrape_interval: str = "5s"
    targets: list[Name] = []

    @field_validator("scrape_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> str:
        seconds = units.parse_duration(value)  # ValueError: the one line names the field
        if seconds <= 0:
            raise ValueError(f"{units.EXPECTED}, above zero")
        return units.prometheus_duration(seconds)


class Topology(_Strict):
    name: str = "stack"
    services: list[ServiceSpec] = Field(min_length=1)
    proxies: list[ProxySpec] = []
    prometheus: PrometheusSpec | None = None

    def service(self, name: str) -> ServiceSpec:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    @property
    def proxy_service(self) -> ServiceSpec | None:
        return next((s for s in self.services if s.kind == PROXY_KIND), None)

    def instances(self) -> list[Instance]:
        """Every process to run, replicas expanded, in an order that starts dependencies
        first (the file's order where it does not matter)."""
        names = _instance_names(self)
        by_name: dict[str, Instance] = {}
        for service in self.services:
            deps: set[str] = set()
            for dep in _service_dependencies(self, service):
                deps.update(names.get(dep, [dep]))
            for replica, instance_name in enumerate(names[service.name], start=1):
                by_name[instance_name] = Instance(instance_name, service, replica, frozenset(deps))
        ordered: list[Instance] = []
        placed: set[str] = set()
        remaining = list(by_name.values())
        for _ in range(len(remaining) + 1):  # validation rejected cycles: this terminates
            ready = [i for i in remaining if i.depends_on <= placed]
            if not ready:
                break
            ordered.extend(ready)
            placed.update(i.name for i in ready)
            remaining = [i for i in remaining if i.name not in placed]
        return ordered


@dataclass(frozen=True)
class Instance:
    """One process of a service (the service itself when it has one replica)."""

    name: str
    service: ServiceSpec
    replica: int
    depends_on: frozenset[str] = field(default_factory=frozenset)

    @property
    def kind(self) -> str:
        return self.service.kind


# --- placeholders ----------------------------------------------------------------------------


def placeholders(text: str) -> Iterator[tuple[str, str | None]]:
    """``(key, argument)`` for each ``{key}`` / ``{key:argument}`` in ``text``; ValueError for a
    lone brace."""
    for match in _PLACEHOLDER.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ValueError(f"a placeholder such as {{port}} or a doubled brace, got {text!r}")
        key, sep, arg = match.group(1).partition(":")
        yield key, (arg if sep else None)


def substitute(text: str, values: dict[str, str], refs: dict[str, dict[str, str]]) -> str:
    """``text`` with its placeholders filled in from ``values`` and ``refs[key][arg]``."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        key, sep, arg = (match.group(1) or "").partition(":")
        return refs[key][arg] if sep else values[key]

    return _PLACEHOLDER.sub(replace, text)


def _references(service: ServiceSpec, key: str) -> set[str]:
    found: set[str] = set()
    for text in [*service.command, *service.env.values()]:
        for name, arg in placeholders(text):
            if name == key and arg is not None:
                found.add(arg)
    return found


# --- loading and the checks pydantic cannot make ---------------------------------------------


def load_topology(path: str | Path) -> Topology:
    """The topology in ``path``, fully checked; ``TopologyError`` (one line) otherwise."""
    path = Path(path)
    try:
        data = read_document(path)
    except InputError as exc:
        raise TopologyError(str(exc)) from None
    return parse_topology(data, str(path))


def parse_topology(data: Any, source: str = "topology") -> Topology:
    if not isinstance(data, dict):
        raise TopologyError(
            f"{source}: expected a mapping with 'services' (and optionally 'proxies', "
            f"'prometheus'), got {_kind_of(data)}"
        )
    try:
        topology = Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(f"{source}: {describe(exc, Topology)}") from None
    problem = _check(topology)
    if problem:
        raise TopologyError(f"{source}: {problem}")
    return topology


def _kind_of(value: Any) -> str:
    if value is None:
        return "an empty file"
    return {list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _instance_names(topology: Topology) -> dict[str, list[str]]:
    return {
        s.name: [s.name] if s.replicas == 1 else [f"{s.name}-{i}" for i in range(1, s.replicas + 1)]
        for s in topology.services
    }


def _service_dependencies(topology: Topology, service: ServiceSpec) -> list[str]:
    """Declared dependencies plus the proxy server for a service that names a proxy."""
    deps = list(service.depends_on)
    proxy_service = topology.proxy_service
    if (
        proxy_service is not None
        and proxy_service.name != service.name
        and _references(service, "proxy")
        and proxy_service.name not in deps
    ):
        deps.append(proxy_service.name)
    return deps


def _check(topology: Topology) -> str | None:
    names = _instance_names(topology)
    owner: dict[str, str] = {}  # every service and instance name -> its service
    for i, service in enumerate(topology.services):
        for name in {service.name, *names[service.name]}:
            if name in owner and owner[name] != service.name:
                return (
                    f"services[{i}].name: expected a unique name, {name!r} is already "
                    f"used by service {owner[name]!r}"
                )
            if name in owner:
                return f"services[{i}].name: expected a unique name, {name!r} is repeated"
            owner[name] = service.name
    single = {n for s in topology.services for n in names[s.name] if len(names[s.name]) == 1}
    single |= {n for s in topology.services if s.replicas > 1 for n in names[s.name]}

    proxy_services = [i for i, s in enumerate(topology.services) if s.kind == PROXY_KIND]
    if len(proxy_services) > 1:
        return f"services[{proxy_services[1]}].kind: expected one service of kind 'proxy'"
    if proxy_services and topology.services[proxy_services[0]].replicas != 1:
        return f"services[{proxy_services[0]}].replicas: expected 1 for the proxy server"
    if topology.proxies and not proxy_services:
        return "proxies: expected a service of kind 'proxy' (the Toxiproxy server) to serve them"
    proxy_names: set[str] = set()
    for i, proxy in enumerate(topology.proxies):
        if proxy.name in proxy_names:
            return f"proxies[{i}].name: expected a unique name, {proxy.name!r} is repeated"
        proxy_names.add(proxy.name)
        problem = _single_instance(proxy.upstream, owner, single, topology)
        if problem:
            return f"proxies[{i}].upstream: {problem}"

    fixed_ports: dict[int, str] = {}
    for i, service in enumerate(topology.services):
        where = f"services[{i}]"
        if service.port and service.replicas > 1:
            return f"{where}.port: expected 0 when replicas > 1 (each replica needs its own port)"
        if service.port:
            if service.port in fixed_ports:
                return (
                    f"{where}.port: expected a port no other service uses, {service.port} is "
                    f"also {fixed_ports[service.port]!r}'s"
                )
            fixed_ports[service.port] = service.name
        for j, dep in enumerate(service.depends_on):
            if dep not in owner:
                return f"{where}.depends_on[{j}]: expected a service of this topology, got {dep!r}"
            if owner[dep] == service.name:
                return f"{where}.depends_on[{j}]: expected another service, got itself"
        texts = [(f"command[{j}]", t) for j, t in enumerate(service.command)]
        texts += [(f"env.{k}", v) for k, v in service.env.items()]
        for field_name, text in texts:
            problem = _check_placeholders(text, owner, single, proxy_names, topology)
            if problem:
                return f"{where}.{field_name}: {problem}"

    if topology.prometheus is not None:
        for j, target in enumerate(topology.prometheus.targets):
            if target not in owner:
                return (
                    f"prometheus.targets[{j}]: expected a service of this topology, got {target!r}"
                )
    return _check_cycles(topology)


def _single_instance(
    name: str, owner: dict[str, str], single: set[str], topology: Topology
) -> str | None:
    if name not in owner:
        return f"expected a service of this topology, got {name!r}"
    if name not in single:
        count = topology.service(name).replicas
        return (
            f"expected one instance, got {name!r} which has {count} replicas "
            f"(name one: {name}-1 .. {name}-{count})"
        )
    return None


def _check_placeholders(
    text: str, owner: dict[str, str], single: set[str], proxies: set[str], topology: Topology
) -> str | None:
    try:
        found = list(placeholders(text))
    except ValueError as exc:
        return f"expected {exc}"
    for key, arg in found:
        if key in SIMPLE_PLACEHOLDERS and arg is None:
            continue
        if key == "url" and arg:
            problem = _single_instance(arg, owner, single, topology)
            if problem:
                return f"{{url:{arg}}}: {problem}"
            continue
        if key == "proxy" and arg:
            if arg not in proxies:
                return f"{{proxy:{arg}}}: expected a proxy declared under 'proxies', got {arg!r}"
            continue
        known = ", ".join(
            [f"{{{k}}}" for k in SIMPLE_PLACEHOLDERS] + ["{url:NAME}", "{proxy:NAME}"]
        )
        shown = key if arg is None else f"{key}:{arg}"
        return f"expected a placeholder among {known}, got {{{shown}}}"
    return None


def _check_cycles(topology: Topology) -> str | None:
    index = {s.name: i for i, s in enumerate(topology.services)}
    names = _instance_names(topology)
    owner = {n: s for s, ns in names.items() for n in ns} | {s: s for s in names}
    graph = {
        s.name: [owner[d] for d in _service_dependencies(topology, s)] for s in topology.services
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if state.get(nxt) is None:
                cycle = visit(nxt, [*path, nxt])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for service in topology.services:
        if state.get(service.name) is None:
            cycle = visit(service.name, [service.name])
            if cycle:
                return (
                    f"services[{index[cycle[0]]}].depends_on: expected no dependency cycle, "
                    f"got {' -> '.join(cycle)}"
                )
    return None
