"""Scenario files: the traffic model of one run, read from YAML and validated field by field.

A scenario is resolved once (defaults filled in, random burst times drawn, durations given
to the shapes) and ``Scenario.to_dict`` writes that resolved form; ``Scenario.from_dict``
reads it back, so ``run.json`` replays the same traffic. Built-in scenarios are the YAML
files next to this module (``steady``, ``diurnal``, ``burst``, ``tiered``, ``soak``).

See ``scenarios/README.md`` for every field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aichaos.documents import read_document
from aichaos.rundir import InputError

from .arrivals import PROCESSES
from .lengths import Lengths, parse_lengths
from .prompts import PROMPT_FORMATS
from .shapes import Shape, parse_shape
from .traces import TRACE_FORMATS
from .validate import Fields, parse_duration

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
TARGET_PATHS = ("/v1/chat/completions", "/v1/completions")
DEFAULT_TIERS = (("free", 0.6), ("pro", 0.3), ("enterprise", 0.1))


@dataclass(frozen=True)
class Target:
    path: str = "/v1/chat/completions"
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = True
    include_usage: bool = True
    ignore_eos: bool = True  # vLLM extension: generate exactly max_tokens
    timeout_s: float = 60.0

    @property
    def chat(self) -> bool:
        return self.path.endswith("/chat/completions")


@dataclass(frozen=True)
class Tier:
    name: str
    share: float
    headers: dict[str, str]
    prompt_tokens: Lengths | None = None  # None: the workload's
    output_tokens: Lengths | None = None


@dataclass(frozen=True)
class NoisyNeighbour:
    tier: str
    factor: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SharedPrefix:
    groups: int
    tokens: int
    share: float  # fraction of requests that carry one


@dataclass(frozen=True)
class Sessions:
    """Conversations: each arrival starts one; every turn sends the history so far (earlier
    questions and the answers as they were streamed), ``think`` after the previous answer."""

    turns: Lengths  # turns of a conversation
    think: Lengths  # seconds from an answer to the next question (durations)
    prompt_tokens: Lengths | None = None  # each later question; None: as long as the first


@dataclass(frozen=True)
class TraceReplay:
    format: str
    path: str
    time_scale: float = 1.0
    start_s: float = 0.0
    end_s: float | None = None


@dataclass
class Scenario:
    name: str
    description: str
    duration_s: float
    warmup_s: float
    seed: int
    target: Target
    process: str
    burstiness: float
    mode: str  # open | closed
    concurrency: int
    shape: Shape | None
    tier_list: tuple[Tier, ...]
    noisy: NoisyNeighbour | None
    prompt_tokens: Lengths
    output_tokens: Lengths
    shared_prefix: SharedPrefix | None
    sessions: Sessions | None
    prompts_file: tuple[str, str] | None  # (path, format)
    trace: TraceReplay | None
    source: str = ""
    tokenizer: str | None = None  # a tokenizer.json counting lengths when the target can't

    @property
    def tiers(self) -> list[str]:
        return [t.name for t in self.tier_list]

    def expected_requests(self) -> float | None:
        """The requests an open-loop rate shape sends over the run, on average (at most the
        mean turns of a conversation for each arrival); None for a closed loop or a trace
        (they send what the target's speed or the file allows)."""
        if self.mode != "open" or self.shape is None:
            return None
        t = np.linspace(0.0, self.duration_s, 2001)
        turns = self.sessions.turns.mean() if self.sessions is not None else 1.0
        return float(np.mean(self.shape.rate(t)) * self.duration_s * turns)

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "duration": self.duration_s,
            "warmup": self.warmup_s,
            "seed": self.seed,
            "target": {
                "path": t.path,
                "model": t.model,
                "headers": dict(t.headers),
                "stream": t.stream,
                "include_usage": t.include_usage,
                "ignore_eos": t.ignore_eos,
                "timeout": t.timeout_s,
            },
            "arrival": {
                "process": self.process,
                "burstiness": self.burstiness,
                "mode": self.mode,
                "concurrency": self.concurrency,
            },
            "rate": self.shape.to_dict() if self.shape is not None else None,
            "tiers": [
                {
                    "name": tier.name,
                    "share": tier.share,
                    "headers": dict(tier.headers),
                    "prompt_tokens": tier.prompt_tokens.to_dict() if tier.prompt_tokens else None,
                    "output_tokens": tier.output_tokens.to_dict() if tier.output_tokens else None,
                }
                for tier in self.tier_list
            ],
            "noisy_neighbour": None,
            "workload": {
                "prompt_tokens": self.prompt_tokens.to_dict(),
                "output_tokens": self.output_tokens.to_dict(),
                "shared_prefix": None,
                "sessions": None,
                "prompts": None,
                "tokenizer": self.tokenizer,
            },
            "trace": None,
            "source": self.source,
        }
        if self.noisy:
            n = self.noisy
            out["noisy_neighbour"] = {
                "tier": n.tier,
                "factor": n.factor,
                "start": n.start_s,
                "end": n.end_s,
            }
        w = out["workload"]
        if self.shared_prefix:
            p = self.shared_prefix
            w["shared_prefix"] = {"groups": p.groups, "tokens": p.tokens, "share": p.share}
        if self.sessions:
            c = self.sessions
            later = c.prompt_tokens.to_dict() if c.prompt_tokens else None
            w["sessions"] = {"turns": c.turns.to_dict(), "think": c.think.to_dict(),
                             "prompt_tokens": later}  # fmt: skip
        if self.prompts_file:
            w["prompts"] = {"file": self.prompts_file[0], "format": self.prompts_file[1]}
        if self.trace:
            tr = self.trace
            out["trace"] = {
                "format": tr.format,
                "path": tr.path,
                "time_scale": tr.time_scale,
                "start": tr.start_s,
                "end": tr.end_s,
            }
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        """The inverse of ``to_dict`` (the resolved form replays exactly)."""
        data = copy.deepcopy(d)
        source = data.pop("source", "") or "<replay>"
        base = Path(source).parent if source not in ("", "<replay>") else Path.cwd()
        scenario = parse_scenario(data, file=source, base_dir=base)
        scenario.source = "" if source == "<replay>" else source
        return scenario


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_ref(ref: str | Path) -> Path:
    """A built-in name or a file path."""
    text = str(ref)
    if text in builtin_names():
        return BUILTIN_DIR / f"{text}.yaml"
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(
            text, "scenario", "a scenario file or a built-in: " + ", ".join(builtin_names())
        )
    return path


