"""The gateway's direct relay, in one process: an aiohttp upstream, the gateway's own app
(``server.build_app``) and raw-socket clients on 127.0.0.1. A slow client pauses the
upstream read without a stall, a client that leaves aborts the upstream and gives back what
its request held, and an HTTP/1.0 client (no chunks) gets the whole answer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from aichaos.fixtures.gateway.app import Gateway
from aichaos.fixtures.gateway.config import load_config
from aichaos.fixtures.gateway.server import build_app

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"
FILLER = "x" * 1000
BIG = 3000  # tokens of FILLER: about 3 MiB, more than the (small) socket buffers between hold


def event(data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def chunk(content: str) -> bytes:
    delta = {"content": content}
    return event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})


class Upstream:
    """A provider that streams ``BIG`` long tokens as fast as it may, then usage and DONE."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.finished = 0
        self.cut = 0  # streams whose reader went away

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(chunk("first"))
            for _ in range(BIG):
                await response.write(chunk(FILLER))
            await response.write(event({"choices": [], "usage": {"completion_tokens": BIG + 1}}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.cut += 1
            raise
        self.finished += 1
        return response


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    listener = site._server.sockets[0]  # type: ignore[union-attr]
    # accepted sockets inherit it: a send buffer that fills in a few tens of kB, so that a
    # client that does not read shows at once (the kernel's would take megabytes first)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    try:
        yield f"http://{LOOPBACK}:{listener.getsockname()[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def stack() -> AsyncIterator[tuple[Upstream, Gateway, int]]:
    upstream = Upstream()
    async with serve(upstream.app) as base:
        gateway = Gateway(load_config(None, {"replicas": [{"id": "r1", "url": base}]}))
        async with serve(build_app(gateway)) as url:
            yield upstream, gateway, int(url.rsplit(":", 1)[1])


async def connect(
    port: int, version: str = "1.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a slow client's small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    # the reader stops reading past 2 x limit: a client that does not read holds little
    reader, writer = await asyncio.open_connection(sock=sock, limit=16384)
    body = json.dumps({"messages": [{"role": "user", "content": "q"}], "stream": True}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/%s\r\nHost: gw\r\nX-Tier: enterprise\r\n"
        b"X-Deadline-Ms: 1000\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (version.encode(), len(body), body)
    )
    await writer.drain()
    return reader, writer


async def read_to(reader: asyncio.StreamReader, end: bytes | None) -> bytes:
    """Everything up to ``end`` (None: to the close)."""
    parts = []
    while True:
        part = await reader.read(65536)
        parts.append(part)
        if not part or (end is not None and b"".join(parts[-2:]).endswith(end)):
            return b"".join(parts)


def upstream_streams(gateway: Gateway) -> list:
    return [c.exchange for c in gateway.wire._conns if c.exchange is not None]


async def settled(gateway: Gateway) -> None:
    for _ in range(100):
        if gateway.shedder.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert gateway.shedder.in_flight == 0
    assert [r.outstanding for r in gateway.pool.replicas] == [0]


def test_a_slow_client_pauses_the_upstream_and_gets_every_byte():
    async def main():
        async with stack() as (upstream, gateway, port):
            reader, writer = await connect(port)
            await reader.readuntil(b"\r\n\r\n")
            # read nothing for longer than the stall limit (read_s: the 1 s deadline)
            await asyncio.sleep(1.5)
            [stream] = upstream_streams(gateway)
            assert stream.paused and stream.error is None
            assert stream.timer is None  # no stall clock while paused
            data = await asyncio.wait_for(read_to(reader, b"\r\n0\r\n\r\n"), 20)
            writer.close()
            assert data.count(FILLER.encode()) == BIG and b"first" in data
            assert data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
            assert b'"error"' not in data and b'"usage": {' not in data
            assert upstream.finished == 1
            await settled(gateway)
            await gateway.close()

    asyncio.run(main())


def test_a_client_that_leaves_aborts_the_upstream_and_gives_back_its_slot():
    async def main():
        async with stack() as (upstream, gateway, port):
            reader, writer = await connect(port)
            await reader.readuntil(b"first")
            writer.transport.abort()
            for _ in range(100):
                if upstream.cut:
                    break
                await asyncio.sleep(0.02)
            assert upstream.cut == 1 and upstream.finished == 0  # the provider stopped
            await settled(gateway)
            assert gateway.wire._conns == set()  # the cut connection was not pooled
            await gateway.close()

    asyncio.run(main())


def test_an_http_10_client_gets_the_whole_stream_without_chunks():
    async def main():
        async with stack() as (_, gateway, port):
            reader, writer = await connect(port, "1.0")
            data = await asyncio.wait_for(read_to(reader, None), 20)  # to the close: no framing
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200") and b"Transfer-Encoding" not in head
            assert body.count(FILLER.encode()) == BIG and body.endswith(b"data: [DONE]\n\n")
            await settled(gateway)
            await gateway.close()

    asyncio.run(main())
