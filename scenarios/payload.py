"""The HTTP request for one arrival: OpenAI-compatible JSON body and headers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .prompts import text
from .schedule import Schedule, earlier_turns
from .spec import Target, Tier

# the turns before a question in its conversation: (question, answer) pairs, first first
History = Sequence[tuple[str, str]]

MOONCAKE_BLOCK_TOKENS = 512


def prompt_parts(schedule: Schedule, i: int, seed: int) -> tuple[str, str]:
    """(shared part, own part) of arrival ``i``'s prompt. The shared part — a system prompt
    of a prefix group, or Mooncake blocks — is identical for every request that shares it;
    in a conversation the own part is this turn's question (the history comes with the
    request, ``prompt_fields``). Word counts come from the schedule's measured sizes when it
    has them (the target's tokens), else one word per token."""
    if schedule.sizes is not None:
        return _sized_parts(schedule, i, seed)
    idx = int(schedule.index[i])
    own_tokens = int(schedule.prompt_tokens[i]) - int(schedule.context_tokens[i])
    shared = ""
    if schedule.blocks is not None and schedule.blocks[i]:
        blocks = schedule.blocks[i]
        # every hash id but the last is a full block of the trace; the rest of the prompt
        # (the last, partial block) is this request's own
        full = blocks[:-1]
        shared = "".join(text(f"block-{h}", MOONCAKE_BLOCK_TOKENS) for h in full)
        own_tokens = max(own_tokens - MOONCAKE_BLOCK_TOKENS * len(full), 1)
    if schedule.prefix_id[i] >= 0:
        shared = text(f"{seed}-prefix-{schedule.prefix_id[i]}", int(schedule.prefix_tokens[i]))
        own_tokens = max(own_tokens - int(schedule.prefix_tokens[i]), 1)
    if schedule.texts is not None and schedule.texts[i] is not None:
        return shared, schedule.texts[i]
    return shared, text(f"{seed}-own-{idx}", own_tokens)


def _sized_parts(schedule: Schedule, i: int, seed: int) -> tuple[str, str]:
    sizes = schedule.sizes
    assert sizes is not None
    shared = ""
    if schedule.blocks is not None and schedule.blocks[i] and sizes.block_words is not None:
        full = zip(schedule.blocks[i][:-1], sizes.block_words[i], strict=False)
        shared = "".join(text(f"block-{h}", w) for h, w in full)
    if schedule.prefix_id[i] >= 0:
        shared = text(f"{seed}-prefix-{schedule.prefix_id[i]}", int(sizes.prefix_words[i]))
    if schedule.texts is not None and schedule.texts[i] is not None:
        return shared, schedule.texts[i]
    own = text(f"{seed}-own-{int(schedule.index[i])}", int(sizes.own_words[i]))
    return shared, own + sizes.filler * int(sizes.own_fill[i])


def stand_in_answer(schedule: Schedule, i: int, seed: int) -> str:
    """The answer turn ``i`` is planned with before the load (its max_tokens, sized in the
    target's tokens when the schedule is sized): the real one replaces it in the history."""
    sizes = schedule.sizes
    words = sizes.answer_words[i] if sizes is not None else schedule.output_tokens[i]
    return text(f"{seed}-answer-{int(schedule.index[i])}", int(words))


def planned_history(schedule: Schedule, previous: np.ndarray, i: int,
                    seed: int) -> list[tuple[str, str]]:  # fmt: skip
    """The turns before ``i`` in its conversation as planned: each question with its stand-in
    answer (``previous`` from ``Schedule.turn_links``)."""
    return [(prompt_parts(schedule, j, seed)[1], stand_in_answer(schedule, j, seed))
            for j in earlier_turns(previous, i)]  # fmt: skip


def prompt_fields(chat: bool, shared: str, own: str, history: History = ()) -> dict[str, Any]:
    """The prompt as the body carries it (and as ``/tokenize`` counts it): the shared part as
    the system message, the conversation's earlier turns, then this question."""
    if not chat:
        return {"prompt": shared + "".join(q + a for q, a in history) + own}
    messages = [{"role": "system", "content": shared}] if shared else []
    for question, answer in history:
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": own})
    return {"messages": messages}


def build_request(target: Target, tier: Tier, prompt: dict[str, Any], max_tokens: int,
                  model: str | None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """The body and headers of one request whose prompt is ``prompt`` (``prompt_fields``)."""
    body: dict[str, Any] = {"max_tokens": int(max_tokens)}
    if model or target.model:
        body["model"] = target.model or model
    body.update(prompt)
    if target.stream:
        body["stream"] = True
        if target.include_usage:
            body["stream_options"] = {"include_usage": True}
    if target.ignore_eos:
        # vLLM: no early stop, and min_tokens holds the length where a server ignores the
        # first; the output is the intended count either way
        body["ignore_eos"] = True
        body["min_tokens"] = body["max_tokens"]
    headers = {"Content-Type": "application/json", **target.headers, **tier.headers}
    return json.dumps(body, separators=(",", ":")).encode(), headers
