"""Start and stop the API server and its proxies on the running event loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from aichaos.loopback import is_loopback_name

from .api import build_app
from .collection import ProxyCollection
from .errors import ApiError
from .spec import ProxySpec, join_address

log = logging.getLogger("aichaos.toxiproxy")


class ToxiproxyServer:
    """The API on ``host:port`` (0: a free port) and the proxies it manages."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8474, metrics: bool = False):
        self.host = host
        self.port = port
        self.collection = ProxyCollection()
        self.runner = web.AppRunner(
            build_app(self.collection, metrics, loopback=is_loopback_name(host)),
            access_log=None,
            handle_signals=False,
        )

    @property
    def url(self) -> str:
        return f"http://{join_address(self.host, self.port)}"

    async def start(self, specs: list[ProxySpec] | None = None) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self.runner.cleanup()
            raise
        server = site._server
        if server is not None and server.sockets:  # the real port when asked for port 0
            self.port = server.sockets[0].getsockname()[1]
        if specs:
            try:
                await self.collection.apply(specs)
            except ApiError:
                await self.stop()
                raise

    async def stop(self) -> None:
        await self.collection.shutdown()
        await self.runner.cleanup()


async def serve(host: str, port: int, specs: list[ProxySpec], metrics: bool) -> int:
    """Run until SIGINT or SIGTERM; 0 on a clean stop."""
    server = ToxiproxyServer(host, port, metrics)
    await server.start(specs)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    log.warning("aichaos toxiproxy: API on %s, %d proxies", server.url, len(specs))
    print(f"ready: {server.url}", flush=True)
    await stopping.wait()
    await server.stop()
    return 0