def load_scenario(ref: str | Path, *, duration_s: float | None = None,
                  seed: int | None = None) -> Scenario:  # fmt: skip
    """Read, validate and resolve a scenario (built-in name or YAML path); raises InputError."""
    path = resolve_ref(ref)
    data = read_document(path)
    if not isinstance(data, dict):
        raise InputError(path, "(top level)", "a mapping", type(data).__name__)
    if duration_s is not None:
        if duration_s <= 0:
            raise InputError("--duration", "duration", "a positive number of seconds", duration_s)
        data["duration"] = duration_s
        warmup = parse_duration(data.get("warmup", 0))
        if warmup is not None and warmup > duration_s / 10:
            # a shortened run (--duration, --quick) keeps a proportionate warm-up
            data["warmup"] = duration_s / 10
    if seed is not None:
        data["seed"] = seed
    scenario = parse_scenario(data, file=str(path), base_dir=path.parent)
    scenario.source = str(path.resolve())
    return scenario


def parse_scenario(data: dict[str, Any], file: str, base_dir: Path) -> Scenario:
    f = Fields(data, file)
    name = f.string("name", default=Path(file).stem if file != "<replay>" else "scenario")
    description = f.string("description", default="")
    seed = f.integer("seed", minimum=0, default=1)
    rng = np.random.default_rng([seed, 1])  # resolution draws; schedules use other streams
    trace = _trace(f.mapping("trace", default=None), base_dir)
    duration = f.duration("duration", minimum=1e-3, default=None)
    if duration is None:
        if trace is None:
            f.fail("duration", "a duration (required without a trace)")
        duration = _trace_span(trace, file)
    warmup = f.duration("warmup", default=0.0)
    if warmup >= duration:
        f.fail("warmup", f"less than the duration ({duration:g}s)", warmup)
    target = _target(f.mapping("target", default={}))
    arrival = f.mapping("arrival", default={})
    process = arrival.choice("process", PROCESSES, default="poisson")
    burstiness = arrival.number("burstiness", minimum=1e-3, default=1.0)
    mode = arrival.choice("mode", ("open", "closed"), default="open")
    concurrency = arrival.integer("concurrency", minimum=1, default=1)
    arrival.finish()
    rate = f.mapping("rate", default=None)
    shape = None
    if rate is not None:
        if trace is not None:
            f.fail("rate", "no rate with a trace (the trace gives the arrival times)")
        shape = parse_shape(rate, duration, rng)
    elif trace is None and mode == "open":
        f.fail("rate", "a rate shape (e.g. {shape: constant, rps: 2}) or a trace")
    workload = f.mapping("workload", default={})
    prompt_tokens = parse_lengths(
        workload.get("prompt_tokens", 128), file, workload.name("prompt_tokens"), base_dir
    )
    output_tokens = parse_lengths(
        workload.get("output_tokens", 64), file, workload.name("output_tokens"), base_dir
    )
    shared = _shared_prefix(workload.mapping("shared_prefix", default=None))
    sessions = _sessions(workload.mapping("sessions", default=None), base_dir, mode)
    prompts = _prompts(workload.mapping("prompts", default=None), base_dir)
    tokenizer = _tokenizer(workload, base_dir)
    workload.finish()
    tiers = _tiers(f, base_dir)
    noisy = _noisy(f.mapping("noisy_neighbour", default=None), tiers, duration)
    f.get("source", default=None)  # present in resolved dicts
    f.finish()
    _check_size(shape, noisy, sessions, duration, file)
    return Scenario(
        name=name,
        description=description,
        duration_s=duration,
        warmup_s=warmup,
        seed=seed,
        target=target,
        process=process,
        burstiness=burstiness,
        mode=mode,
        concurrency=concurrency,
        shape=shape,
        tier_list=tiers,
        noisy=noisy,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        shared_prefix=shared,
        sessions=sessions,
        prompts_file=prompts,
        trace=trace,
        source=data.get("source") or "",
        tokenizer=tokenizer,
    )


