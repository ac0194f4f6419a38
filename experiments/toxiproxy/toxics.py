"""The toxics: their JSON shape, validation, and what each does to the bytes of one direction.

A toxic is configuration shared by every connection of a proxy; a ``Stage`` (see ``link.py``)
runs it on one direction of one connection. The behaviours below only see a ``Stage``: the
chunk it holds (``stage.current``), ``stage.emit()`` to pass bytes on, ``stage.drop()`` to
discard them, and the connection-level actions (``close_stream``, ``reset_connection``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import INVALID_STREAM, INVALID_TOXIC_TYPE, bad_body
from .llm_toxics import LLM_TOXICS, LlmToxic, parse_llm_attributes

if TYPE_CHECKING:
    from .link import Stage

DIRECTIONS = ("upstream", "downstream")  # upstream: client -> server; downstream: server -> client


@dataclass
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)
    llm: LlmToxic | None = None  # the checked attributes of an LLM toxic (``llm_toxics``)
    seen: dict[bytes, int] = field(default_factory=dict)  # LLM: request bodies seen, how often
    requests: int = 0  # LLM: requests drawn, and hit
    hits: int = 0

    def to_json(self) -> dict[str, Any]:
        attributes = self.llm.model_dump() if self.llm is not None else dict(self.attributes)
        return {
            "attributes": attributes,
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


class Behaviour:
    """Pass-through; subclasses override the hooks they need."""

    attributes: tuple[str, ...] = ()

    def on_start(self, stage: Stage) -> None:
        """The toxic begins on a connection (when it opens, or when the toxic is added)."""

    async def on_chunk(self, stage: Stage) -> None:
        """Handle ``stage.current``; whatever is left in it afterwards is passed on."""

    async def on_end(self, stage: Stage) -> None:
        """The source finished (EOF) or an earlier toxic closed the stream."""
        stage.pass_end()

    def on_remove(self, stage: Stage) -> None:
        """The toxic was removed while the connection is open."""


class Noop(Behaviour):
    pass


class Latency(Behaviour):
    """Each chunk leaves ``latency`` ± ``jitter`` ms after it reached this toxic, in order."""

    attributes = ("latency", "jitter")

    async def on_chunk(self, stage: Stage) -> None:
        attrs = stage.toxic.attributes
        delay = attrs["latency"]
        jitter = attrs["jitter"]
        if jitter > 0:
            delay += random.uniform(-jitter, jitter)
        wait = stage.entered + delay / 1000.0 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


class Bandwidth(Behaviour):
    """At most ``rate`` KB/s (1 KB = 1000 bytes); big chunks leave in 100 ms slices."""

    attributes = ("rate",)

    async def on_chunk(self, stage: Stage) -> None:
        while stage.current:
            rate = stage.toxic.attributes["rate"] * 1000  # bytes per second; 0 = unlimited
            if rate <= 0:
                return
            piece = max(1, rate // 10)
            size = min(piece, len(stage.current))
            now = time.monotonic()
            clock = max(stage.state.get("clock", now), now) + size / rate
            stage.state["clock"] = clock
            if clock > now:
                await asyncio.sleep(clock - now)
            stage.emit(size)


class SlowClose(Behaviour):
    """Hold the close (EOF or a close from an earlier toxic) for ``delay`` ms."""

    attributes = ("delay",)

    async def on_end(self, stage: Stage) -> None:
        delay = stage.toxic.attributes["delay"]
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        stage.pass_end()


class Timeout(Behaviour):
    """Let nothing through; close the connection after ``timeout`` ms (0: never, until the
    toxic is removed, which closes it: the dropped bytes left the stream unusable)."""

    attributes = ("timeout",)

    def on_start(self, stage: Stage) -> None:
        timeout = stage.toxic.attributes["timeout"]
        if stage.active and timeout > 0:
            stage.call_later(timeout / 1000.0, stage.close_stream)

    async def on_chunk(self, stage: Stage) -> None:
        stage.drop()

    def on_remove(self, stage: Stage) -> None:
        if stage.was_active:
            stage.close_connection()


class ResetPeer(Behaviour):
    """On the first bytes (or EOF), wait ``timeout`` ms, then reset both sockets (TCP RST)."""

    attributes = ("timeout",)

    async def on_chunk(self, stage: Stage) -> None:
        stage.drop()
        await self._reset(stage)

    async def on_end(self, stage: Stage) -> None:
        await self._reset(stage)

    async def _reset(self, stage: Stage) -> None:
        timeout = stage.toxic.attributes["timeout"]
        if timeout > 0:
            await asyncio.sleep(timeout / 1000.0)
        stage.reset_connection()


class Slicer(Behaviour):
    """Cut chunks into pieces of ``average_size`` ± ``size_variation`` bytes, ``delay`` µs
    apart, the way a real network fragments a write."""

    attributes = ("average_size", "size_variation", "delay")

    async def on_chunk(self, stage: Stage) -> None:
        while stage.current:
            attrs = stage.toxic.attributes
            average = attrs["average_size"]
            if average <= 0:
                return
            variation = min(attrs["size_variation"], average - 1)
            size = average + random.randint(-variation, variation) if variation > 0 else average
            if size >= len(stage.current):
                return
            stage.emit(size)
            delay = attrs["delay"]
            # Yield even at 0 µs so each piece leaves in its own write.
            await asyncio.sleep(delay / 1_000_000.0 if delay > 0 else 0)


class LimitData(Behaviour):
    """Pass ``bytes`` bytes in this direction, then close the connection."""

    attributes = ("bytes",)

    async def on_chunk(self, stage: Stage) -> None:
        sent = stage.state.get("sent", 0)
        remaining = max(0, stage.toxic.attributes["bytes"] - sent)
        size = min(remaining, len(stage.current or b""))
        if size:
            stage.emit(size)
            stage.state["sent"] = sent + size
        if size == remaining:
            stage.drop()
            stage.close_stream()


BEHAVIOURS: dict[str, Behaviour] = {
    "noop": Noop(),
    "latency": Latency(),
    "bandwidth": Bandwidth(),
    "slow_close": SlowClose(),
    "timeout": Timeout(),
    "reset_peer": ResetPeer(),
    "slicer": Slicer(),
    "limit_data": LimitData(),
}


def _int_attribute(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_body(f"attribute {name!r} must be a number, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise bad_body(f"attribute {name!r} must be an integer, got {value!r}")
    if value < 0:
        raise bad_body(f"attribute {name!r} must not be negative, got {value!r}")
    return int(value)


TOXIC_TYPES = (*BEHAVIOURS, *LLM_TOXICS)


def parse_attributes(kind: str, raw: Any, base: dict[str, int] | None = None) -> dict[str, int]:
    """Known attributes of the TCP toxic ``kind`` from ``raw``; missing ones keep ``base``
    (or 0); unknown ones are ignored, as Toxiproxy does."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_body("attributes must be an object")
    out = {}
    for name in BEHAVIOURS[kind].attributes:
        out[name] = (base or {}).get(name, 0)
        if name in raw and raw[name] is not None:
            out[name] = _int_attribute(name, raw[name])
    return out


