"""One direction of one proxied connection, and the chain of toxics it runs through.

With no toxic, bytes go straight from the source socket to the destination socket in the
callback that received them: that is the fast path the benchmark measures. With toxics, each
toxic gets a ``Stage`` (a small task with its own queue) and chunks flow stage to stage; stages
are added and removed while the connection is open, without losing or reordering bytes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import TYPE_CHECKING

from .toxics import BEHAVIOURS, Toxic

if TYPE_CHECKING:
    from .connection import Connection, Side

HIGH_WATER = 256 * 1024  # bytes held by toxics before the source socket stops being read
LOW_WATER = 64 * 1024


class End:
    """Marks the end of a stream: ``EOF`` (half-close) or ``CLOSE`` (close the connection)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


EOF = End("EOF")
CLOSE = End("CLOSE")


class Stage:
    """One toxic running on one link; see ``toxics.Behaviour`` for the hooks it calls."""

    def __init__(self, link: Link, toxic: Toxic):
        self.link = link
        self.toxic = toxic
        self.behaviour = BEHAVIOURS[toxic.type]
        self.draw = random.random()  # toxicity is drawn once per connection
        self.was_active = self.active
        self.queue: deque[tuple[bytes | End, float]] = deque()
        self.wakeup = asyncio.Event()
        self.next: Stage | None = None
        self.current: bytes | None = None
        self.holding_end: End | None = None
        self.entered = 0.0
        self.state: dict[str, float] = {}
        self.closed = False  # after close_stream: input is discarded
        self.timers: list[asyncio.TimerHandle] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.draw < self.toxic.toxicity

    def start(self) -> None:
        self.behaviour.on_start(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def put(self, item: bytes | End) -> None:
        self.queue.append((item, time.monotonic()))
        self.wakeup.set()

    async def _run(self) -> None:
        behaviour = self.behaviour
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            item, self.entered = self.queue.popleft()
            if self.closed:
                if not isinstance(item, End):
                    self.link.release(len(item))
                continue
            if isinstance(item, End):
                self.holding_end = item
                if self.active:
                    await behaviour.on_end(self)
                else:
                    self.pass_end()
                return
            self.current = item
            if self.active:
                await behaviour.on_chunk(self)
            if self.current:
                self.emit()

    # --- what behaviours call -------------------------------------------------------------

    def emit(self, size: int | None = None) -> None:
        """Pass the first ``size`` bytes of ``current`` (all by default) to the next stage."""
        data = self.current
        if not data:
            return
        if size is None or size >= len(data):
            self.current = None
        else:
            self.current = data[size:]
            data = data[:size]
        self.link.forward(self, data)

    def drop(self) -> None:
        if self.current:
            self.link.release(len(self.current))
        self.current = None

    def pass_end(self) -> None:
        end, self.holding_end = self.holding_end or EOF, None
        self.link.forward(self, end)

    def close_stream(self) -> None:
        """Stop this direction here and close the connection once the bytes before it left."""
        if self.closed:
            return
        self.closed = True
        self.drop()
        while self.queue:
            item, _ = self.queue.popleft()
            if not isinstance(item, End):
                self.link.release(len(item))
        self.link.forward(self, CLOSE)

    def close_connection(self) -> None:
        self.link.conn.close()

    def reset_connection(self) -> None:
        self.link.conn.reset()

    def call_later(self, delay: float, callback) -> None:
        self.timers.append(asyncio.get_running_loop().call_later(delay, callback))

    # --- lifecycle ------------------------------------------------------------------------

    def cancel(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def take_pending(self) -> list[bytes | End]:
        """Everything this stage still holds, oldest first (it must not run again)."""
        if self.closed:
            return []
        pending: list[bytes | End] = []
        if self.current:
            pending.append(self.current)
        if self.holding_end is not None:
            pending.append(self.holding_end)
        pending.extend(item for item, _ in self.queue)
        self.current = None
        self.holding_end = None
        self.queue.clear()
        return pending


class Link:
    """Bytes from ``src`` to ``dst`` in one direction, through the toxics of that direction."""

    def __init__(self, conn: Connection, direction: str, src: Side, dst: Side):
        self.conn = conn
        self.direction = direction
        self.src = src
        self.dst = dst
        self.stats = conn.proxy.stats[direction]  # [received, sent], shared by the proxy
        self.stages: list[Stage] = []
        self.head: Stage | None = None
        self.inflight = 0  # bytes inside stages
        self.ended = False  # the source has finished
        self.done = False  # the end has been delivered (or the destination is gone)

    # --- data from the source -------------------------------------------------------------

    def refresh_fast_path(self) -> None:
        """Let the source write straight into the destination when no toxic is in between."""
        transport = self.dst.transport
        tap = self.conn.tap
        usable = (
            self.head is None
            # the HTTP layer reads every request, but only the answers a toxic hit
            and (tap is None or (self.direction == "downstream" and tap.response is None))
            and not self.done
            and transport is not None
            and not self.dst.gone
            and not transport.is_closing()
        )
        self.src.fast_write = transport.write if usable else None  # type: ignore[union-attr]
        self.src.fast_stats = self.stats

    def feed(self, data: bytes) -> None:
        self.stats[0] += len(data)
        if self.done:
            return
        head = self.head
        if head is None:
            self.deliver(data)
            return
        self.inflight += len(data)
        head.put(data)
        if self.inflight > HIGH_WATER:
            self.src.update_reading()

    def feed_end(self, end: End) -> None:
        if self.done or self.ended:
            return
        self.ended = True
        if self.head is None:
            self.deliver_end(end)
        else:
            self.head.put(end)

    # --- data leaving the chain -----------------------------------------------------------

    def forward(self, stage: Stage, item: bytes | End) -> None:
        nxt = stage.next
        if nxt is not None:
            nxt.put(item)
        elif isinstance(item, End):
            self.deliver_end(item)
        else:
            self.release(len(item))
            self.deliver(item)

    def deliver(self, data: bytes) -> None:
        if self.done:
            return
        self.stats[1] += len(data)
        self.dst.write(data)

    def deliver_end(self, end: End) -> None:
        if self.done:
            return
        self.done = True
        self.refresh_fast_path()
        if end is CLOSE:
            self.conn.close()
        else:
            self.dst.write_eof()
            self.conn.maybe_close()

    def release(self, size: int) -> None:
        before = self.inflight
        self.inflight -= size
        if before > LOW_WATER >= self.inflight:
            self.src.update_reading()

    @property
    def overfull(self) -> bool:
        return self.inflight > HIGH_WATER

    # --- toxics added and removed while the connection is open ----------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        stage = Stage(self, toxic)
        if self.stages:
            self.stages[-1].next = stage
        else:
            self.head = stage
        self.stages.append(stage)
        self.refresh_fast_path()
        stage.start()

    def remove_toxic(self, name: str) -> None:
        index = next((i for i, s in enumerate(self.stages) if s.toxic.name == name), None)
        if index is None:
            return
        stage = self.stages[index]
        stage.cancel()
        del self.stages[index]
        if index == 0:
            self.head = stage.next
        else:
            self.stages[index - 1].next = stage.next
        # Bytes the stage held go on, ahead of anything its predecessor sends later.
        for item in stage.take_pending():
            if stage.next is not None:
                stage.next.put(item)
            elif isinstance(item, End):
                self.deliver_end(item)
            else:
                self.release(len(item))
                self.deliver(item)
        self.refresh_fast_path()
        stage.behaviour.on_remove(stage)

    def cancel(self) -> None:
        for stage in self.stages:
            stage.cancel()
        self.stages.clear()
        self.head = None
        self.done = True
        self.refresh_fast_path()