MAX_REQUESTS = 5_000_000  # a schedule is drawn whole, in memory, before the load starts


def _check_size(shape: Any, noisy: NoisyNeighbour | None, sessions: Sessions | None,
                duration: float, file: str) -> None:  # fmt: skip
    """The run's requests at the shape's peak rate (each arrival with its conversation's mean
    turns) must fit ``MAX_REQUESTS``: the schedule of a rate of 1e8 a second would need tens
    of GiB before anything is checked."""
    if shape is None:
        return  # a trace: its requests are the file's
    t = np.linspace(0.0, duration, 2001)
    with np.errstate(all="ignore"):
        peak = float(np.nanmax(shape.rate(t)))
    factor = noisy.factor if noisy is not None else 1.0
    turns = sessions.turns.mean() if sessions is not None else 1.0
    expected = peak * max(1.0, factor) * duration * turns
    if not np.isfinite(expected) or expected > MAX_REQUESTS:
        raise InputError(file, "rate", f"at most {MAX_REQUESTS:,} requests over the run "
                         f"(peak {peak:g}/s over {duration:g} s)")  # fmt: skip


def _target(f: Fields) -> Target:
    path = f.choice("path", TARGET_PATHS, default="/v1/chat/completions")
    target = Target(
        path=path,
        model=f.string("model", default=None),
        headers=f.string_map("headers"),
        stream=f.boolean("stream", default=True),
        include_usage=f.boolean("include_usage", default=True),
        ignore_eos=f.boolean("ignore_eos", default=True),
        timeout_s=f.duration("timeout", minimum=0.01, default=60.0),
    )
    f.finish()
    return target


def _tiers(f: Fields, base_dir: Path) -> tuple[Tier, ...]:
    items = f.list_of_maps("tiers", min_len=1, default=None)
    if not items:
        return tuple(Tier(n, s, {"X-Tier": n}) for n, s in DEFAULT_TIERS)
    tiers, names = [], set()
    for item in items:
        name = item.string("name")
        if name in names:
            item.fail("name", "a name used once", name)
        names.add(name)
        headers = item.string_map("headers") if item.has("headers") else {"X-Tier": name}
        prompt = item.get("prompt_tokens", None)
        output = item.get("output_tokens", None)
        tiers.append(
            Tier(
                name,
                item.number("share", minimum=0.0),
                headers,
                parse_lengths(prompt, f.file, item.name("prompt_tokens"), base_dir)
                if prompt is not None
                else None,
                parse_lengths(output, f.file, item.name("output_tokens"), base_dir)
                if output is not None
                else None,
            )
        )
        item.finish()
    total = sum(t.share for t in tiers)
    if total <= 0:
        f.fail("tiers", "shares adding up to more than 0", total)
    if abs(total - 1.0) < 1e-9:
        return tuple(tiers)
    # shares are relative weights; stored normalised so the resolved form is explicit
    return tuple(Tier(t.name, t.share / total, t.headers, t.prompt_tokens, t.output_tokens)
                 for t in tiers)  # fmt: skip


