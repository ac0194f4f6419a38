"""The HTTP/1.1 layer of one proxied connection, present only while its proxy has LLM toxics.

It sits between each socket and its link (``link.py``), so TCP toxics still act on what it
lets through. Requests are read whole (head and body, with ``h11``) and drawn against each LLM
toxic (``llm_toxics.draw``); a request no toxic hits goes on unchanged and its response passes
through unparsed. A request-level toxic answers it here (``http_error``) or never
(``hang``); response-level ones get a ``Response`` that parses the answer, splits an event
stream into its SSE events and lets each out when its toxics allow.

Clients of an HTTP/1.1 API send a request only once the previous answer is complete (no
pipelining), so an unparsed response ends where the client's next request begins: that is how
a tap added to an open connection finds its footing (it waits for a read that starts a request)
and why it can pass unhit responses through without parsing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING

import h11

from .link import CLOSE, EOF, End
from .llm_toxics import (
    ErrorEvent,
    FirstTokenDelay,
    Hang,
    HttpError,
    LlmToxic,
    SlowTokens,
    Stall,
    Truncate,
    draw,
    error_event,
    error_response,
)
from .upstream import server_name

if TYPE_CHECKING:
    from .connection import Connection
    from .proxy import Proxy
    from .toxics import Toxic

log = logging.getLogger("aichaos.toxiproxy")
REQUEST_START = re.compile(rb"[A-Z]{3,10} ")
MAX_REQUEST = 16 * 1024 * 1024  # a request head and body held whole, at most
SEEN_LIMIT = 100_000  # distinct request bodies a toxic remembers (occurrence counts)


class HttpTap:
    """Requests from the client, answers from the upstream, of one connection."""

    def __init__(self, conn: Connection, at_start: bool):
        self.conn = conn
        # "request": reading one; "sync": waiting for a read that starts one (added to an
        # open connection); "answered": a hung request; "response": a parsed answer running;
        # "raw": not HTTP after all, or detached: bytes pass
        self.state = "request" if at_start else "sync"
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        self.raw = bytearray()  # the request's bytes as read, forwarded unchanged
        self.head: h11.Request | None = None  # the request being read
        self.body = bytearray()
        self.held: list[bytes] = []  # client bytes while a parsed response runs
        self.response: Response | None = None
        self.hung_by: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.detaching = False

    # --- bytes from the sockets -------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self.state == "raw":
            self._up(data)
        elif self.state == "sync":
            if REQUEST_START.match(data):
                self.state = "request"
                self._read_request(data)
            else:
                self._up(data)
        elif self.state == "request":
            self._read_request(data)
        elif self.state == "response":
            self.held.append(data)
        # "answered" (hung): a client that sends more is ignored until it gives up

    def from_upstream(self, data: bytes) -> None:
        if self.response is not None:
            self.response.feed(data)
        else:
            self._down(data)

    def client_eof(self) -> None:
        if self.raw:
            self._up(bytes(self.raw))
            self.raw.clear()
        self.conn.links["upstream"].feed_end(EOF)

    def upstream_eof(self) -> None:
        if self.response is not None:
            self.response.upstream_closed = True
            self.response.feed(b"")
        else:
            self.conn.links["downstream"].feed_end(EOF)

    def _up(self, data: bytes) -> None:
        self.conn.links["upstream"].feed(data)

    def _down(self, data: bytes) -> None:
        self.conn.links["downstream"].feed(data)

    # --- requests ---------------------------------------------------------------------------

    def _read_request(self, data: bytes) -> None:
        self.raw += data
        try:
            self.parser.receive_data(data)
            self._next_events()
        except h11.RemoteProtocolError as exc:
            log.warning("proxy %s: not HTTP/1.1 (%s): passing bytes through",
                        self.conn.proxy.name, exc)  # fmt: skip
            self.state = "raw"
            raw, self.raw = bytes(self.raw), bytearray()
            self._up(raw)

    def _next_events(self) -> None:
        while self.state == "request":
            event = self.parser.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self.head = event
                if event.headers and any(
                    n == b"expect" and v.lower() == b"100-continue" for n, v in event.headers
                ):
                    raise h11.RemoteProtocolError("Expect: 100-continue is not looked into")
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rest, _ = self.parser.trailing_data
                raw = bytes(self.raw[: len(self.raw) - len(rest)])
                head, body = self.head, bytes(self.body)
                self.raw, self.head, self.body = bytearray(rest), None, bytearray()
                self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
                self._dispatch(raw, head, body)
                if rest and self.state == "request":
                    self.parser.receive_data(rest)
                else:
                    return
            else:  # ConnectionClosed, PAUSED: nothing more to read here
                return

    def _dispatch(self, raw: bytes, head: h11.Request | None, body: bytes) -> None:
        if self.conn.proxy.upstream_tls:
            raw = with_host(raw, upstream_host(self.conn.proxy))
        hits = self._hits(body)
        request_level = [(t, a) for t, a in hits if a.kind == "request"]
        if request_level:
            toxic, attrs = request_level[0]
            if isinstance(attrs, HttpError):
                self._down(error_response(attrs))
                return
            if isinstance(attrs, Hang):
                self.state, self.hung_by = "answered", toxic.name
                if attrs.timeout > 0:
                    loop = asyncio.get_running_loop()
                    self.timer = loop.call_later(attrs.timeout / 1000.0, self.conn.close)
                return
        if hits and head is not None:
            self.response = Response(self, head.method, hits)
            self.state = "response"
            self.conn.links["downstream"].refresh_fast_path()  # its answer is parsed
        self._up(raw)

    def _hits(self, body: bytes) -> list[tuple[Toxic, LlmToxic]]:
        digest = hashlib.blake2b(body, digest_size=16).digest()
        hits = []
        for toxic in self.conn.proxy.llm_toxics():
            attrs = toxic.llm
            assert attrs is not None
            seen = toxic.seen
            if len(seen) >= SEEN_LIMIT:
                seen.clear()
            occurrence = seen.get(digest, 0)
            seen[digest] = occurrence + 1
            toxic.requests += 1
            if draw(attrs.seed, toxic.name, digest, occurrence) < toxic.toxicity:
                toxic.hits += 1
                hits.append((toxic, attrs))
        return hits

    # --- answers ----------------------------------------------------------------------------

    def response_done(self, close: bool) -> None:
        """The parsed answer has left (or was cut): the next request may come."""
        self.response = None
        self.conn.links["downstream"].refresh_fast_path()
        if close:
            self.conn.links["downstream"].feed_end(CLOSE)
            return
        self.state = "request"
        if self.detaching:
            self._finish_detach()
            return
        held, self.held = self.held, []
        for data in held:
            self.from_client(data)

    # --- toxics changing --------------------------------------------------------------------

    def toxic_removed(self, name: str) -> None:
        if self.hung_by == name:
            self.conn.close()  # the request it held cannot be answered any more
        elif self.response is not None:
            self.response.forget(name)

    def detach(self) -> None:
        """The proxy has no LLM toxic left: pass bytes again, once nothing is held."""
        self.detaching = True
        if self.state == "answered":
            self.conn.close()
        elif self.response is not None:
            self.response.forget(None)
        else:
            self._finish_detach()

    def _finish_detach(self) -> None:
        raw, self.raw = bytes(self.raw), bytearray()
        held, self.held = self.held, []
        self.state = "raw"
        self.conn.drop_tap()
        for data in [raw, *held]:
            if data:
                self.conn.links["upstream"].feed(data)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.response is not None:
            self.response.cancel()


class Response:
    """One answer the toxics hit: parsed, its SSE events let out one by one."""

    def __init__(self, tap: HttpTap, method: bytes, hits: list[tuple[Toxic, LlmToxic]]):
        self.tap = tap
        self.toxics: dict[str, LlmToxic] = {t.name: a for t, a in hits}
        self.parser = h11.Connection(h11.CLIENT)
        self.parser.send(h11.Request(method=method, target="/", headers=[("Host", "upstream")]))
        self.parser.send(h11.EndOfMessage())
        self.queue: deque[tuple[bytes | End, float]] = deque()
        self.pending = bytearray()  # an SSE event not complete yet
        self.sse = False
        self.chunked = False
        self.cuts = any(isinstance(a, ErrorEvent | Truncate) for a in self.toxics.values())
        self.wakeup = asyncio.Event()
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.content = 0  # content events let out
        self.first_at: float | None = None  # when the first content event arrived
        self.last_left = 0.0
        self.stalled = False
        self.finished = False
        self.upstream_closed = False  # the upstream sent EOF: the connection ends with this

    # --- parsing what the upstream sends -----------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            self.parser.receive_data(data)
            while True:
                event = self.parser.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                self._on_event(event)
                if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as exc:
            log.warning("proxy %s: bad HTTP answer (%s): closing", self.tap.conn.proxy.name, exc)
            self._put(CLOSE)

    def _on_event(self, event: h11.Event) -> None:
        if isinstance(event, h11.InformationalResponse):
            return
        if isinstance(event, h11.Response):
            self._put(self._head(event))
        elif isinstance(event, h11.Data):
            if not self.sse:
                self._put(bytes(event.data))
                return
            self.pending += event.data
            self._split_events()
        elif isinstance(event, h11.EndOfMessage):
            if self.pending:
                self._put(bytes(self.pending))
                self.pending.clear()
            self._put(EOF)
        elif isinstance(event, h11.ConnectionClosed):
            self._put(CLOSE)

    def _head(self, event: h11.Response) -> bytes:
        headers = event.headers.raw_items()
        names = {n.lower(): v for n, v in headers}
        self.sse = names.get(b"content-type", b"").lower().startswith(b"text/event-stream")
        self.chunked = b"chunked" in names.get(b"transfer-encoding", b"").lower()
        lines = [b"HTTP/1.1 %d %s" % (event.status_code, event.reason or b"OK")]
        for name, value in headers:
            if self.cuts and name.lower() == b"connection":
                continue
            lines.append(name + b": " + value)
        if self.cuts:  # the proxy closes after a stream it cut: the client must not reuse it
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _split_events(self) -> None:
        data = self.pending
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            if end < 0:
                break
            self._put(bytes(data[start : end + 2]))
            start = end + 2
        del data[:start]

    def _put(self, item: bytes | End) -> None:
        self.queue.append((item, time.monotonic()))
        self.wakeup.set()

    # --- letting it out ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._let_out()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not leave the client waiting forever
            log.exception("proxy %s: LLM toxic failed: closing", self.tap.conn.proxy.name)
            self.finished = True
            self.tap.conn.close()

    async def _let_out(self) -> None:
        head_sent = False
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            item, arrived = self.queue.popleft()
            if isinstance(item, End):
                await self._end(item, head_sent)
                return
            if not head_sent:
                head_sent = True
                if not self.sse:
                    await self._hold_whole(arrived)
                self._write(item, framed=False)
                continue
            if not self.sse:
                await self._hold_whole(arrived)
                self._write(item)
                continue
            if _is_done(item) and await self._cut_here():
                return
            if _is_content(item):
                if await self._cut_here():
                    return
                await self._pace(arrived)
                self.content += 1
                self.last_left = time.monotonic()
            elif self.first_at is not None:
                await self._delay_after_first(arrived)
            self._write(item)

    async def _hold_whole(self, arrived: float) -> None:
        attrs = self._first(FirstTokenDelay)
        if attrs is not None:
            await self._sleep_until(arrived + attrs.delay / 1000.0)

    async def _pace(self, arrived: float) -> None:
        stall = self._first(Stall)
        if stall is not None and not self.stalled and self.content >= stall.after:
            self.stalled = True
            await self._sleep_until(time.monotonic() + stall.duration / 1000.0)
        if self.first_at is None:
            self.first_at = arrived
        await self._delay_after_first(arrived)
        slow = self._first(SlowTokens)
        if slow is not None and self.content > 0:
            await self._sleep_until(self.last_left + slow.delay / 1000.0)

    async def _delay_after_first(self, arrived: float) -> None:
        attrs = self._first(FirstTokenDelay)
        if attrs is not None:
            await self._sleep_until(arrived + attrs.delay / 1000.0)

    async def _cut_here(self) -> bool:
        """Cut the stream before the next content event (or ``[DONE]``) when a cutting toxic
        let its ``after`` events through."""
        for attrs in list(self.toxics.values()):
            if isinstance(attrs, ErrorEvent | Truncate) and self.content >= attrs.after:
                if isinstance(attrs, ErrorEvent):
                    self._write(error_event(attrs))
                    if self.chunked:
                        self._write_raw(b"0\r\n\r\n")
                self._finish(close=True)
                return True
        return False

    async def _end(self, end: End, head_sent: bool) -> None:
        if head_sent and self.sse and await self._cut_here():
            return
        if end is EOF and self.chunked:
            self._write_raw(b"0\r\n\r\n")
        self._finish(close=end is CLOSE or self.cuts)

    def _finish(self, close: bool) -> None:
        self.finished = True
        self.tap.response_done(close or self.upstream_closed)

    def _write(self, data: bytes, framed: bool = True) -> None:
        if framed and self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        self.tap.conn.links["downstream"].feed(data)

    def _first(self, kind: type[LlmToxic]) -> LlmToxic | None:
        return next((a for a in self.toxics.values() if isinstance(a, kind)), None)

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline``, or until the toxics change (a removed one stops holding)."""
        wait = deadline - time.monotonic()
        if wait <= 0:
            return
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), wait)

    # --- toxics changing --------------------------------------------------------------------

    def forget(self, name: str | None) -> None:
        """Stop applying the toxic ``name`` (every one, for None) to this answer."""
        if name is None:
            self.toxics.clear()
        else:
            self.toxics.pop(name, None)
        self.changed.set()

    def cancel(self) -> None:
        self.finished = True
        self.task.cancel()


