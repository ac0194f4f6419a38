"""Prompt and output lengths in the target's tokens, planned before the load starts.

A scenario's lengths are tokens of the TARGET's tokenizer. They are counted, in order of
preference, by the server's ``/tokenize`` (vLLM and the simulator have one; it applies the chat
template, so it counts what the server will), by a tokenizer file the scenario names
(``workload.tokenizer``, a Hugging Face ``tokenizer.json``), else estimated as one token per
word and flagged ``estimate`` in every record.

How a prompt is made to hit its count: every synthetic word is measured once (its cost in
tokens), so the words of any slice of the word pool add up in a cumulative sum and the number
of words for a count is one ``searchsorted``; a one-token filler closes the gap where a
two-token word would step over it. Then every request is counted whole, as it will be sent,
and its own part is grown or trimmed by the difference, a few rounds at most. Shared parts
(system prompts, Mooncake blocks) are sized by the costs alone, so they stay byte-identical
across the requests that share them; the own part absorbs the rest.

A conversation's later turn carries its history: the earlier questions (as sized) and the
answers, which exist only once the load runs. It is planned with a stand-in answer of each
earlier turn's max_tokens, its question sized alone, and its length is what that counts
whole; the load corrects it by what each real answer costs (``conversation``).

Lengths are capped by the target's ``max_model_len`` (``/v1/models``): prompt + max output
never exceeds it, and a capped arrival is marked in its record. A conversation is not cut:
one whose turn would not fit is refused (``InputError``, exit 2) before any request goes out.
All of this runs in the runner's process before t0; the Locust processes only join words
(``payload``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from aichaos.rundir import InputError

from .payload import MOONCAKE_BLOCK_TOKENS, planned_history, prompt_fields, prompt_parts
from .prompts import FILLERS, POOL_IDS, WORDS, count_tokens, pool_start
from .schedule import PromptSizes, Schedule
from .spec import Scenario

COUNT_MAX = 2000  # whole requests counted at most (a closed loop's pool is 20,000)
ROUNDS = 4  # whole-request counts; the first is usually exact, the rest fix template seams
TOKENIZE_THREADS = 8
HTTP_TIMEOUT_S = 10.0


class CountError(Exception):
    """The counter could not count (a /tokenize that fails mid-way)."""


class TokenCounter(Protocol):
    source: str

    def count(self, prompts: list[dict[str, Any]]) -> list[int]:
        """Tokens of each prompt (``{"prompt": s}`` or ``{"messages": [...]}``)."""
        ...

    def count_text(self, text: str) -> int:
        """Tokens of a bare piece of text (no template, no special tokens)."""
        ...


class TokenizeCounter:
    """The server's own ``POST /tokenize`` (vLLM's shape), many requests in parallel."""

    source = "tokenize"

    def __init__(self, base_url: str, model: str | None, headers: dict[str, str]):
        self.model = model
        limits = httpx.Limits(max_connections=TOKENIZE_THREADS)
        self.client = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S, headers=headers,
                                   limits=limits)  # fmt: skip

    def one(self, fields: dict[str, Any]) -> dict[str, Any]:
        body = {**fields, **({"model": self.model} if self.model else {})}
        if "messages" in body:
            body["add_generation_prompt"] = True  # as the chat endpoint renders it
        try:
            resp = self.client.post("/tokenize", json=body)
            data = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise CountError(f"/tokenize: {type(exc).__name__}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise CountError(f"/tokenize answered {resp.status_code}: {resp.text[:200]}")
        return data

    def count(self, prompts: list[dict[str, Any]]) -> list[int]:
        with ThreadPoolExecutor(TOKENIZE_THREADS) as pool:
            return [d["count"] for d in pool.map(self.one, prompts)]

    def count_text(self, text: str) -> int:
        return int(self.one({"prompt": text, "add_special_tokens": False})["count"])

    def close(self) -> None:
        self.client.close()


class TokenizerCounter:
    """A ``tokenizer.json`` named by the scenario. It has no chat template, so a chat prompt
    is counted as its messages' contents, one after another (the server adds its template)."""

    source = "tokenizer"

    def __init__(self, path: Path, file: str):
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises plain Exceptions for a bad file
            got = str(exc)[:120]
            raise InputError(file, "workload.tokenizer", "a tokenizer.json", got) from None

    def count(self, prompts: list[dict[str, Any]]) -> list[int]:
        texts = [_plain(p) for p in prompts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


class EstimateCounter:
    """No tokenizer: words and punctuation marks, as the simulator counts (approximate)."""

    source = "estimate"

    def count(self, prompts: list[dict[str, Any]]) -> list[int]:
        return [count_tokens(_plain(p)) for p in prompts]

    def count_text(self, text: str) -> int:
        return count_tokens(text)


def _plain(fields: dict[str, Any]) -> str:
    if "prompt" in fields:
        return str(fields["prompt"])
    return "".join(str(m.get("content") or "") for m in fields["messages"])


@dataclass
class TargetInfo:
    """What the target says about itself: its model, context length and /tokenize."""

    model: str | None = None
    max_model_len: int | None = None
    tokenize: bool = False
    notes: list[str] = field(default_factory=list)


def probe_target(base_url: str, scenario: Scenario) -> TargetInfo:
    info = TargetInfo(model=scenario.target.model)
    headers = dict(scenario.target.headers)
    try:
        with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S, headers=headers) as c:
            resp = c.get("/v1/models")
            cards = resp.json().get("data") or [] if resp.status_code == 200 else []
            card = next((m for m in cards if m.get("id") == info.model), None)
            card = card or (cards[0] if cards and info.model is None else None)
            if card is not None:
                info.model = info.model or card.get("id")
                if isinstance(card.get("max_model_len"), int):
                    info.max_model_len = card["max_model_len"]
            probe = {"prompt": "a", **({"model": info.model} if info.model else {})}
            resp = c.post("/tokenize", json=probe)
            data = resp.json() if resp.status_code == 200 else {}
            info.tokenize = isinstance(data, dict) and isinstance(data.get("count"), int)
            if info.tokenize and info.max_model_len is None:
                info.max_model_len = data.get("max_model_len")
            if not info.tokenize:
                info.notes.append(f"{base_url} has no /tokenize ({resp.status_code})")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        info.notes.append(f"{base_url}: could not ask for its model and tokenizer ({exc})")
    return info


