"""The schedule: every request of a run, drawn ahead of time from the scenario and its seed.

Times are seconds from the run's t0 (schedule time 0). The same scenario and seed always give
the same schedule, so a run replays, and so ``--workers N`` can split one schedule between
processes (round-robin: each worker's share of a Poisson process is again Poisson at λ/N).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arrivals import arrival_times
from .prompts import count_tokens, read_prompts
from .spec import Scenario
from .traces import read_trace, window

CLOSED_LOOP_POOL = 20_000  # request templates a closed-loop run cycles through


@dataclass
class PromptSizes:
    """How many synthetic words make each part of each arrival's prompt, measured in the
    target's tokens before the load starts (``sizing``): the send path only joins words.
    Parallel to the schedule's arrays; a part's words are the same for every arrival that
    shares it, so shared prefixes stay byte-identical."""

    source: str  # one of aichaos.rundir.LENGTH_SOURCES
    filler: str  # appended ``own_fill`` times where a word would step over the count
    own_words: np.ndarray  # int64
    own_fill: np.ndarray  # int64
    prefix_words: np.ndarray  # int64, words of the shared system prompt
    # a conversation's turn is planned with a stand-in answer of its max_tokens: its words
    # and what they cost; the real answer's cost is counted when it came (``conversation``)
    answer_words: np.ndarray  # int64
    answer_tokens: np.ndarray  # int64
    capped: np.ndarray  # bool: lengths cut to fit the target's max_model_len
    block_words: list[list[int]] | None = None  # per Mooncake block of each arrival
    max_model_len: int | None = None  # the target's context, when it said

    def take(self, idx: np.ndarray) -> PromptSizes:
        blocks = [self.block_words[i] for i in idx] if self.block_words is not None else None
        arrays = {name: getattr(self, name)[idx] for name in _SIZE_ARRAYS}
        return PromptSizes(self.source, self.filler, block_words=blocks,
                           max_model_len=self.max_model_len, **arrays)  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).tolist() for name in _SIZE_ARRAYS}
        return {**out, "source": self.source, "filler": self.filler,
                "block_words": self.block_words, "max_model_len": self.max_model_len}  # fmt: skip

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> PromptSizes:
        arrays = {name: np.asarray(d[name], dtype=bool if name == "capped" else np.int64)
                  for name in _SIZE_ARRAYS}  # fmt: skip
        return cls(str(d["source"]), str(d["filler"]), block_words=d.get("block_words"),
                   max_model_len=d.get("max_model_len"), **arrays)  # fmt: skip


_SIZE_ARRAYS = ("own_words", "own_fill", "prefix_words", "answer_words", "answer_tokens", "capped")


@dataclass
class Schedule:
    """Arrivals as parallel arrays, ordered by time (structure of arrays: cheap to split,
    to send to a Locust worker and to iterate in the dispatcher)."""

    t: np.ndarray  # float64, seconds from t0
    tier: np.ndarray  # int index into tier_names
    tier_names: list[str]
    prompt_tokens: np.ndarray  # int64, planned (the record takes usage when it comes)
    output_tokens: np.ndarray  # int64, max_tokens sent
    prefix_id: np.ndarray  # int, -1 for none
    prefix_tokens: np.ndarray  # int
    session_id: np.ndarray  # int, -1 for none
    turn: np.ndarray  # int, 1 for a conversation's first turn; 0 outside conversations
    context_tokens: np.ndarray  # planned tokens of the earlier turns (questions and answers)
    think: np.ndarray  # float64, seconds from the previous turn's answer to this turn
    blocks: list[list[int]] | None = None  # Mooncake hash ids per arrival
    texts: list[str | None] | None = None  # prompt text from a file, per arrival
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sizes: PromptSizes | None = None  # None: one word per token (the estimate)

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx: np.ndarray) -> Schedule:
        return Schedule(
            self.t[idx],
            self.tier[idx],
            self.tier_names,
            self.prompt_tokens[idx],
            self.output_tokens[idx],
            self.prefix_id[idx],
            self.prefix_tokens[idx],
            self.session_id[idx],
            self.turn[idx],
            self.context_tokens[idx],
            self.think[idx],
            [self.blocks[i] for i in idx] if self.blocks is not None else None,
            [self.texts[i] for i in idx] if self.texts is not None else None,
            self.index[idx],
            self.sizes.take(idx) if self.sizes is not None else None,
        )

    def split(self, worker: int, workers: int) -> Schedule:
        """Worker ``worker`` of ``workers`` takes every ``workers``-th arrival; a conversation
        stays whole (its history lives in the process that sends it): every ``workers``-th."""
        key = np.where(self.session_id >= 0, self.session_id, np.arange(len(self)))
        return self.take(np.nonzero(key % workers == worker)[0])

    def turn_links(self) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the row of its conversation's previous turn and of its next turn
        (-1 for none)."""
        previous = np.full(len(self), -1, dtype=np.int64)
        following = np.full(len(self), -1, dtype=np.int64)
        order = np.lexsort((self.turn, self.session_id))
        a, b = order[:-1], order[1:]
        same = (self.session_id[a] == self.session_id[b]) & (self.session_id[a] >= 0)
        same &= self.turn[b] == self.turn[a] + 1
        previous[b[same]], following[a[same]] = a[same], b[same]
        return previous, following

    def to_wire(self) -> dict[str, Any]:
        """Plain lists (msgpack/JSON-able) for Locust's messaging."""
        out: dict[str, Any] = {"tier_names": self.tier_names}
        for name in _ARRAYS:
            out[name] = getattr(self, name).tolist()
        out["blocks"] = self.blocks
        out["texts"] = self.texts
        out["sizes"] = self.sizes.to_wire() if self.sizes is not None else None
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Schedule:
        arrays = {
            name: np.asarray(d[name], dtype=float if name in _FLOATS else np.int64)
            for name in _ARRAYS
        }
        sizes = PromptSizes.from_wire(d["sizes"]) if d.get("sizes") else None
        return cls(tier_names=list(d["tier_names"]), blocks=d.get("blocks"),
                   texts=d.get("texts"), sizes=sizes, **arrays)  # fmt: skip


