"""LLM toxics: faults of an LLM provider, injected per HTTP request and per SSE event.

The TCP toxics (``toxics.py``) act on the bytes of one direction. These act on one HTTP/1.1
exchange (a request and its response) of a proxy carrying an OpenAI-compatible API; the
per-connection layer that finds the exchanges is ``http_tap.py``. Their attributes are checked
by the models below: a wrong or unknown attribute is the API's 400 naming it. Times are in
milliseconds and counts in content events (SSE events carrying generated text), as the TCP
toxics count in milliseconds and bytes.

``toxicity`` is the share of requests hit, decided for each request from the toxic's ``seed``,
its name and the request itself (its body, and how many identical bodies came before), so the
same load with the same seed hits the same requests, however the connections interleave.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aichaos.fixtures.llm_sim.protocol import error_body, provider_error

from .errors import bad_body

Ms = Annotated[int, Field(ge=0, le=3_600_000)]  # milliseconds, at most an hour
Events = Annotated[int, Field(ge=0, le=1_000_000)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class LlmToxic(BaseModel):
    """Attributes every LLM toxic has; ``kind`` says where in the exchange it acts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: ClassVar[Literal["request", "response"]] = "response"
    seed: Seed = 0


class HttpError(LlmToxic):
    """Answer the request with ``status`` instead of forwarding it, in a provider's shape."""

    kind: ClassVar[Literal["request", "response"]] = "request"
    status: Annotated[int, Field(ge=400, le=599)] = 429
    shape: Literal["auto", "openai", "anthropic", "vllm"] = "auto"
    retry_after: Annotated[int, Field(ge=0, le=86_400)] = 1  # seconds; 0: no Retry-After


class Hang(LlmToxic):
    """Read the request and never answer; after ``timeout`` ms (0: never) close the
    connection. Removing the toxic closes the connections it holds."""

    kind: ClassVar[Literal["request", "response"]] = "request"
    timeout: Ms = 0


class ErrorEvent(LlmToxic):
    """After ``after`` content events, an error event (vLLM's shape: ``data: {"error":
    {...}}``) and ``[DONE]`` instead of the rest of the stream."""

    after: Events = 0
    status: Annotated[int, Field(ge=400, le=599)] = 500
    message: Annotated[str, Field(min_length=1, max_length=500)] = "Internal server error"


class Truncate(LlmToxic):
    """After ``after`` content events, the connection closes: no ``[DONE]``, no last chunk."""

    after: Events = 0


class Stall(LlmToxic):
    """After ``after`` content events, nothing for ``duration`` ms, then the rest."""

    after: Events = 0
    duration: Ms = 10_000


class FirstTokenDelay(LlmToxic):
    """The first content event (and so everything after it) ``delay`` ms late. A response that
    is not an event stream is delayed whole."""

    delay: Ms = 1_000


class SlowTokens(LlmToxic):
    """Content events at least ``delay`` ms apart: a provider generating slowly."""

    delay: Ms = 100


LLM_TOXICS: dict[str, type[LlmToxic]] = {
    "http_error": HttpError,
    "hang": Hang,
    "error_event": ErrorEvent,
    "truncate": Truncate,
    "stall": Stall,
    "first_token_delay": FirstTokenDelay,
    "slow_tokens": SlowTokens,
}


def _field_expectation(model: type[LlmToxic], name: str) -> str:
    field = model.model_fields[name]
    kind = field.annotation
    text = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
    bounds = [m for m in field.metadata if hasattr(m, "ge") or hasattr(m, "le")]
    low = next((m.ge for m in bounds if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in bounds if getattr(m, "le", None) is not None), None)
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    if "Literal" in text:
        return "one of " + ", ".join(repr(v) for v in kind.__args__)  # type: ignore[union-attr]
    return "a string" if kind is str else text


def parse_llm_attributes(kind: str, raw: Any, base: dict[str, Any] | None = None) -> LlmToxic:
    """The attributes of an LLM toxic of ``kind``; missing ones keep ``base`` (or defaults).
    A bad or unknown attribute raises the API's 400 naming it and what it expects."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_body("attributes must be an object")
    model = LLM_TOXICS[kind]
    values = {**(base or {}), **{k: v for k, v in raw.items() if v is not None}}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"]) or "attributes"
        if error["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            raise bad_body(f"{kind} has no attribute {name!r} (it has {known})") from None
        expected = _field_expectation(model, name) if name in model.model_fields else "valid"
        got = error.get("input")
        raise bad_body(f"attribute {name!r} of {kind} must be {expected}, got {got!r}") from None


def draw(seed: int, toxic: str, body_digest: bytes, occurrence: int) -> float:
    """A number in [0, 1) fixed by the seed, the toxic and the request (its body and how
    many identical bodies the toxic saw before it)."""
    key = f"{seed}\0{toxic}\0{occurrence}\0".encode() + body_digest
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return value / 2.0**64


def error_response(toxic: HttpError) -> bytes:
    """The whole HTTP/1.1 response of an ``http_error`` toxic (keep-alive, JSON body)."""
    shape = toxic.shape
    if shape == "auto":
        shape = "anthropic" if toxic.status == 529 else "openai"
    body, headers = provider_error(toxic.status, float(toxic.retry_after or 1))
    if shape == "anthropic":
        kinds = {529: "overloaded_error", 429: "rate_limit_error", 500: "api_error"}
        kind = kinds.get(toxic.status, "api_error")
        message = "Overloaded" if toxic.status == 529 else body["error"]["message"]
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif shape == "vllm":
        body = error_body(body["error"]["message"], _vllm_type(toxic.status), toxic.status)
    elif toxic.status == 529:  # OpenAI's shape for Anthropic's status
        body = error_body("Overloaded", "overloaded_error", 529)
    if toxic.retry_after == 0:
        headers = {k: v for k, v in headers.items() if k.lower() != "retry-after"}
    elif "Retry-After" not in headers:
        headers["Retry-After"] = str(toxic.retry_after)
    payload = json.dumps(body).encode()
    head = [f"HTTP/1.1 {toxic.status} {_reason(toxic.status)}", "content-type: application/json",
            f"content-length: {len(payload)}"]  # fmt: skip
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def error_event(toxic: ErrorEvent) -> bytes:
    """The SSE events that end a stream an ``error_event`` toxic broke."""
    body = error_body(toxic.message, _vllm_type(toxic.status), toxic.status)
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n".encode()


def _vllm_type(status: int) -> str:
    return {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
            503: "ServiceUnavailableError"}.get(status, "InternalServerError")  # fmt: skip


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"
