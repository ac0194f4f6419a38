"""Validation of proxy declarations: API request bodies, ``/populate`` and ``--config`` files.

One ``SpecError`` serves two audiences: the API turns it into Toxiproxy's error messages
(``missing required field: name at proxy 2``), the CLI into one line naming the file, the
field and what was expected.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_body, missing_field

DEFAULT_LISTEN = "127.0.0.1:0"  # no listen address: a free port, on loopback only
_MISSING = object()
# Fields beyond Toxiproxy's own: TLS from the proxy to its upstream (it still listens in TCP).
TLS_FIELDS = ("upstream_tls", "upstream_server_name", "upstream_ca_file", "upstream_verify")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


class SpecError(Exception):
    def __init__(
        self, field: str | None, expected: str, got: Any = _MISSING, index: int | None = None
    ):
        self.field = field
        self.expected = expected
        self.got = got
        self.index = index  # 1-based position in a populate array
        super().__init__(self.line())

    @property
    def missing(self) -> bool:
        return self.got is _MISSING

    def api_error(self) -> ApiError:
        where = f" at proxy {self.index}" if self.index is not None else ""
        if self.missing and self.field in ("name", "upstream"):
            return missing_field(f"{self.field}{where}")
        return bad_body(self.line())

    def line(self) -> str:
        parts = []
        if self.index is not None:
            parts.append(f"proxy {self.index}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        got = " (missing)" if self.missing else f", got {_short(self.got)}"
        parts.append(f"expected {self.expected}{got}")
        return ": ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ProxySpec:
    name: str
    upstream: str
    listen: str = DEFAULT_LISTEN
    enabled: bool = True
    upstream_tls: bool = False  # speak TLS to the upstream
    upstream_server_name: str | None = None  # SNI and the checked name; None: the upstream host
    upstream_ca_file: str | None = None  # PEM CA certificates; None: the system's trust store
    upstream_verify: bool = True  # False: no certificate verification

    def tls_settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in TLS_FIELDS}


def split_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; ValueError when it is neither."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(value)
    port = int(port_text)
    if port > 65535:
        raise ValueError(value)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    elif ":" in host:
        raise ValueError(value)
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_address(value: Any, field: str, index: int | None, upstream: bool) -> str:
    expected = "an address 'host:port'" + (" with a port from 1 to 65535" if upstream else "")
    if not isinstance(value, str):
        raise SpecError(field, expected, value, index)
    try:
        _, port = split_address(value)
    except ValueError:
        raise SpecError(field, expected, value, index) from None
    if upstream and port == 0:
        raise SpecError(field, expected, value, index)
    return value


def _check_name(value: Any, index: int | None) -> str:
    if value is None or value == "":
        raise SpecError("name", "a non-empty string", index=index)
    if not isinstance(value, str) or "/" in value:
        raise SpecError("name", "a non-empty string without '/'", value, index)
    return value


def _check_server_name(value: Any, index: int | None) -> str:
    expected = "a host name or IP address for TLS (SNI and certificate check)"
    if not isinstance(value, str) or len(value) > 253:
        raise SpecError("upstream_server_name", expected, value, index)
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(value):
        raise SpecError("upstream_server_name", expected, value, index)
    return value


def _check_ca_file(value: Any, index: int | None) -> str:
    """A PEM file of CA certificates that loads now; the server reads it again when used."""
    expected = "the path of a readable PEM file of CA certificates"
    if not isinstance(value, str):
        raise SpecError("upstream_ca_file", expected, value, index)
    try:
        ssl.create_default_context(cafile=value)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        if isinstance(exc, ssl.SSLError) and exc.reason:
            reason = exc.reason.lower().replace("_", " ")  # NO_CERTIFICATE_OR_CRL_FOUND
        else:
            reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError("upstream_ca_file", f"{expected} ({reason})", value, index) from None
    return value


def _parse_tls_fields(body: dict[str, Any], index: int | None) -> dict[str, Any]:
    """The TLS fields present in ``body``; an empty server name or CA file is the default."""
    fields: dict[str, Any] = {}
    for key in ("upstream_tls", "upstream_verify"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise SpecError(key, "true or false", value, index)
            fields[key] = value
    name = body.get("upstream_server_name")
    if name is not None:
        fields["upstream_server_name"] = _check_server_name(name, index) if name != "" else None
    ca_file = body.get("upstream_ca_file")
    if ca_file is not None:
        fields["upstream_ca_file"] = _check_ca_file(ca_file, index) if ca_file != "" else None
    return fields


def parse_fields(body: Any, index: int | None = None) -> dict[str, Any]:
    """The proxy fields present in ``body``, each checked; absent ones are left out."""
    if not isinstance(body, dict):
        raise SpecError(None, "a JSON object", body, index)
    fields: dict[str, Any] = {}
    if body.get("name") is not None:
        fields["name"] = _check_name(body["name"], index)
    for key in ("listen", "upstream"):
        value = body.get(key)
        if value is not None and value != "":
            fields[key] = check_address(value, key, index, upstream=key == "upstream")
    enabled = body.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise SpecError("enabled", "true or false", enabled, index)
        fields["enabled"] = enabled
    fields.update(_parse_tls_fields(body, index))
    return fields


def parse_spec(body: Any, index: int | None = None) -> ProxySpec:
    fields = parse_fields(body, index)
    if "name" not in fields:
        raise SpecError("name", "a non-empty string", index=index)
    if "upstream" not in fields:
        raise SpecError("upstream", "an address 'host:port'", index=index)
    return ProxySpec(**fields)


def parse_spec_list(body: Any) -> list[ProxySpec]:
    """A populate array; every entry is checked before the caller changes anything."""
    if not isinstance(body, list):
        raise SpecError(None, "a JSON array of proxies", body)
    specs = [parse_spec(entry, i) for i, entry in enumerate(body, start=1)]
    seen: set[str] = set()
    for i, spec in enumerate(specs, start=1):
        if spec.name in seen:
            raise SpecError("name", "a name not used earlier in the array", spec.name, i)
        seen.add(spec.name)
    return specs