def _noisy(f: Fields | None, tiers: tuple[Tier, ...], duration: float) -> NoisyNeighbour | None:
    if f is None:
        return None
    names = [t.name for t in tiers]
    noisy = NoisyNeighbour(
        f.choice("tier", names),
        f.number("factor", minimum=1.0),
        f.duration("start", default=0.0),
        f.duration("end", default=duration),
    )
    if noisy.end_s <= noisy.start_s:
        f.fail("end", f"after start ({noisy.start_s:g}s)", noisy.end_s)
    f.finish()
    return noisy


def _shared_prefix(f: Fields | None) -> SharedPrefix | None:
    if f is None:
        return None
    prefix = SharedPrefix(
        f.integer("groups", minimum=1, default=1),
        f.integer("tokens", minimum=1),
        f.number("share", minimum=0.0, maximum=1.0, default=1.0),
    )
    f.finish()
    return prefix


def _sessions(f: Fields | None, base_dir: Path, mode: str) -> Sessions | None:
    if f is None:
        return None
    if mode != "open":
        raise InputError(f.file, f.prefix, "no conversations with arrival.mode closed (open "
                         "arrivals start them)")  # fmt: skip
    turns = parse_lengths(f.get("turns"), f.file, f.name("turns"), base_dir)
    if turns.minimum < 1:
        f.fail("turns", "turn counts of at least 1 (min >= 1)", turns.minimum)
    think = f.get("think", default=5.0)
    prompt = f.get("prompt_tokens", default=None)
    sessions = Sessions(
        turns,
        parse_lengths(think, f.file, f.name("think"), base_dir, seconds=True),
        parse_lengths(prompt, f.file, f.name("prompt_tokens"), base_dir) if prompt else None,
    )
    f.finish()
    return sessions


def _prompts(f: Fields | None, base_dir: Path) -> tuple[str, str] | None:
    if f is None:
        return None
    path = Path(f.string("file")).expanduser()
    path = path if path.is_absolute() else base_dir / path
    fmt = f.choice("format", PROMPT_FORMATS, default="jsonl")
    if not path.is_file():
        f.fail("file", "an existing prompts file", str(path))
    f.finish()
    return str(path.resolve()), fmt


def _tokenizer(workload: Fields, base_dir: Path) -> str | None:
    """A Hugging Face ``tokenizer.json`` for the target's model (used when the target has no
    ``/tokenize``): a path, relative to the scenario file."""
    name = workload.string("tokenizer", default=None)
    if name is None:
        return None
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        workload.fail("tokenizer", "an existing tokenizer.json", str(path))
    return str(path.resolve())


def _trace(f: Fields | None, base_dir: Path) -> TraceReplay | None:
    if f is None:
        return None
    path = Path(f.string("path")).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        f.fail("path", "an existing trace file", str(path))
    replay = TraceReplay(
        f.choice("format", TRACE_FORMATS),
        str(path.resolve()),
        f.number("time_scale", minimum=1e-6, default=1.0),
        f.duration("start", default=0.0),
        f.duration("end", default=None),
    )
    if replay.end_s is not None and replay.end_s <= replay.start_s:
        f.fail("end", f"after start ({replay.start_s:g}s)", replay.end_s)
    f.finish()
    return replay


def _trace_span(trace: TraceReplay, file: str) -> float:
    from .traces import read_trace, window

    t = read_trace(trace.format, Path(trace.path), file, "trace.path")
    w = window(t, trace.start_s, trace.end_s, trace.time_scale)
    if len(w.t) == 0:
        raise InputError(file, "trace", "requests inside the window", "none")
    return float(w.t[-1]) + 1e-3
