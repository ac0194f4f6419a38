"""The stopwatch's classification and gateway headers, without a network."""

from __future__ import annotations

import errno
import socket

import gevent
from geventhttpclient.response import HTTPConnectionClosed

from aichaos.rundir import ERROR_KINDS
from aichaos.scenarios.stopwatch import (
    Planned,
    _headers_into,
    classify_exception,
    new_record,
    status_kind,
)


class Headers(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


def record():
    return new_record(Planned("r-1", "free", 100.0, 12), "w0", "steady")


def test_gateway_headers_say_who_served_and_how():
    r = record()
    _headers_into(r, Headers({"x-served-by": "cache", "x-degraded": "none"}))
    assert (r["served_by"], r["cached"], r["degraded"]) == ("cache", True, False)
    r = record()
    _headers_into(r, Headers({"x-served-by": "fallback", "x-degraded": "retrieval"}))
    assert (r["served_by"], r["cached"], r["degraded"]) == ("fallback", False, True)
    r = record()
    _headers_into(r, Headers({}))  # a plain vLLM endpoint says nothing
    assert (r["served_by"], r["cached"], r["degraded"]) == (None, None, None)


def test_status_codes_and_exceptions_map_to_error_kinds():
    assert [status_kind(s) for s in (429, 400, 404, 500, 503, 529)] == [
        "http_429", "http_4xx", "http_4xx", "http_5xx", "http_5xx", "http_5xx",
    ]  # fmt: skip
    cases = [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), False, "connect"),
        (socket.gaierror("no such host"), False, "connect"),
        (gevent.Timeout(1), False, "timeout"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), False, "reset"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True, "reset"),
        (HTTPConnectionClosed("closed"), False, "reset"),
        (HTTPConnectionClosed("closed"), True, "incomplete_stream"),
    ]
    for exc, streaming, kind in cases:
        got, detail = classify_exception(exc, streaming)
        assert got == kind and got in ERROR_KINDS and detail


def test_a_new_record_has_every_column_and_starts_as_an_error():
    from aichaos.rundir import REQUEST_COLUMNS

    r = record()
    assert tuple(r) == REQUEST_COLUMNS
    assert r["status"] == "error" and r["t_scheduled"] == 100.0 and r["itl_s"] == []