_ARRAYS = (
    "t",
    "tier",
    "prompt_tokens",
    "output_tokens",
    "prefix_id",
    "prefix_tokens",
    "session_id",
    "turn",
    "context_tokens",
    "think",
    "index",
)
_FLOATS = ("t", "think")


def earlier_turns(previous: np.ndarray, i: int) -> list[int]:
    """The rows of the turns before row ``i`` in its conversation, the first turn first
    (``previous`` from ``Schedule.turn_links``)."""
    rows: list[int] = []
    j = int(previous[i])
    while j >= 0:
        rows.append(j)
        j = int(previous[j])
    return rows[::-1]


def build_schedule(scenario: Scenario, sizing: dict[str, Any] | None = None) -> Schedule:
    """Every arrival of the run, deterministic from ``scenario.seed``; ``sizing`` (from
    ``sizing.size_schedule(...).to_wire()``) puts the lengths measured in the target's tokens
    (and capped by its context) in place of the drawn ones."""
    schedule = _draw(scenario)
    if sizing:
        apply_sizing(schedule, sizing)
    return schedule


def apply_sizing(schedule: Schedule, sizing: dict[str, Any]) -> None:
    """The measured lengths, planned ahead by the runner, for this same schedule."""
    if len(sizing["prompt_tokens"]) != len(schedule):
        raise ValueError("the sizing was made for another schedule")
    schedule.prompt_tokens = np.asarray(sizing["prompt_tokens"], dtype=np.int64)
    schedule.output_tokens = np.asarray(sizing["output_tokens"], dtype=np.int64)
    schedule.sizes = PromptSizes.from_wire(sizing["sizes"])
    if sizing.get("blocks") is not None:
        schedule.blocks = sizing["blocks"]  # blocks a capped prompt had to leave out


def _draw(scenario: Scenario) -> Schedule:
    seed = scenario.seed
    rng_times = np.random.default_rng([seed, 2])
    rng_tiers = np.random.default_rng([seed, 3])
    rng_lengths = np.random.default_rng([seed, 4])
    rng_extra = np.random.default_rng([seed, 5])
    tiers = scenario.tier_list
    shares = np.asarray([t.share for t in tiers])
    blocks = None
    trace_prompt = trace_output = None
    if scenario.mode == "closed":
        times = np.zeros(CLOSED_LOOP_POOL)
        tier_idx = rng_tiers.choice(len(tiers), size=len(times), p=shares)
    elif scenario.trace is not None:
        tr = scenario.trace
        full = read_trace(tr.format, Path(tr.path), scenario.source or "<scenario>", "trace.path")
        replay = window(full, tr.start_s, tr.end_s, tr.time_scale)
        keep = replay.t < scenario.duration_s
        times = replay.t[keep]
        trace_prompt = replay.prompt_tokens[keep]
        trace_output = replay.output_tokens[keep]
        if replay.hash_ids is not None:
            blocks = [replay.hash_ids[i] for i in np.nonzero(keep)[0]]
        tier_idx = rng_tiers.choice(len(tiers), size=len(times), p=shares)
    else:
        assert scenario.shape is not None
        times = arrival_times(
            scenario.shape.rate,
            scenario.duration_s,
            scenario.process,
            rng_times,
            scenario.burstiness,
        )
        tier_idx = rng_tiers.choice(len(tiers), size=len(times), p=shares)
        if scenario.noisy is not None:
            extra = _noisy_arrivals(scenario, rng_extra)
            noisy_idx = scenario.tiers.index(scenario.noisy.tier)
            times = np.concatenate((times, extra))
            tier_idx = np.concatenate((tier_idx, np.full(len(extra), noisy_idx)))
    n = len(times)
    prompt = np.zeros(n, dtype=np.int64)
    output = np.zeros(n, dtype=np.int64)
    for i, tier in enumerate(tiers):
        mask = tier_idx == i
        count = int(mask.sum())
        prompt[mask] = (tier.prompt_tokens or scenario.prompt_tokens).sample(rng_lengths, count)
        output[mask] = (tier.output_tokens or scenario.output_tokens).sample(rng_lengths, count)
    if trace_prompt is not None:
        prompt, output = trace_prompt.astype(np.int64), np.maximum(trace_output, 1)
    prefix_id = np.full(n, -1, dtype=np.int64)
    prefix_tokens = np.zeros(n, dtype=np.int64)
    sp = scenario.shared_prefix
    if sp is not None:
        has = rng_lengths.uniform(size=n) < sp.share
        prefix_id[has] = rng_lengths.integers(0, sp.groups, int(has.sum()))
        prefix_tokens[has] = sp.tokens
    texts = None
    if scenario.prompts_file is not None:
        path, fmt = scenario.prompts_file
        prompts = read_prompts(Path(path), fmt, scenario.source, "workload.prompts.file")
        pick = rng_lengths.integers(0, len(prompts), n)
        texts = [prompts[i][0] for i in pick]
        prompt = np.asarray([count_tokens(s) for s in texts], dtype=np.int64)
        from_file = [prompts[i][1] for i in pick]
        output = np.asarray(
            [o if o is not None else output[j] for j, o in enumerate(from_file)], dtype=np.int64
        )
    schedule = Schedule(
        t=times.astype(float),
        tier=tier_idx.astype(np.int64),
        tier_names=scenario.tiers,
        prompt_tokens=prompt,
        output_tokens=output,
        prefix_id=prefix_id,
        prefix_tokens=prefix_tokens,
        session_id=np.full(n, -1, dtype=np.int64),
        turn=np.zeros(n, dtype=np.int64),
        context_tokens=np.zeros(n, dtype=np.int64),
        think=np.zeros(n),
        blocks=blocks,
        texts=texts,
        index=np.zeros(n, dtype=np.int64),
    )
    if scenario.sessions is not None and scenario.mode == "open":
        schedule = _expand_sessions(schedule, scenario, rng_lengths)
    order = np.argsort(schedule.t, kind="stable")
    schedule = schedule.take(order)
    schedule.index = np.arange(len(schedule), dtype=np.int64)
    return schedule