def parse_toxicity(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise bad_body(f"toxicity must be a number, got {raw!r}")
    if not 0.0 <= raw <= 1.0:
        raise bad_body(f"toxicity must be between 0 and 1, got {raw!r}")
    return float(raw)


def parse_new_toxic(body: Any) -> Toxic:
    """A toxic from a create request, checked in the order Toxiproxy checks it."""
    if not isinstance(body, dict):
        raise bad_body("expected a JSON object")
    stream = body.get("stream")
    if stream in (None, ""):
        stream = "downstream"
    if stream not in DIRECTIONS:
        raise INVALID_STREAM
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in TOXIC_TYPES:
        raise INVALID_TOXIC_TYPE
    if kind in LLM_TOXICS and stream != "downstream":
        raise bad_body(f"{kind} acts on the answers: stream must be downstream, got {stream!r}")
    name = body.get("name")
    if name in (None, ""):
        name = f"{kind}_{stream}"
    if not isinstance(name, str):
        raise bad_body(f"name must be a string, got {name!r}")
    toxicity = parse_toxicity(body["toxicity"]) if body.get("toxicity") is not None else 1.0
    toxic = Toxic(name=name, type=kind, stream=stream, toxicity=toxicity)
    set_attributes(toxic, body.get("attributes"))
    return toxic


def set_attributes(toxic: Toxic, raw: Any) -> None:
    """Merge ``raw`` into the toxic's attributes, every one checked before any changes."""
    if toxic.type in LLM_TOXICS:
        base = toxic.llm.model_dump() if toxic.llm is not None else None
        toxic.llm = parse_llm_attributes(toxic.type, raw, base)
        toxic.attributes = {}
    else:
        toxic.attributes = parse_attributes(toxic.type, raw, toxic.attributes)