def choose_counter(info: TargetInfo, base_url: str, scenario: Scenario) -> TokenCounter:
    if info.tokenize:
        return counter_for("tokenize", base_url, info.model, scenario)
    if scenario.tokenizer is not None:
        return counter_for("tokenizer", base_url, info.model, scenario)
    return EstimateCounter()


def counter_for(source: str, base_url: str, model: str | None, scenario: Scenario) -> TokenCounter:
    """The counter of ``source`` (one of ``LENGTH_SOURCES``): the sizing's, and the load's when
    it counts a conversation's answers in the same tokens."""
    if source == "tokenize":
        return TokenizeCounter(base_url, model, dict(scenario.target.headers))
    if source == "tokenizer" and scenario.tokenizer is not None:
        return TokenizerCounter(Path(scenario.tokenizer), scenario.source or "<scenario>")
    return EstimateCounter()


@dataclass
class SizingResult:
    wire: dict[str, Any]  # for build_schedule(scenario, sizing=...)
    summary: dict[str, Any]  # source, max_model_len, capped, off, seconds, notes


def size_schedule(scenario: Scenario, schedule: Schedule, base_url: str) -> SizingResult:
    """Lengths of every arrival in the target's tokens, capped by its context length."""
    started = time.monotonic()
    info = probe_target(base_url, scenario)
    counter = choose_counter(info, base_url, scenario)
    notes = list(info.notes)
    try:
        planner = Planner(scenario, schedule, counter, info.max_model_len)
        planner.run()
    except CountError as exc:
        notes.append(f"counting with {counter.source} failed, lengths estimated: {exc}")
        counter = EstimateCounter()
        planner = Planner(scenario, schedule, counter, info.max_model_len)
        planner.run()
    finally:
        close = getattr(counter, "close", None)
        if close is not None:
            close()
    summary = {
        "source": counter.source,
        "model": info.model,
        "max_model_len": info.max_model_len,
        "requests": len(schedule),
        "capped": int(planner.capped.sum()),
        "counted_whole": planner.checked,
        "off_after_sizing": int((planner.counted != planner.prompt).sum()),
        # a conversation's largest turn, prompt and max_tokens: how close it comes to the context
        "conversation_peak": planner.conversation_peak(),
        "seconds": round(time.monotonic() - started, 3),
        "notes": notes,
    }
    return SizingResult(planner.to_wire(), summary)


