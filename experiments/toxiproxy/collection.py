"""Every proxy of the server, and the operations the API performs on them."""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import PROXY_EXISTS, PROXY_NOT_FOUND
from .proxy import Proxy
from .spec import ProxySpec, SpecError, parse_fields, parse_spec, parse_spec_list
from .toxics import Toxic, parse_new_toxic


class ProxyCollection:
    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        # Changes that bind or close sockets await; one at a time keeps them consistent.
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    async def create(self, body: Any) -> Proxy:
        try:
            spec = parse_spec(body)
        except SpecError as exc:
            raise exc.api_error() from None
        async with self.lock:
            if spec.name in self.proxies:
                raise PROXY_EXISTS
            return await self._add(spec)

    async def _add(self, spec: ProxySpec) -> Proxy:
        proxy = Proxy(spec.name, spec.listen, spec.upstream, **spec.tls_settings())
        if spec.enabled:
            await proxy.start()  # a failed bind raises before the proxy is registered
        self.proxies[spec.name] = proxy
        return proxy

    async def update(self, name: str, body: Any) -> Proxy:
        """Partial update: absent fields keep their values; a new address or new TLS
        settings restart it."""
        try:
            fields = parse_fields(body)
        except SpecError as exc:
            raise exc.api_error() from None
        async with self.lock:
            proxy = self.get(name)
            listen = fields.get("listen", proxy.listen)
            upstream = fields.get("upstream", proxy.upstream)
            tls = {key: fields.get(key, value) for key, value in proxy.tls_settings().items()}
            enabled = fields.get("enabled", proxy.enabled)
            if listen != proxy.listen or upstream != proxy.upstream or tls != proxy.tls_settings():
                proxy.set_upstream(upstream, **tls)  # raises before anything changed
                proxy.stop()
                proxy.listen = listen
            if enabled:
                await proxy.start()
            else:
                proxy.stop()
            return proxy

    async def delete(self, name: str) -> None:
        async with self.lock:
            proxy = self.get(name)
            proxy.stop()
            proxy.remove_all_toxics()
            del self.proxies[name]

    async def populate(self, body: Any) -> list[Proxy]:
        """Create or replace the proxies in ``body``; one that matches is left alone."""
        try:
            specs = parse_spec_list(body)
        except SpecError as exc:
            raise exc.api_error() from None
        return await self.apply(specs)

    async def apply(self, specs: list[ProxySpec]) -> list[Proxy]:
        result = []
        async with self.lock:
            for spec in specs:
                existing = self.proxies.get(spec.name)
                if (
                    existing is not None
                    and existing.listen == spec.listen
                    and existing.upstream == spec.upstream
                    and existing.tls_settings() == spec.tls_settings()
                ):
                    result.append(existing)
                    continue
                if existing is not None:
                    existing.stop()
                    existing.remove_all_toxics()
                    del self.proxies[spec.name]
                result.append(await self._add(spec))
        return result

    async def reset(self) -> None:
        """Every proxy enabled again and every toxic removed; the proxies stay."""
        async with self.lock:
            for proxy in self.proxies.values():
                await proxy.start()
                proxy.remove_all_toxics()

    async def shutdown(self) -> None:
        async with self.lock:
            for proxy in self.proxies.values():
                proxy.stop()
                proxy.remove_all_toxics()

    def add_toxic(self, name: str, body: Any) -> Toxic:
        proxy = self.get(name)
        toxic = parse_new_toxic(body)
        proxy.add_toxic(toxic)
        return toxic
