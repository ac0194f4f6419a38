"""The gateway's byte-level SSE helpers (``fixtures/gateway/sse.py``) and the relay's screen
(``relay.Relay.screen``): pure functions over bytes, no process, no socket."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aichaos.fixtures.gateway import sse
from aichaos.fixtures.gateway.relay import Relay
from aichaos.fixtures.gateway.upstream import UpstreamError


def event(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def token(text: str, usage: Any = "absent") -> bytes:
    data: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": text}}]}
    if usage != "absent":
        data["usage"] = usage
    return event(data)


ROLE = event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
ERROR = event({"error": {"message": "engine died", "code": 500}})


# ----- split_complete: events split across reads ---------------------------------------------
def test_events_split_across_reads_are_joined_before_they_leave():
    stream = ROLE + token("Hello") + token(" world") + USAGE + sse.DONE
    for size in (1, 2, 7, 50, len(stream)):
        reads = [stream[i : i + size] for i in range(0, len(stream), size)]
        carry, out = b"", []
        for read in reads:
            block, carry = sse.split_complete(carry, read)
            if block:
                assert block.endswith(b"\n\n")  # only whole events leave
                out.append(block)
        assert carry == b"" and b"".join(out) == stream


def test_split_complete_keeps_an_unfinished_event_for_the_next_read():
    assert sse.split_complete(b"", b"data: {") == (b"", b"data: {")
    assert sse.split_complete(b"data: {", b"}\n\ndata: [DO") == (b"data: {}\n\n", b"data: [DO")
    assert sse.split_complete(b"data: [DO", b"NE]\n\n") == (sse.DONE, b"")
    # a blank line split between two reads
    assert sse.split_complete(b"", b"data: 1\n") == (b"", b"data: 1\n")
    assert sse.split_complete(b"data: 1\n", b"\n") == (b"data: 1\n\n", b"")


# ----- first_error: an error event in a block ------------------------------------------------
def test_an_error_event_mid_block_leaves_the_events_before_it():
    block = token("a") + token("b") + ERROR + sse.DONE
    before, message = sse.first_error(block)
    assert before == token("a") + token("b") and message == "engine died"


def test_an_error_event_first_in_a_block_leaves_nothing():
    assert sse.first_error(ERROR + sse.DONE) == (b"", "engine died")
    assert sse.first_error(event({"error": "plain"})) == (b"", "plain")


def test_a_token_whose_text_is_error_is_not_an_error_event():
    block = (
        token("error")
        + token('"error"')
        + event({"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]})
    )
    assert b'"error"' in block  # it passes the prefilter, and only costs a parse
    assert sse.first_error(block) is None


def test_an_event_that_is_not_json_is_not_an_error_event():
    assert sse.first_error(b'data: {"error": \n\n') is None


# ----- drop_usage_only -----------------------------------------------------------------------
def test_the_usage_only_event_is_dropped_and_the_rest_kept():
    block = token("a") + USAGE + sse.DONE
    assert sse.drop_usage_only(block) == token("a") + sse.DONE
    spaced = b'data: {"choices": [], "usage": {"completion_tokens": 1}}\n\n'
    assert sse.drop_usage_only(token("a") + spaced) == token("a")


def test_usage_null_on_every_chunk_is_not_dropped_nor_parsed():
    block = token("a", usage=None) + token("b", usage=None) + sse.DONE
    assert b'"usage":null' in block
    assert sse.drop_usage_only(block) is block  # the prefilter says no: nothing parsed


def test_a_chunk_with_choices_and_usage_is_kept():
    # continuous usage stats: usage on a token chunk, which must reach the client
    block = token("a", usage={"completion_tokens": 1})
    assert sse.drop_usage_only(block) == block


# ----- has_done, first_token -----------------------------------------------------------------
def test_done_is_an_event_not_a_token_text():
    assert sse.has_done(token("a") + sse.DONE)
    assert sse.has_done(sse.DONE)
    assert not sse.has_done(token("data: [DONE]"))
    assert not sse.has_done(b"data: [DONE]x\n\n")


@pytest.mark.parametrize(
    ("block", "found"),
    [(ROLE, False), (ROLE + token(""), False), (ROLE + token("Hi"), True), (token("Hi"), True)],
)
def test_first_token_finds_content(block, found):
    assert sse.first_token(block, "u") is found


@pytest.mark.parametrize(
    ("block", "kind"),
    [
        (ROLE + sse.DONE, "incomplete_stream"),
        (ROLE + ERROR, "stream_error"),
        (b"data: {nope\n\n", "reset"),
        (b"data: [1]\n\n", "reset"),
    ],
)
def test_first_token_raises_what_ends_a_stream_before_a_token(block, kind):
    with pytest.raises(UpstreamError) as caught:
        sse.first_token(block, "u")
    assert caught.value.kind == kind


# ----- the cache's lines, whole answers, replays ---------------------------------------------
def test_data_lines_keep_every_data_line_but_done():
    blocks = [b": comment\n\n" + ROLE + token("a"), USAGE + sse.DONE]
    lines = sse.data_lines(blocks)
    assert lines == [x.decode().rstrip("\n") for x in (ROLE, token("a"), USAGE)]


def test_a_whole_answer_from_lines():
    choice = {"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}
    final = event({"model": "m", "choices": [choice]})
    lines = sse.data_lines([ROLE + token("Hi") + final + USAGE + sse.DONE])
    text, usage, finish, model = sse.whole_answer(lines)
    assert (text, finish, model) == ("Hi!", "stop", "m")
    assert usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_a_replay_drops_usage_unless_asked_and_ends_with_done():
    lines = sse.data_lines([ROLE + token("a") + USAGE + sse.DONE])
    assert sse.replay(lines, include_usage=True) == ROLE + token("a") + USAGE + sse.DONE
    assert sse.replay(lines, include_usage=False) == ROLE + token("a") + sse.DONE


# ----- the relay's screen --------------------------------------------------------------------
class FakeStream:
    def __init__(self) -> None:
        self.failed: list[UpstreamError] = []

    def fail(self, exc: UpstreamError) -> None:
        self.failed.append(exc)


def test_the_screen_relays_what_came_before_an_error_event_and_nothing_after():
    stream = FakeStream()
    relay = Relay(stream, include_usage=False, keep=[])  # type: ignore[arg-type]
    assert relay.screen(token("a")) == token("a")
    assert relay.screen(token("b") + ERROR + token("c")) == token("b")
    assert [e.kind for e in stream.failed] == ["stream_error"]
    assert str(stream.failed[0]) == "engine died" and relay.error is stream.failed[0]
    assert relay.screen(token("d") + sse.DONE) == b""  # the stream is over for the client
    assert relay.keep == [token("a"), token("b")]


def test_the_screen_keeps_the_usage_event_for_the_cache_and_drops_it_for_the_client():
    relay = Relay(FakeStream(), include_usage=False, keep=[])  # type: ignore[arg-type]
    assert relay.screen(token("a") + USAGE + sse.DONE) == token("a") + sse.DONE
    assert relay.keep == [token("a") + USAGE + sse.DONE]
    asked = Relay(FakeStream(), include_usage=True, keep=None)  # type: ignore[arg-type]
    assert asked.screen(token("a") + USAGE + sse.DONE) == token("a") + USAGE + sse.DONE
    assert asked.screen(token("error")) == token("error")
