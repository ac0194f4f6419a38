"""The blast-radius policy: what an experiment file may call and touch. One function,
``check``, answers for ``aichaos experiments validate``, ``aichaos chaos`` and ``aichaos run``,
and it decides from the file alone: it imports no module the file names (chaoslib's own
validation imports them, so it runs only after this has approved them).

Allowed by default:
- the activities aichaos exports (``registry.py``), with arguments of the declared types;
- ``http`` providers to the stack's own endpoints (before the stack is known: loopback);
- service, proxy and namespace targets of the run's topology (``stack.json``) or named with
  ``--allow`` (Kubernetes namespaces, proxies of a real Toxiproxy).
Allowed only when the user says so: activities and controls of a Chaos Toolkit extension
(``--allow-extension chaosk8s``), ``process`` providers (``--allow-process``), ``http``
providers to other hosts (``--allow-http HOST``). Every provider in the file is checked,
wherever it sits: steady state, method, rollbacks, tolerances, dynamic configuration, nested
in an activity's arguments, and every control.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3
from chaoslib import substitute
from chaoslib.configuration import load_configuration
from chaoslib.exceptions import ActivityFailed
from pydantic import BaseModel, ConfigDict

from aichaos.loopback import is_loopback_name
from aichaos.rundir import InputError
from aichaos.stackfile import StackState

from . import registry
from .context import REPLICA_KINDS, TARGET, TOXIPROXY_URL, allowed_names, stack_state

K8S_MODULES = "chaosk8s"
# Never extensions: their functions run nested providers or reach the run's internals; an
# experiment calls them only through the activities the registry exports.
NOT_EXTENSIONS = ("aichaos", "chaoslib")
SERVICE_ARGS = ("service", "services")
PROXY_ARGS = ("proxy", "proxies")
STACK_URL_KEYS = (TARGET, TOXIPROXY_URL)
DEFAULT_PORTS = {"http": 80, "https": 443}


class Permissions(BaseModel):
    """What the user allowed beyond the default, from the command line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extensions: tuple[str, ...] = ()  # --allow-extension MODULE
    process: bool = False  # --allow-process
    http_hosts: tuple[str, ...] = ()  # --allow-http HOST or HOST:PORT
    targets: tuple[str, ...] = ()  # --allow NAME: namespaces, proxies of a real Toxiproxy

    def extension_of(self, module: str) -> str | None:
        if module.split(".")[0] in NOT_EXTENSIONS:
            return None
        for name in self.extensions:
            if module == name or module.startswith(name + "."):
                return name
        return None


def check(
    experiment: dict[str, Any],
    source: str | Path,
    permissions: Permissions,
    configuration: dict[str, Any] | None = None,
) -> None:
    """Raise ``InputError`` for the first provider or target the policy refuses.

    ``configuration`` is the run's (``aichaos chaos`` / ``aichaos run`` once the stack is
    up): with it, targets are checked against the stack's state file and URLs against its
    endpoints; without it (``validate``, planning), only what the file and flags decide."""
    scope = _Scope(experiment, permissions, configuration)
    for where, owner, provider, is_control in _providers(experiment):
        try:
            if is_control:
                scope.check_control(source, where, provider)
            else:
                scope.check_provider(source, where, provider)
        except InputError as exc:  # the line names the activity as well as its field
            name = owner.get("name")
            label = f" of {name!r}" if isinstance(name, str) and name else ""
            raise InputError(exc.file, exc.field + label, exc.expected, exc.got) from None


def check_endpoint_only(experiment: dict[str, Any], source: str | Path) -> None:
    """Against an endpoint aichaos did not start (``aichaos run --target``) an activity that
    needs an instance aichaos runs (a process to kill, the simulator's fault API) cannot act:
    ``InputError`` for the first, before anything starts."""
    for where, owner, provider, _ in _providers(experiment):
        activity = registry.lookup(str(provider.get("module", "")), str(provider.get("func", "")))
        if activity is not None and activity.needs_a_process:
            name = owner.get("name")
            label = f" of {name!r}" if isinstance(name, str) and name else ""
            expected = (f"an activity that acts through a proxy: with --target, {activity.func} "
                        "has no instance aichaos runs to act on")  # fmt: skip
            raise InputError(source, f"{where}.func{label}", expected, activity.func)


def _providers(experiment: dict[str, Any]) -> Iterator[tuple[str, dict, dict, bool]]:
    """``(path, owner, provider, is_control)`` for every provider anywhere in the file, walked
    without recursion so deep nesting cannot overflow the stack, and each node once so YAML
    aliases repeating one node cannot blow the walk up."""
    pending: list[tuple[str, Any, bool]] = [("", experiment, False)]
    seen: set[int] = set()
    while pending:
        path, node, in_controls = pending.pop()
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            provider = node.get("provider")
            if provider is not None:
                where = f"{path}.provider" if path else "provider"
                yield where, node, provider if isinstance(provider, dict) else {}, in_controls
            for key, value in reversed(list(node.items())):
                child = f"{path}.{key}" if path else str(key)
                pending.append((child, value, key == "controls"))
        elif isinstance(node, list):
            for i in reversed(range(len(node))):
                pending.append((f"{path}[{i}]", node[i], in_controls))


