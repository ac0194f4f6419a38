"""The stopwatch: one streamed request, timed exactly as DESIGN defines the metrics.

Runs inside a Locust (gevent) process. The response is read line by line straight from the
socket with geventhttpclient's ``readline`` — Locust's ``FastHttpSession.iter_lines`` waits
for 1 KB blocks and would report TTFT late. Durations use ``time.perf_counter``; the
record's timestamps are epoch seconds derived from it against the run's t0.

- TTFT: send → first SSE event with a non-empty content delta (``text`` for completions).
- E2E: send → last token-bearing event (not the usage event, not ``[DONE]``).
- ITL: every gap between successive token-bearing events.
- TPOT: (E2E − TTFT) / (output_tokens − 1) when output_tokens > 1.
- Output tokens: ``usage.completion_tokens`` if the stream carries it, else counted events.

A conversation's turn that has a next one also keeps its answer's text (every event parsed),
since the next turn sends it back.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

from aichaos.rundir import RequestRecord

_MAX_ERROR_BODY = 2048


@dataclass
class Planned:
    """What the schedule asked for one request (filled into its record)."""

    request_id: str
    tier: str
    t_scheduled: float  # epoch
    prompt_tokens: int  # intended, in the target's tokens (see length_source)
    length_source: str = "estimate"
    capped: bool = False
    session: str | None = None  # the conversation it is a turn of
    turn: int | None = None  # 1 for a conversation's first turn


def classify_exception(exc: BaseException, streaming: bool) -> tuple[str, str]:
    """(error_kind, detail) for an exception raised while sending or reading."""
    detail = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, gevent.Timeout | socket.timeout | TimeoutError):
        return "timeout", detail
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return "connect", detail
    err = getattr(exc, "errno", None)
    if err in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return "connect", detail
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or err in (
        errno.ECONNRESET,
        errno.EPIPE,
    ):
        return "reset", detail
    if streaming:
        # the status line came, then the body ended early or broke (truncated chunked body)
        return "incomplete_stream", detail
    if isinstance(exc, HTTPConnectionClosed | HTTPParseError):
        return "reset", detail
    return "connect", detail


def status_kind(status: int) -> str:
    if status == 429:
        return "http_429"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def new_record(planned: Planned, worker: str, scenario: str) -> RequestRecord:
    return {
        "request_id": planned.request_id,
        "worker": worker,
        "scenario": scenario,
        "tier": planned.tier,
        "t_scheduled": planned.t_scheduled,
        "t_sent": None,
        "ttft_s": None,
        "e2e_s": None,
        "done_s": None,
        "tpot_s": None,
        "itl_s": [],
        "prompt_tokens": planned.prompt_tokens,
        "output_tokens": None,
        "token_source": None,
        "status": "error",
        "http_status": None,
        "error_kind": None,
        "error_detail": None,
        "served_by": None,
        "cached": None,
        "degraded": None,
        "intended_prompt_tokens": planned.prompt_tokens,
        "served_prompt_tokens": None,
        "length_source": planned.length_source,
        "length_capped": planned.capped,
        "session": planned.session,
        "turn": planned.turn,
    }


def _headers_into(record: RequestRecord, response: Any) -> None:
    served = response.get("x-served-by")
    if served:
        record["served_by"] = served
        record["cached"] = served == "cache"
    degraded = response.get("x-degraded")
    if degraded is not None:
        record["degraded"] = degraded.strip().lower() not in ("", "none")


def timed_request(client: Any, path: str, body: bytes, headers: dict[str, str], chat: bool,
                  stream: bool, timeout_s: float, record: RequestRecord,
                  sent_at: tuple[float, float],
                  answer: list[str] | None = None) -> None:  # fmt: skip
    """Send one request on ``client`` (a geventhttpclient ``HTTPClient``) and fill ``record``.
    ``sent_at`` is (perf_counter at t0, epoch t0): t_sent = t0 + (now − perf at t0). With
    ``answer``, the answer's text is appended to it, piece by piece."""
    perf_t0, epoch_t0 = sent_at
    start = time.perf_counter()
    record["t_sent"] = epoch_t0 + (start - perf_t0)
    streaming = False
    response = None
    try:
        with gevent.Timeout(timeout_s):
            response = client.request("POST", path, body=body, headers=headers)
            record["http_status"] = status = response.status_code
            _headers_into(record, response)
            if status != 200:
                text = response.read(_MAX_ERROR_BODY).decode("utf-8", "replace")
                record["error_kind"] = status_kind(status)
                record["error_detail"] = text[:300]
                return
            streaming = True
            if stream:
                _read_stream(response, chat, start, record, answer)
            else:
                _read_whole(response, chat, start, record, answer)
    except gevent.Timeout:
        record["error_kind"], record["error_detail"] = "timeout", f"no answer in {timeout_s:g}s"
    except Exception as exc:  # every failure becomes a classified record, never a crash
        record["error_kind"], record["error_detail"] = classify_exception(exc, streaming)
    finally:
        record["done_s"] = time.perf_counter() - start
        if response is not None and record["error_kind"] is not None:
            _discard(response)


