"""The URLs a user names on the command line (``--target``, ``--prometheus-url``): one check
of their shape and one of whether anything answers there, for every command."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from aichaos.rundir import InputError


def check_url(flag: str, url: str) -> str:
    """``url`` without its trailing slash; ``InputError`` unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("command line", flag, "an http(s)://host[:port] URL", url)
    return url.rstrip("/")


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """None if something answers HTTP at ``url``, else why not."""
    try:
        httpx.get(f"{url}/v1/models", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