class _Scope:
    def __init__(
        self,
        experiment: dict[str, Any],
        permissions: Permissions,
        configuration: dict[str, Any] | None,
    ):
        self.permissions = permissions
        self.configuration = configuration
        self.mapping = _mapping(experiment, configuration)
        self.allowed = set(permissions.targets) | allowed_names(configuration)
        self.stack = _stack(configuration)

    # --- providers --------------------------------------------------------------------------

    def check_control(self, source: str | Path, field: str, provider: dict[str, Any]) -> None:
        module = str(provider.get("module", ""))
        if provider.get("type") == "python" and self.permissions.extension_of(module):
            return
        raise InputError(
            source, f"{field}.module", f"a control of an extension {_flag(module)}", module
        )

    def check_provider(self, source: str | Path, field: str, provider: dict[str, Any]) -> None:
        kind = provider.get("type")
        if kind == "python":
            self._python(source, field, provider)
        elif kind == "process":
            if not self.permissions.process:
                expected = "no process provider (it runs any command): allow with --allow-process"
                raise InputError(source, field, expected, provider.get("path"))
        elif kind == "http":
            self._http(source, field, provider)
        else:
            raise InputError(source, f"{field}.type", "python, process or http", kind)

    def _python(self, source: str | Path, field: str, provider: dict[str, Any]) -> None:
        module, func = str(provider.get("module", "")), str(provider.get("func", ""))
        arguments = provider.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise InputError(source, f"{field}.arguments", "an object", type(arguments).__name__)
        arguments = {key: self._resolve(value) for key, value in arguments.items()}
        activity = registry.lookup(module, func)
        if activity is not None:
            bad = activity.argument_problem(arguments)
            if bad is not None:
                raise InputError(source, f"{field}.arguments.{bad[0]}", bad[1])
            self._targets(source, field, arguments, activity)
            return
        if self.permissions.extension_of(module):
            if module.startswith(K8S_MODULES):
                self._namespace(source, field, arguments)
            return
        expected = f"an activity aichaos exports, or one of an extension {_flag(module)}"
        raise InputError(source, f"{field}.module", expected, f"{module}.{func}")

    def _resolve(self, value: Any) -> Any:
        """``${key}`` placeholders in a string or a list of strings; deeper values are left
        as they are (chaoslib's substitution recurses without bound)."""
        if isinstance(value, str):
            return substitute(value, self.mapping, {})
        if isinstance(value, list):
            return [substitute(v, self.mapping, {}) if isinstance(v, str) else v for v in value]
        return value

    def _http(self, source: str | Path, field: str, provider: dict[str, Any]) -> None:
        raw = provider.get("url")
        if not isinstance(raw, str):
            raise InputError(source, f"{field}.url", "a URL", raw)
        stack_url = any(raw.startswith("${" + key + "}") for key in STACK_URL_KEYS)
        if stack_url and self.configuration is None:
            return  # the stack's own endpoint, checked again once the run knows it
        url = substitute(raw, self.mapping, {})
        if not isinstance(url, str) or "${" in url:
            raise InputError(source, f"{field}.url", "a URL whose host the file names", raw)
        address = _address(url)
        if address is None:
            expected = "a plain http(s) URL with a host (no user info, spaces or backslashes)"
            raise InputError(source, f"{field}.url", expected, url)
        host, port = address
        named = {h.lower() for h in self.permissions.http_hosts}
        if host in named or f"{host}:{port}" in named:
            return
        endpoints = self._endpoints()
        if endpoints is None and is_loopback_name(host):
            return
        if endpoints is not None and (host, port) in endpoints:
            return
        where = "the stack's endpoints" if endpoints is not None else "loopback (the stack)"
        expected = f"a URL on {where}, or a host allowed with --allow-http {host}"
        raise InputError(source, f"{field}.url", expected, url)

    def _endpoints(self) -> set[tuple[str, int]] | None:
        """``(host, port)`` of every stack endpoint, or None while the stack is not known."""
        if self.configuration is None:
            return None
        urls = [self.configuration.get(key) for key in STACK_URL_KEYS]
        if self.stack is not None:
            for svc in self.stack.services.values():
                urls += [svc.url, svc.admin_url]
            urls += [proxy.url for proxy in self.stack.proxies.values()]
        return {a for a in (_address(u) for u in urls if isinstance(u, str) and u) if a}

    # --- targets ----------------------------------------------------------------------------

    def _namespace(self, source: str | Path, field: str, arguments: dict[str, Any]) -> None:
        ns = arguments.get("ns")
        if not isinstance(ns, str):
            raise InputError(source, f"{field}.arguments.ns", "an explicit namespace", ns)
        if ns not in self.allowed:
            names = ", ".join(sorted(self.allowed)) or "none"
            expected = f"a namespace allowed with --allow ({names})"
            raise InputError(source, f"{field}.arguments.ns", expected, ns)

    def _targets(
        self, source: str | Path, field: str, arguments: dict[str, Any], activity: registry.Activity
    ) -> None:
        """Service and proxy names against the stack; only once the run is known."""
        if self.configuration is None:
            return
        services, proxies = _stack_names(self.stack)
        endpoints = _endpoint_names(self.stack)
        for arg in SERVICE_ARGS:
            for name in _names(arguments.get(arg)):
                if name in self.allowed:
                    continue
                if self.stack is None:
                    raise InputError(source, f"{field}.arguments.{arg}", "a running stack", name)
                if name not in services:
                    listed = ", ".join(sorted(services))
                    expected = f"a replica of this run's topology ({listed})"
                    raise InputError(source, f"{field}.arguments.{arg}", expected, name)
                if activity.needs_a_process and name in endpoints:
                    expected = (
                        f"a replica aichaos runs ({activity.func} needs its process or "
                        f"the simulator; {name} is an endpoint aichaos did not start)"
                    )
                    raise InputError(source, f"{field}.arguments.{arg}", expected, name)
        for arg in PROXY_ARGS:
            for name in _names(arguments.get(arg)):
                if name not in self.allowed and name not in proxies:
                    listed = ", ".join(sorted(proxies)) or "none"
                    expected = f"a proxy of this run's topology ({listed}) or named with --allow"
                    raise InputError(source, f"{field}.arguments.{arg}", expected, name)