def _discard(response: Any) -> None:
    """Close the connection of a failed response: unread bytes on it would corrupt the next
    request if it went back to the pool (``release`` would return it there)."""
    sock, pool = getattr(response, "_sock", None), getattr(response, "_pool", None)
    response._sock = response._pool = None
    if sock is not None and pool is not None:
        pool.release_socket(sock)
    elif sock is not None:
        sock.close()


def _read_stream(response: Any, chat: bool, start: float, record: RequestRecord,
                 answer: list[str] | None) -> None:  # fmt: skip
    first = last = None
    itl: list[float] = []
    chunks = 0
    usage_out = usage_prompt = None
    done = False
    readline = response.readline
    loads = json.loads
    token_mark = b'"content":"' if chat else b'"text":"'
    empty_mark = b'"content":""' if chat else b'"text":""'
    while True:
        line = readline(b"\n")
        if not line:
            break
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event: lines
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue  # read on to the end of the body so the connection can be reused
        now = time.perf_counter()
        # fast path for the common compact token event (vLLM, OpenAI): no JSON parse needed
        # to know it carries a non-empty delta; anything else is parsed in full below (and
        # every event when the answer's text is kept)
        fast = answer is None and token_mark in payload and empty_mark not in payload
        if fast and b'"usage":{' not in payload:
            if first is None:
                first = now
            else:
                itl.append(now - last)
            last = now
            chunks += 1
            continue
        try:
            event = loads(payload)
        except ValueError:
            record["error_kind"], record["error_detail"] = "stream_error", "unparsable event"
            return
        if "error" in event and not event.get("choices"):
            err = event["error"]
            msg = err.get("message", "") if isinstance(err, dict) else str(err)
            record["error_kind"], record["error_detail"] = "stream_error", str(msg)[:300]
            _finish_timing(record, start, first, last, itl, chunks, usage_out, usage_prompt)
            return
        for choice in event.get("choices") or ():
            content = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if content:
                if first is None:
                    first = now
                else:
                    itl.append(now - last)
                last = now
                chunks += 1
                if answer is not None:
                    answer.append(content)
                break
        usage = event.get("usage")
        if usage:
            usage_out = usage.get("completion_tokens", usage_out)
            usage_prompt = usage.get("prompt_tokens", usage_prompt)
    _finish_timing(record, start, first, last, itl, chunks, usage_out, usage_prompt)
    if not done:
        record["error_kind"] = "incomplete_stream"
        record["error_detail"] = "the stream ended without [DONE]"
        return
    record["status"] = "ok"


def _finish_timing(record: RequestRecord, start: float, first: float | None, last: float | None,
                   itl: list[float], chunks: int, usage_out: int | None,
                   usage_prompt: int | None) -> None:  # fmt: skip
    if first is not None:
        record["ttft_s"] = first - start
        record["e2e_s"] = last - start
    record["itl_s"] = itl
    if usage_out is not None:
        record["output_tokens"], record["token_source"] = int(usage_out), "usage"
    else:
        record["output_tokens"], record["token_source"] = chunks, "counted"
    if usage_prompt is not None:
        record["prompt_tokens"] = record["served_prompt_tokens"] = int(usage_prompt)
    out = record["output_tokens"]
    if first is not None and out and out > 1:
        record["tpot_s"] = (last - first) / (out - 1)


def _read_whole(response: Any, chat: bool, start: float, record: RequestRecord,
                answer: list[str] | None) -> None:  # fmt: skip
    body = response.read()
    end = time.perf_counter()
    data = json.loads(body)
    choice = (data.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    if answer is not None and content:
        answer.append(content)
    usage = data.get("usage") or {}
    # a non-streamed answer arrives whole: its first token comes with its last
    record["ttft_s"] = record["e2e_s"] = end - start
    if "completion_tokens" in usage:
        record["output_tokens"], record["token_source"] = usage["completion_tokens"], "usage"
    else:
        record["output_tokens"] = len((content or "").split())
        record["token_source"] = "counted"
    if "prompt_tokens" in usage:
        record["prompt_tokens"] = record["served_prompt_tokens"] = int(usage["prompt_tokens"])
    record["status"] = "ok"  # TPOT stays null: a whole answer has no per-token timing
