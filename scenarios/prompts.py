"""Prompt text: synthetic prompts of a given token count, and prompts read from files.

Synthetic text is made of short words that the vLLM-compatible simulator counts as one token
each; a real tokenizer counts some of them as two or three, so ``sizing`` measures each word in
the target's tokens and asks for as many words as make the intended count. Text is
deterministic from a key, so equal keys give equal text: a shared prefix (a system prompt, a
Mooncake block, an earlier turn of a session) is
byte-identical across requests and a prefix cache can hit on it.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np

from aichaos.rundir import InputError

PROMPT_FORMATS = ("sharegpt", "jsonl")
_POOL_SIZE = 1 << 16
_TOKEN_RE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fe"]
WORDS = tuple(" " + a + b for a in _SYLLABLES for b in _SYLLABLES)  # 144 short words
# appended to reach a count the words alone step over (a word may cost 2 tokens)
FILLERS = (".", ",", " " + _SYLLABLES[0], " a")
POOL_IDS = np.random.default_rng(20240601).integers(0, len(WORDS), _POOL_SIZE)
_POOL = [WORDS[i] for i in POOL_IDS]


def pool_start(key: str) -> int:
    return zlib.crc32(key.encode()) % _POOL_SIZE


def text(key: str, tokens: int) -> str:
    """``tokens`` words (as many words as the simulator's tokens), deterministic from ``key``:
    ``text(key, n)`` is a prefix of ``text(key, n + 1)``."""
    if tokens <= 0:
        return ""
    start = pool_start(key)
    end = start + tokens
    if end <= _POOL_SIZE:
        return "".join(_POOL[start:end])
    whole, rest = divmod(end, _POOL_SIZE)
    parts = _POOL[start:] + _POOL * (whole - 1) + _POOL[:rest]
    return "".join(parts)


def count_tokens(s: str) -> int:
    """A tokenizer-free estimate (words and punctuation marks), as the simulator counts."""
    return len(_TOKEN_RE.findall(s))


def read_prompts(path: Path, fmt: str, file: str, field: str) -> list[tuple[str, int | None]]:
    """(prompt, output tokens if the file says) pairs. ShareGPT: the first human turn of each
    conversation, with the following gpt turn's length as the output length; JSONL: one
    object a line with ``prompt`` (or ``text``) and optionally ``output_tokens``."""
    if not path.is_file():
        raise InputError(file, field, "an existing prompts file", str(path))
    out: list[tuple[str, int | None]] = []
    try:
        if fmt == "sharegpt":
            for item in json.loads(path.read_text(encoding="utf-8")):
                turns = item.get("conversations") or item.get("conversation") or []
                for i, turn in enumerate(turns):
                    if turn.get("from") in ("human", "user") and turn.get("value"):
                        reply = turns[i + 1].get("value", "") if i + 1 < len(turns) else ""
                        out.append((turn["value"], count_tokens(reply) or None))
                        break
        else:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    prompt = row.get("prompt", row.get("text"))
                    if not isinstance(prompt, str):
                        raise ValueError("a line without a 'prompt' string")
                    n = row.get("output_tokens", row.get("max_tokens"))
                    out.append((prompt, int(n) if n is not None else None))
    except (ValueError, AttributeError, TypeError) as exc:
        raise InputError(path, fmt, f"a {fmt} prompts file", str(exc)[:120]) from None
    if not out:
        raise InputError(path, fmt, "at least one prompt", "none found")
    return out
