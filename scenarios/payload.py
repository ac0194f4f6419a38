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
    every request that shares it."""
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


def build_request(target: Target, tier: Tier, schedule: Schedule, i: int, seed: int,
                  model: str | None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    shared, own = prompt_parts(schedule, i, seed)
    body: dict[str, Any] = {"max_tokens": int(schedule.output_tokens[i])}
    if model or target.model:
        body["model"] = target.model or model
    if target.chat:
        messages = []
        if shared:
            messages.append({"role": "system", "content": shared})
        messages.append({"role": "user", "content": own})
        body["messages"] = messages
    else:
        body["prompt"] = shared + own
    if target.stream:
        body["stream"] = True
        if target.include_usage:
            body["stream_options"] = {"include_usage": True}
    if target.ignore_eos:
        body["ignore_eos"] = True
    headers = {"Content-Type": "application/json", **target.headers, **tier.headers}
    return json.dumps(body, separators=(",", ":")).encode(), headers