def _noisy_arrivals(scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    """The extra arrivals of the noisy tier: (factor − 1) × its share of the rate, in the
    window, drawn with the scenario's own process."""
    noisy = scenario.noisy
    assert noisy is not None and scenario.shape is not None
    share = scenario.tier_list[scenario.tiers.index(noisy.tier)].share
    shape = scenario.shape

    def extra_rate(t: np.ndarray) -> np.ndarray:
        inside = (t >= noisy.start_s) & (t < noisy.end_s)
        return np.where(inside, shape.rate(t) * share * (noisy.factor - 1.0), 0.0)

    return arrival_times(
        extra_rate, scenario.duration_s, scenario.process, rng, scenario.burstiness
    )


def _expand_sessions(s: Schedule, scenario: Scenario, rng: np.random.Generator) -> Schedule:
    """Each arrival starts a conversation; each later turn follows the previous one by its
    think time (planned as if answers took no time: the load sends it that long after the
    answer really came) and asks a question of its own. The questions and answers before it
    are its planned context; turns planned past the run's end are left out."""
    sessions = scenario.sessions
    assert sessions is not None
    turns = np.maximum(sessions.turns.sample(rng, len(s)), 1)
    later = int((turns - 1).sum())
    thinks = iter(sessions.think.sample(rng, later))
    asks = iter(sessions.prompt_tokens.sample(rng, later)) if sessions.prompt_tokens else None
    rows: dict[str, list] = {k: [] for k in _ARRAYS if k != "index"}
    blocks: list[list[int]] | None = [] if s.blocks is not None else None
    texts: list[str | None] | None = [] if s.texts is not None else None
    for i in range(len(s)):
        prefix = int(s.prefix_tokens[i])
        first = max(int(s.prompt_tokens[i]) - prefix, 1)
        t, context, think, own = float(s.t[i]), 0, 0.0, first
        for turn in range(1, int(turns[i]) + 1):
            if turn > 1:
                think = float(next(thinks))
                own = int(next(asks)) if asks is not None else first
                t += think
            if t >= scenario.duration_s:
                break
            rows["t"].append(t)
            rows["tier"].append(s.tier[i])
            rows["prompt_tokens"].append(prefix + context + own)
            rows["output_tokens"].append(s.output_tokens[i])
            rows["prefix_id"].append(s.prefix_id[i])
            rows["prefix_tokens"].append(prefix)
            rows["session_id"].append(i)
            rows["turn"].append(turn)
            rows["context_tokens"].append(context)
            rows["think"].append(think)
            if blocks is not None:
                blocks.append(s.blocks[i])
            if texts is not None:
                texts.append(s.texts[i])
            context += own + int(s.output_tokens[i])
    arrays = {k: np.asarray(v, dtype=float if k in _FLOATS else np.int64)
              for k, v in rows.items()}  # fmt: skip
    return Schedule(tier_names=s.tier_names, blocks=blocks, texts=texts,
                    index=np.zeros(len(arrays["t"]), dtype=np.int64), **arrays)  # fmt: skip
