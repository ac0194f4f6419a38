"""The HTTP request for one arrival: OpenAI-compatible JSON body and headers."""

from __future__ import annotations

import json
from typing import Any

from .prompts import text
from .schedule import Schedule
from .spec import Target, Tier

MOONCAKE_BLOCK_TOKENS = 512


def prompt_parts(schedule: Schedule, i: int, seed: int) -> tuple[str, str]:
    """(shared part, own part) of arrival ``i``'s prompt. The shared part — a system prompt
    of a prefix group, Mooncake blocks, or earlier turns of a session — is identical for
    every request that shares it. Word counts come from the schedule's measured sizes when it
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
    if schedule.session_id[i] >= 0 and schedule.context_tokens[i] > 0:
        shared += text(f"{seed}-session-{schedule.session_id[i]}", int(schedule.context_tokens[i]))
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
    if schedule.session_id[i] >= 0 and sizes.context_words[i] > 0:
        shared += text(f"{seed}-session-{schedule.session_id[i]}", int(sizes.context_words[i]))
    if schedule.texts is not None and schedule.texts[i] is not None:
        return shared, schedule.texts[i]
    own = text(f"{seed}-own-{int(schedule.index[i])}", int(sizes.own_words[i]))
    return shared, own + sizes.filler * int(sizes.own_fill[i])


def prompt_fields(chat: bool, shared: str, own: str) -> dict[str, Any]:
    """The prompt as the body carries it (and as ``/tokenize`` counts it)."""
    if not chat:
        return {"prompt": shared + own}
    messages = [{"role": "system", "content": shared}] if shared else []
    messages.append({"role": "user", "content": own})
    return {"messages": messages}


def build_request(target: Target, tier: Tier, schedule: Schedule, i: int, seed: int,
                  model: str | None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    body: dict[str, Any] = {"max_tokens": int(schedule.output_tokens[i])}
    if model or target.model:
        body["model"] = target.model or model
    body.update(prompt_fields(target.chat, *prompt_parts(schedule, i, seed)))
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