class Planner:
    """The word counts of one schedule, for one counter (see the module's docstring)."""

    def __init__(self, scenario: Scenario, schedule: Schedule, counter: TokenCounter,
                 max_model_len: int | None) -> None:  # fmt: skip
        self.scenario, self.s, self.counter = scenario, schedule, counter
        self.chat = scenario.target.chat
        self.limit = max_model_len
        n = len(schedule)
        self.prompt = schedule.prompt_tokens.astype(np.int64).copy()
        self.output = schedule.output_tokens.astype(np.int64).copy()
        self.capped = np.zeros(n, dtype=bool)
        self.counted = np.zeros(n, dtype=np.int64)
        self.previous, self.following = schedule.turn_links()
        self.conversation = schedule.session_id >= 0
        # a conversation's later turns: their length is what their history makes it
        self.later = schedule.turn > 1
        self.sizes = PromptSizes(
            counter.source, "", np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), self.capped,
            [[] for _ in range(n)] if schedule.blocks is not None else None, max_model_len,
        )  # fmt: skip
        self.s.sizes = self.sizes

    def run(self) -> None:
        self._measure_words()
        self._cap()
        self._shared_parts()
        self._stand_in_answers()
        s = self.s
        own_target = self.prompt - self.overhead - self.shared_tokens
        # a later turn's question is as long as drawn; its history comes on top
        asked = s.prompt_tokens - s.context_tokens - s.prefix_tokens
        own_target = np.where(self.later, np.maximum(asked, 1), own_target)
        self._own_part(own_target, np.arange(len(s)))
        # counted whole: every arrival, or an even sample of a very long schedule (a closed
        # loop's pool) whose others keep the words' sums, exact where the costs add up
        checked = np.unique(np.linspace(0, len(s) - 1, min(len(s), COUNT_MAX)))
        checked = checked.astype(np.int64)
        first = checked[~self.later[checked]]
        self.counted = self.prompt.copy()
        for _ in range(ROUNDS):
            self.counted[first] = self._count(first)
            off = (self.counted != self.prompt) & ~self.later
            if not off.any():
                break
            own_target = own_target + np.where(off, self.prompt - self.counted, 0)
            self._own_part(own_target, np.nonzero(off)[0])
        self._later_turns(own_target, checked[self.later[checked]])
        self.checked = len(checked)
        self._check_conversations()
        self._fit_outputs()

    def _measure_words(self) -> None:
        """Each word's and filler's cost in tokens: counted after an empty prompt, less it."""
        # a filler must cost one token however often it repeats ("..": one token in BPE)
        fills = [f * k for f in FILLERS for k in (1, 2, 3)]
        pieces = ["", *WORDS, *fills]
        prompts = [prompt_fields(self.chat, "", p) for p in pieces]
        # a shared part of a chat prompt is a system message: its template costs tokens too,
        # and so does each earlier turn of a conversation (a question and an answer message)
        word = WORDS[0]
        exchange = prompt_fields(self.chat, "", word, [(word, word)])
        counts = self.counter.count([*prompts, prompt_fields(self.chat, word, ""), exchange])
        self.overhead = counts[0]
        word_cost = counts[1] - counts[0]
        self.exchange_overhead = max(counts.pop() - counts[1] - 2 * word_cost, 0)
        self.shared_overhead = max(counts.pop() - counts[1], 0)
        costs = np.maximum(np.asarray(counts[1 : 1 + len(WORDS)]) - counts[0], 1)
        fill_costs = np.asarray(counts[1 + len(WORDS) :]).reshape(len(FILLERS), 3) - counts[0]
        fits = [f for f, c in zip(FILLERS, fill_costs, strict=True) if list(c) == [1, 2, 3]]
        self.filler = fits[0] if fits else ""
        self.sizes.filler = self.filler
        # a slice of up to two pools' length from any start, without wrapping arithmetic
        per_word = np.tile(costs[POOL_IDS], 3)
        self.cum = np.concatenate(([0], np.cumsum(per_word)))

    def _words(self, key: str, tokens: int) -> tuple[int, int]:
        """(words, tokens they cost): the most words not over ``tokens`` (the own part makes
        up the rest)."""
        if tokens <= 0:
            return 0, 0
        start = pool_start(key)
        end = int(np.searchsorted(self.cum, self.cum[start] + tokens, side="right")) - 1
        return end - start, int(self.cum[end] - self.cum[start])

    def _cap(self) -> None:
        """Prompt + max output within the context: the prompt gives way, the output keeps its
        length unless it alone would not fit."""
        if not self.limit:
            return
        limit = int(self.limit)
        over = (self.prompt + self.output > limit) & ~self.conversation  # never cut: refused
        self.output[over] = np.minimum(self.output[over], max(limit // 2, 1))
        self.prompt[over] = np.maximum(limit - self.output[over], 1)
        self.capped |= over

    def _shared_parts(self) -> None:
        s, seed, n = self.s, self.scenario.seed, len(self.s)
        self.shared_tokens = np.zeros(n, dtype=np.int64)
        # room for the shared parts: the intended prompt less the template and one own word
        room = np.maximum(self.prompt - self.overhead - self.shared_overhead - 1, 0)
        for i in range(n):
            used = 0
            if s.blocks is not None and s.blocks[i] and self.sizes.block_words is not None:
                for h in s.blocks[i][:-1]:
                    if used + MOONCAKE_BLOCK_TOKENS > room[i]:
                        break
                    w, c = self._words(f"block-{h}", MOONCAKE_BLOCK_TOKENS)
                    self.sizes.block_words[i].append(w)
                    used += c
            if s.prefix_id[i] >= 0:
                want = min(int(s.prefix_tokens[i]), int(room[i]))
                w, used = self._words(f"{seed}-prefix-{s.prefix_id[i]}", want)
                self.sizes.prefix_words[i] = w
            self.shared_tokens[i] = used + (self.shared_overhead if used else 0)
        if s.blocks is not None and self.sizes.block_words is not None:
            # a block left out of a capped prompt is left out of its hash list too
            pairs = zip(s.blocks, self.sizes.block_words, strict=True)
            s.blocks = [b[: len(w)] + b[-1:] if b else b for b, w in pairs]

    def _stand_in_answers(self) -> None:
        """The answer each conversation turn with a next one is planned with: words costing
        at most its max_tokens (``payload.stand_in_answer``), and what they cost."""
        seed, sizes = self.scenario.seed, self.sizes
        for i in np.nonzero(self.following >= 0)[0]:
            key = f"{seed}-answer-{int(self.s.index[i])}"
            sizes.answer_words[i], sizes.answer_tokens[i] = self._words(key, int(self.output[i]))

    def _later_turns(self, own_target: np.ndarray, checked: np.ndarray) -> None:
        """A later turn's length is its history's (questions as sized, stand-in answers) and
        its question's: added up turn after turn, counted whole where ``checked``."""
        if checked.size:
            self.counted[checked] = self.prompt[checked] = self._count(checked)
        counted = np.zeros(len(self.s), dtype=bool)
        counted[checked] = True
        rows = np.nonzero(self.later & ~counted)[0]
        for i in rows[np.argsort(self.s.turn[rows], kind="stable")]:
            j = self.previous[i]
            step = self.sizes.answer_tokens[j] + self.exchange_overhead + own_target[i]
            self.counted[i] = self.prompt[i] = self.prompt[j] + step

    def conversation_peak(self) -> int | None:
        """The most a conversation's turn asks of the context: its prompt and max_tokens."""
        rows = np.nonzero(self.conversation)[0]
        return int((self.prompt[rows] + self.output[rows]).max()) if rows.size else None

    def _check_conversations(self) -> None:
        """A conversation is never cut to fit: one whose turn would not fit the context is
        refused before anything is sent (one line, exit 2)."""
        peak = self.conversation_peak()
        if not self.limit or peak is None or peak <= self.limit:
            return
        rows = np.nonzero(self.conversation)[0]
        i = rows[np.argmax(self.prompt[rows] + self.output[rows])]
        expected = (f"conversations that fit the target's context of {self.limit} tokens "
                    "(each turn's prompt, its history included, and max_tokens)")  # fmt: skip
        got = (f"turn {int(self.s.turn[i])} of a conversation needs {int(self.prompt[i])} + "
               f"{int(self.output[i])} tokens")  # fmt: skip
        raise InputError(self.scenario.source or "<scenario>", "workload.sessions", expected, got)

    def _own_part(self, own_target: np.ndarray, rows: np.ndarray) -> None:
        s, seed = self.s, self.scenario.seed
        for i in rows:
            target = int(own_target[i])
            if target <= 0:
                self.sizes.own_words[i] = self.sizes.own_fill[i] = 0
                continue
            start = pool_start(f"{seed}-own-{int(s.index[i])}")
            base = self.cum[start]
            # the most words not over the count, then fillers for the rest
            end = int(np.searchsorted(self.cum, base + target, side="right")) - 1
            gap = target - int(self.cum[end] - base)
            if gap and not self.filler:
                end += 1  # no one-token filler: the nearest count from above
                gap = 0
            self.sizes.own_words[i] = end - start
            self.sizes.own_fill[i] = gap

    def _count(self, rows: np.ndarray) -> np.ndarray:
        seed, s = self.scenario.seed, self.s
        prompts = [prompt_fields(self.chat, *prompt_parts(s, i, seed),
                                 planned_history(s, self.previous, i, seed))
                   for i in rows]  # fmt: skip
        counts = np.asarray(self.counter.count(prompts), dtype=np.int64)
        if self.s.texts is not None:
            # a prompt from a file is what it is: its count is the intended one
            from_file = np.asarray([self.s.texts[i] is not None for i in rows], dtype=bool)
            self.prompt[rows[from_file]] = counts[from_file]
        return counts

    def _fit_outputs(self) -> None:
        """The last guard: what was counted plus the max output fits the context."""
        if not self.limit:
            return
        room = int(self.limit) - np.maximum(self.counted, self.prompt)
        over = self.output > room
        self.output[over] = np.maximum(room[over], 1)
        self.capped |= over

    def to_wire(self) -> dict[str, Any]:
        self.sizes.capped = self.capped
        return {
            "prompt_tokens": self.prompt.tolist(),
            "output_tokens": self.output.tolist(),
            "blocks": self.s.blocks,
            "sizes": self.sizes.to_wire(),
        }