def _flag(module: str) -> str:
    """The flag that would allow ``module``: its top-level package; none for aichaos's and
    chaoslib's own modules, which only the registry's activities reach."""
    top = module.split(".")[0] or module
    if top in NOT_EXTENSIONS:
        return f"allowed with --allow-extension (none: {top} is not an extension)"
    return f"allowed with --allow-extension {top}"


def _mapping(experiment: dict[str, Any], configuration: dict[str, Any] | None) -> dict[str, Any]:
    """The values ``${key}`` placeholders take: the file's own configuration (static and
    environment entries) under the run's. Dynamic entries (a probe's output) and objects are
    left out: their value is only known when the run computes it, so a placeholder naming
    one stays unresolved and is refused where a host or a target must be read."""
    run = dict(configuration or {})
    declared = experiment.get("configuration")
    if not isinstance(declared, dict):
        return run
    try:
        loaded = load_configuration(dict(declared), dict(run))
    except Exception:  # an unset environment key: its placeholders stay unresolved
        return run
    plain = {k: v for k, v in loaded.items() if not isinstance(v, dict | list)}
    return {**plain, **run}


def _stack(configuration: dict[str, Any] | None) -> StackState | None:
    """The stack's state, or None when the run has none (or it cannot be read)."""
    try:
        return stack_state(configuration, required=False)
    except ActivityFailed:
        return None


def _stack_names(stack: StackState | None) -> tuple[set[str], set[str]]:
    services: set[str] = set()
    if stack is None:
        return services, set()
    for name, svc in stack.services.items():
        if svc.kind in REPLICA_KINDS:
            services |= {name, str(svc.service), svc.kind}
    return services, set(stack.proxies)


def _endpoint_names(stack: StackState | None) -> set[str]:
    """Names that reach only endpoints given by url (no instance aichaos runs)."""
    found: dict[str, bool] = {}  # name -> every instance it reaches is an endpoint
    for name, svc in (stack.services if stack is not None else {}).items():
        if svc.kind not in REPLICA_KINDS:
            continue
        for key in {name, str(svc.service), svc.kind}:
            found[key] = found.get(key, True) and svc.external
    return {name for name, only in found.items() if only}


def uses_stack_activities(experiment: dict[str, Any]) -> bool:
    """Whether any activity acts on a stack's services or proxies (``--target`` then puts a
    fault proxy in front of the target)."""
    return any(
        str(provider.get("module", "")) in registry.STACK_MODULES
        for _, _, provider, _ in _providers(experiment)
    )


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _address(url: str) -> tuple[str, int] | None:
    """The host and port a request to ``url`` really goes to, read as chaoslib's http provider
    (requests) prepares it, so a URL that parsers read differently (``http://a\\@b/``) is
    judged by where it would go; None for anything but a plain http(s) URL with a host."""
    if any(ch.isspace() or ch == "\\" for ch in url):
        return None
    try:
        parts = urllib3.util.parse_url(requests.Request("GET", url).prepare().url)
    except (requests.RequestException, ValueError, urllib3.exceptions.HTTPError):
        return None
    if parts.auth or parts.scheme not in DEFAULT_PORTS or not parts.host:
        return None
    host = parts.host.strip("[]").lower()
    return ("127.0.0.1" if host == "localhost" else host), parts.port or DEFAULT_PORTS[parts.scheme]
