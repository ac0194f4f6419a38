"""A proxied TCP connection: the client's socket, the upstream's socket and two links."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import TYPE_CHECKING

from .http_tap import HttpTap
from .link import EOF, Link
from .upstream import open_upstream

if TYPE_CHECKING:
    from .proxy import Proxy

CLOSE_GRACE = 2.0  # seconds a closing socket may take to flush before it is aborted
_LINGER_ZERO = struct.pack("ii", 1, 0)


class Side(asyncio.Protocol):
    """One socket of a connection. ``out_link`` reads from it, ``in_link`` writes to it."""

    def __init__(self, proxy: Proxy, conn: Connection | None = None):
        self.proxy = proxy
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.out_link: Link | None = None
        self.in_link: Link | None = None
        self.read_paused = False
        self.write_paused = False
        self.gone = False
        self.early: list[bytes] = []  # bytes that arrived before the upstream was connected
        self.early_eof = False
        # The fast path: with no toxic, bytes read here go straight to the other socket.
        self.fast_write = None
        self.fast_stats: list[int] = [0, 0]
        # With LLM toxics, bytes read here go to the connection's HTTP layer first.
        self.tap_feed = None
        self.abort_timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if self.conn is None:  # a client the proxy accepted: hold its bytes until upstream is up
            transport.pause_reading()
            self.read_paused = True
            self.conn = Connection(self.proxy, self)

    def data_received(self, data: bytes) -> None:
        write = self.fast_write
        if write is not None:
            stats = self.fast_stats
            stats[0] += len(data)
            stats[1] += len(data)
            write(data)
            return
        self.take(data)

    def take(self, data: bytes) -> None:
        """Bytes read from this socket, off the fast path."""
        if self.tap_feed is not None:
            self.tap_feed(data)
            return
        link = self.out_link
        if link is not None:
            link.feed(data)
        else:
            # uvloop starts reading right after connection_made even when it paused reading
            self.early.append(data)
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        tap = self.conn.tap if self.conn is not None else None
        if self.out_link is None:
            self.early_eof = True
        elif tap is not None:
            (tap.client_eof if self is self.conn.client else tap.upstream_eof)()
        else:
            self.out_link.feed_end(EOF)
        return True  # keep the socket open: the other direction may still be sending

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.in_link is not None:
            self.in_link.src.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.in_link is not None:
            self.in_link.src.update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.fast_write = None
        if self.in_link is not None:
            self.in_link.refresh_fast_path()
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None
        if self.conn is not None:
            self.conn.side_lost(self)

    # --- used by links and the connection ---------------------------------------------------

    def attach(self, out_link: Link, in_link: Link) -> None:
        self.out_link, self.in_link = out_link, in_link
        early, self.early = self.early, []
        for data in early:
            self.take(data)
        if self.early_eof:
            self.eof_received()
        out_link.refresh_fast_path()

    def update_reading(self) -> None:
        link = self.out_link
        if link is None or self.gone or self.transport is None:
            return
        pause = link.dst.write_paused or link.overfull
        if pause and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not pause and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.gone and not transport.is_closing():
            transport.write(data)

    def write_eof(self) -> None:
        transport = self.transport
        if transport is None or self.gone or transport.is_closing():
            return
        if transport.can_write_eof():
            with contextlib.suppress(OSError):
                transport.write_eof()

    def close(self) -> None:
        transport = self.transport
        if transport is None or self.gone:
            return
        pending = transport.get_write_buffer_size()
        transport.close()
        self.stop_writers()
        if pending:  # a peer that never reads must not keep the socket forever
            self.abort_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)

    def reset(self) -> None:
        """Close with SO_LINGER 0, so the peer gets a TCP RST (ECONNRESET), not a FIN."""
        transport = self.transport
        if transport is None or self.gone:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        transport.abort()
        self.stop_writers()

    def stop_writers(self) -> None:
        self.fast_write = None
        if self.in_link is not None:
            self.in_link.refresh_fast_path()


class Connection:
    """Client <-> proxy <-> upstream; closes both sockets together."""

    def __init__(self, proxy: Proxy, client: Side):
        self.proxy = proxy
        self.client = client
        self.upstream: Side | None = None
        self.links: dict[str, Link] = {}
        self.tap: HttpTap | None = None  # the HTTP layer, while the proxy has LLM toxics
        self.closed = False
        proxy.connections.add(self)
        proxy.accepted += 1
        self.connecting: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._connect()
        )

    async def _connect(self) -> None:
        try:
            _, upstream = await open_upstream(self.proxy, lambda: Side(self.proxy, self))
        except OSError:
            self.connecting = None
            self.close()
            return
        self.connecting = None
        if self.closed:
            upstream.close()
            return
        self.upstream = upstream
        client = self.client
        up = Link(self, "upstream", client, upstream)
        down = Link(self, "downstream", upstream, client)
        self.links = {"upstream": up, "downstream": down}
        for direction, link in self.links.items():
            for toxic in self.proxy.toxics[direction]:
                if toxic.llm is None:
                    link.add_toxic(toxic)
        if self.proxy.reads_http:
            self.attach_tap(at_start=True)
        upstream.attach(down, up)
        client.attach(up, down)
        upstream.update_reading()
        client.update_reading()

    # --- the HTTP layer for LLM toxics -----------------------------------------------------

    def attach_tap(self, at_start: bool) -> None:
        """Look into the HTTP exchanges from the next request on (from the first byte of a new
        connection)."""
        if self.tap is not None or self.upstream is None or self.closed:
            if self.tap is not None:
                self.tap.detaching = False
            return
        tap = HttpTap(self, at_start)
        self.tap = tap
        self.client.tap_feed = tap.from_client
        self.upstream.tap_feed = tap.from_upstream
        for link in self.links.values():
            link.refresh_fast_path()

    def toxic_removed(self, name: str, last: bool) -> None:
        if self.tap is not None:
            self.tap.toxic_removed(name)
            if last and self.tap is not None:
                self.tap.detach()

    def drop_tap(self) -> None:
        """Bytes pass straight again (called by the tap once it holds nothing)."""
        self.tap = None
        self.client.tap_feed = None
        if self.upstream is not None:
            self.upstream.tap_feed = None
        for link in self.links.values():
            link.refresh_fast_path()

    def side_lost(self, side: Side) -> None:
        if self.closed:
            return
        if side.in_link is None or side.out_link is None:  # not connected yet
            self.close()
            return
        side.in_link.cancel()  # nothing can be written to a lost socket
        side.out_link.feed_end(EOF)
        self.maybe_close()

    def maybe_close(self) -> None:
        if self.links and all(link.done for link in self.links.values()):
            self.close()

    def _finish(self) -> None:
        self.closed = True
        if self.tap is not None:
            self.tap.cancel()
        for link in self.links.values():
            link.cancel()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self.proxy.connections.discard(self)

    def close(self) -> None:
        if self.closed:
            return
        self._finish()
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()

    def reset(self) -> None:
        if self.closed:
            return
        self._finish()
        self.client.reset()
        if self.upstream is not None:
            self.upstream.reset()
