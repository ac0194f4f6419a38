"""The gateway's upstream client (``fixtures/gateway/wire.py``) against in-process servers on
127.0.0.1: framing, failures and their kinds, keep-alive, the stale-connection resend, a slow
reader, TLS. Every test runs on asyncio's loop and on uvloop (what the gateway runs on)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trustme
from aiohttp import web

from aichaos.fixtures.gateway import wire
from aichaos.fixtures.gateway.sse import data_lines, whole_answer
from aichaos.fixtures.gateway.upstream import UpstreamError

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"
WORDS = ("Hello", " wire", " world")
BODY = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


def event(data: Any) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def chunk(content: str | None) -> bytes:
    delta = {"role": "assistant"} if content is None else {"content": content}
    return event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})


USAGE = event({"choices": [], "usage": {"completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"
ANSWER = chunk(None) + b"".join(chunk(w) for w in WORDS) + USAGE + DONE


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = None

    def go(coro: Awaitable[Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 30))

    return go


class Upstream:
    """An aiohttp chat-completions server whose path prefix picks its behaviour."""

    def __init__(self) -> None:
        self.requests: list[str] = []  # the X-Request-Id of each request
        self.peers: set[int] = set()  # client ports: one per connection
        self.app = web.Application()
        self.app.router.add_post("/{mode}/v1/chat/completions", self.chat)
        self.app.router.add_route("*", "/json/{mode}", self.json)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        await request.read()
        self.requests.append(request.headers.get("X-Request-Id", ""))
        self.peers.add(request.transport.get_extra_info("peername")[1])
        if mode == "length":
            return web.Response(body=ANSWER, content_type="text/event-stream")
        if mode in ("busy", "down", "bad"):
            status = {"busy": 429, "down": 503, "bad": 400}[mode]
            body = {"error": {"message": f"{mode} here", "code": status}}
            return web.json_response(body, status=status, headers={"Retry-After": "3"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if mode == "no-token":
            await asyncio.sleep(10)
        if mode == "done-first":
            await response.write(chunk(None) + DONE)
            await response.write_eof()
            return response
        if mode == "error-first":
            await response.write(event({"error": {"message": "engine dead", "code": 500}}))
            await response.write_eof()
            return response
        await response.write(chunk(None))
        for word in WORDS:
            await asyncio.sleep(0.005)
            await response.write(chunk(word))
            if mode == "cut":
                request.transport.abort()  # type: ignore[union-attr]
                return response
            if mode == "stall":
                await asyncio.sleep(10)
        if mode == "big":  # about 1 MiB, as fast as the socket takes it
            filler = chunk("x" * 1000)
            for _ in range(1000):
                await response.write(filler)
        if mode != "no-done":
            await response.write(USAGE + DONE)
        await response.write_eof()
        return response

    async def json(self, request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        body = await request.read()
        self.peers.add(request.transport.get_extra_info("peername")[1])
        if mode == "echo":
            return web.json_response({"method": request.method, "body": json.loads(body or "{}")})
        if mode == "list":
            return web.json_response([1, 2])
        if mode == "text":
            return web.Response(text="not json")
        if mode == "slow":
            await asyncio.sleep(10)
        return web.json_response({"error": {"message": "no"}}, status=404)


@asynccontextmanager
async def serve(app: web.Application, context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=context)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def upstream() -> AsyncIterator[tuple[Upstream, str, wire.Client]]:
    server = Upstream()
    client = wire.Client()
    async with serve(server.app) as port:
        try:
            yield server, f"http://{LOOPBACK}:{port}", client
        finally:
            await client.close()


async def stream(client: wire.Client, url: str, **kwargs: Any) -> wire.UpstreamStream:
    options = {"first_token_s": 5.0, "connect_s": 1.0, "read_s": 5.0, **kwargs}
    return await client.open_stream(f"{url}/v1/chat/completions", BODY, **options)


async def read_all(s: wire.UpstreamStream) -> bytes:
    return s.head + b"".join([block async for block in s.blocks()])


def idle(client: wire.Client) -> int:
    return sum(len(origin.idle) for origin in client._origins.values())


# ----- framing -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["chunked", "length"])
def test_a_stream_is_read_whole_and_its_connection_reused(run, mode):
    async def main():
        async with upstream() as (server, base, client):
            for i in range(3):
                s = await stream(client, f"{base}/{mode}", request_id=f"rid-{i}")
                assert s.head.startswith(chunk(None)) and b'"Hello"' in s.head
                assert await read_all(s) == ANSWER
                assert s.saw_done
                s.close()
                assert idle(client) == 1
            assert server.requests == ["rid-0", "rid-1", "rid-2"]  # one each, with its id
            assert len(server.peers) == 1  # one keep-alive connection

    run(main())


def test_a_stream_ends_at_done_and_without_it_is_incomplete(run):
    async def main():
        async with upstream() as (server, base, client):
            opened = await stream(client, f"{base}/chunked", request_id="x-1")
            text, _, _, _ = whole_answer(data_lines([await read_all(opened)]))
            opened.close()
            assert text == "".join(WORDS)
            assert server.requests == ["x-1"] and idle(client) == 1
            opened = await stream(client, f"{base}/no-done")
            with pytest.raises(UpstreamError) as caught:
                async for _ in opened.blocks():
                    pass
            assert caught.value.kind == "incomplete_stream"
            assert "without [DONE]" in str(caught.value)
            opened.close()

    run(main())


def test_a_request_id_that_would_smuggle_a_header_is_not_sent(run):
    async def main():
        async with upstream() as (server, base, client):
            s = await stream(client, f"{base}/chunked", request_id="a\r\nX-Tier: enterprise")
            await read_all(s)
            s.close()
            assert server.requests == [""]

    run(main())


# ----- answers that are not streams ----------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "kind", "status"),
    [("busy", "http_429", 429), ("down", "http_5xx", 503), ("bad", "http_4xx", 400)],
)
def test_a_non_200_is_classified_with_retry_after_and_body(run, mode, kind, status):
    async def main():
        async with upstream() as (server, base, client):
            with pytest.raises(UpstreamError) as caught:
                await stream(client, f"{base}/{mode}")
            exc = caught.value
            assert (exc.kind, exc.status, exc.retry_after) == (kind, status, 3.0)
            assert exc.body == {"error": {"message": f"{mode} here", "code": status}}
            assert str(exc).startswith(f"HTTP {status}: ")
            assert exc.provider is (kind != "http_4xx")
            assert idle(client) == 1  # the answer was complete: its connection is reused
            assert len(server.requests) == 1

    run(main())


@pytest.mark.parametrize(
    ("mode", "kind", "text"),
    [
        ("done-first", "incomplete_stream", "before a token"),
        ("error-first", "stream_error", "engine dead"),
        ("no-token", "timeout", "no first token within 0.3s"),
    ],
)
def test_a_stream_that_fails_before_its_first_token(run, mode, kind, text):
    async def main():
        async with upstream() as (server, base, client):
            with pytest.raises(UpstreamError) as caught:
                await stream(client, f"{base}/{mode}", first_token_s=0.3)
            assert caught.value.kind == kind and text in str(caught.value)
            assert len(server.requests) == 1
            if mode == "no-token":
                assert idle(client) == 0  # abandoned mid-answer: closed, not pooled

    run(main())


def test_a_refused_connection_is_connect(run):
    async def main():
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]  # closed below: nothing listens there
        client = wire.Client()
        try:
            with pytest.raises(UpstreamError) as caught:
                await stream(client, f"http://{LOOPBACK}:{port}")
            assert caught.value.kind == "connect" and "cannot connect" in str(caught.value)
            with pytest.raises(UpstreamError) as caught:
                await client.call_json(
                    "GET", f"http://{LOOPBACK}:{port}/x", timeout_s=1, connect_s=1
                )
            assert caught.value.kind == "connect"
        finally:
            await client.close()

    run(main())


# ----- after the first token -----------------------------------------------------------------
def test_a_stall_after_the_first_token_is_a_timeout(run):
    async def main():
        async with upstream() as (_, base, client):
            s = await stream(client, f"{base}/stall", read_s=0.3)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(UpstreamError) as caught:
                await read_all(s)
            assert caught.value.kind == "timeout" and "stalled" in str(caught.value)
            assert 0.25 < loop.time() - started < 2
            s.close()
            assert idle(client) == 0

    run(main())


def test_a_cut_mid_stream_is_incomplete_after_what_came(run):
    async def main():
        async with upstream() as (_, base, client):
            s = await stream(client, f"{base}/cut")
            got = [s.head]
            with pytest.raises(UpstreamError) as caught:
                async for block in s.blocks():
                    got.append(block)
            assert caught.value.kind == "incomplete_stream" and "stream cut" in str(caught.value)
            assert b'"Hello"' in b"".join(got)
            s.close()
            assert idle(client) == 0

    run(main())


def test_a_slow_reader_pauses_the_upstream_without_a_stall(run):
    async def main():
        async with upstream() as (_, base, client):
            s = await stream(client, f"{base}/big", read_s=0.2)
            await asyncio.sleep(0.5)  # read nothing for longer than read_s
            assert s.paused and s.error is None
            data = await read_all(s)
            assert data.count(b'"xxx') == 1000 and data.endswith(DONE)
            s.close()
            assert idle(client) == 1

    run(main())


# ----- keep-alive ----------------------------------------------------------------------------
class RawServer:
    """A minimal HTTP/1.1 server on a socket: ``misbehave(conn_requests)`` says what to do with
    a connection's n-th request: None answers it, ``"close"`` closes without a byte,
    ``"partial"`` sends half a status line and closes, ``"unframed"`` answers with a body
    that the close ends."""

    def __init__(self, misbehave: Callable[[int], str | None]):
        self.misbehave = misbehave
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                n += 1
                self.requests += 1
                what = self.misbehave(n)
                if what == "unframed":  # no length, not chunked: the body ends with the socket
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
                    writer.write(ANSWER)
                    await writer.drain()
                if what == "partial":
                    writer.write(b"HTTP/1.1 20")
                    await writer.drain()
                if what is not None:
                    writer.close()
                    return
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@asynccontextmanager
async def raw_server(
    misbehave: Callable[[int], str | None],
) -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer(misbehave)
    listener = await asyncio.start_server(server.handle, LOOPBACK, 0)
    try:
        yield server, f"http://{LOOPBACK}:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()


def test_a_pooled_connection_closed_before_any_byte_is_resent_once(run):
    async def main():
        # every connection answers its first request and drops its second unanswered
        async with raw_server(lambda n: "close" if n == 2 else None) as (server, base):
            client = wire.Client()
            try:
                for _ in range(2):
                    s = await stream(client, base)
                    assert await read_all(s) == ANSWER
                    s.close()
            finally:
                await client.close()
            # the second went out on the pooled connection, was dropped before a byte of
            # answer, and went again on a new one: no error, no third connection
            assert (server.connections, server.requests) == (2, 3)

    run(main())


def test_a_connection_lost_after_a_byte_of_answer_is_never_resent(run):
    async def main():
        async with raw_server(lambda n: "partial" if n == 2 else None) as (server, base):
            client = wire.Client()
            try:
                s = await stream(client, base)
                await read_all(s)
                s.close()
                with pytest.raises(UpstreamError) as caught:
                    await stream(client, base)
                assert caught.value.kind == "reset"
                assert (server.connections, server.requests) == (1, 2)
            finally:
                await client.close()

    run(main())


def test_a_new_connection_closed_before_any_byte_is_a_reset(run):
    async def main():
        async with raw_server(lambda n: "close") as (server, base):
            client = wire.Client()
            try:
                with pytest.raises(UpstreamError) as caught:
                    await stream(client, base)
                assert caught.value.kind == "reset" and server.requests == 1
            finally:
                await client.close()

    run(main())


def test_a_body_ended_by_the_close_is_complete(run):
    async def main():
        async with raw_server(lambda n: "unframed") as (server, base):
            client = wire.Client()
            try:
                s = await stream(client, base)
                assert await read_all(s) == ANSWER and s.ended
                s.close()
                assert idle(client) == 0 and server.requests == 1
            finally:
                await client.close()

    run(main())


def test_an_idle_connection_the_server_closed_leaves_the_pool(run):
    async def main():
        server = Upstream()
        runner = web.AppRunner(
            server.app, access_log=None, handler_cancellation=True, keepalive_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        base = f"http://{LOOPBACK}:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        client = wire.Client()
        try:
            s = await stream(client, f"{base}/length")
            await read_all(s)
            s.close()
            assert idle(client) == 1
            await asyncio.sleep(0.4)  # the server closed it: it left the pool
            assert idle(client) == 0
            s = await stream(client, f"{base}/length")
            await read_all(s)
            s.close()
            assert len(server.peers) == 2 and len(server.requests) == 2
        finally:
            await client.close()
            await runner.cleanup()

    run(main())


def test_a_connection_idle_longer_than_idle_s_is_not_reused(run):
    async def main():
        async with upstream() as (server, base, _):
            client = wire.Client(idle_s=0.1)
            try:
                for pause in (0.0, 0.3, 0.0):
                    await asyncio.sleep(pause)
                    s = await stream(client, f"{base}/length")
                    await read_all(s)
                    s.close()
                assert len(server.peers) == 2 and idle(client) == 1
            finally:
                await client.close()

    run(main())


# ----- call_json -----------------------------------------------------------------------------
def test_call_json(run):
    async def main():
        async with upstream() as (server, base, client):
            options = {"timeout_s": 2.0, "connect_s": 1.0}
            got = await client.call_json("POST", f"{base}/json/echo", {"q": "é"}, **options)
            assert got == {"method": "POST", "body": {"q": "é"}}
            assert await client.call_json("GET", f"{base}/json/echo", **options) == {
                "method": "GET",
                "body": {},
            }
            for mode in ("list", "text"):
                with pytest.raises(UpstreamError) as caught:
                    await client.call_json("GET", f"{base}/json/{mode}", **options)
                assert caught.value.kind == "bad_response"
            with pytest.raises(UpstreamError) as caught:
                await client.call_json("GET", f"{base}/json/missing", **options)
            assert caught.value.kind == "http_4xx" and caught.value.body == {
                "error": {"message": "no"}
            }
            assert len(server.peers) == 1  # all on one connection
            response = await client.request("GET", f"{base}/json/missing", **options)
            assert response.status == 404
            with pytest.raises(UpstreamError) as caught:
                await client.call_json("GET", f"{base}/json/slow", timeout_s=0.2, connect_s=1)
            assert caught.value.kind == "timeout"

    run(main())


# ----- TLS -----------------------------------------------------------------------------------
def test_an_https_upstream_with_sni_and_keep_alive(run):
    ca = trustme.CA()
    names: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server_context.sni_callback = lambda _obj, name, _ctx: names.append(name)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def main():
        server = Upstream()
        async with serve(server.app, server_context) as port:
            base = f"https://localhost:{port}/chunked"
            client = wire.Client(ssl_context=trusting)
            try:
                for _ in range(2):
                    s = await stream(client, base)
                    assert await read_all(s) == ANSWER
                    s.close()
                assert names == ["localhost"]  # SNI from the host; one handshake, reused
            finally:
                await client.close()
            untrusting = wire.Client()  # the system's CAs do not know trustme's
            try:
                with pytest.raises(UpstreamError) as caught:
                    await stream(untrusting, base)
                assert caught.value.kind == "connect"
                assert "certificate" in str(caught.value).lower()
            finally:
                await untrusting.close()

    run(main())


def test_unusable_urls_are_connect_errors(run):
    async def main():
        client = wire.Client()
        for url in ("ftp://example/x", "http://:80/x", "http://127.0.0.1:99999/x"):
            with pytest.raises(UpstreamError) as caught:
                await client.call_json("GET", url, timeout_s=1, connect_s=1)
            assert caught.value.kind == "connect"
        await client.close()

    run(main())