HOST_LINE = re.compile(rb"\r\nhost:[^\r\n]*", re.IGNORECASE)


def with_host(raw: bytes, host: str) -> bytes:
    """The request ``raw`` naming ``host`` in its Host header: a client of a proxy names the
    proxy, and a hosted provider behind TLS serves by the name it is asked for."""
    end = raw.find(b"\r\n\r\n")
    head, rest = raw[:end], raw[end:]
    line = b"\r\nHost: " + host.encode("idna")
    head, found = HOST_LINE.subn(lambda _: line, head, count=1)
    if not found:
        first = head.find(b"\r\n")
        head = head[:first] + line + head[first:] if first >= 0 else head + line
    return head + rest


def upstream_host(proxy: Proxy) -> str:
    """The upstream's name as a Host header gives it (no port for HTTPS's own)."""
    port = proxy.upstream_address[1]
    name = server_name(proxy)
    return name if port == 443 else f"{name}:{port}"


def _is_done(event: bytes) -> bool:
    return event.startswith(b"data: [DONE]")


def _is_content(event: bytes) -> bool:
    """An SSE event carrying generated text: OpenAI chat or completions, or Anthropic's
    ``content_block_delta``."""
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return False
        try:
            data = json.loads(payload)
        except ValueError:
            return False
        if data.get("type") == "content_block_delta":
            return True
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content") or choice.get("text"):
                return True
        return False
    return False
