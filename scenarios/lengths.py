"""Token-length distributions for prompts and outputs: fixed, uniform, normal, lognormal and
empirical (a list of values, or a column of a trace file), all clipped to [min, max] and
rounded to whole tokens. The same distributions draw durations (a conversation's think time):
then every value is a duration (``5s``, ``500ms``) and nothing is rounded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aichaos.errors import InputError
from aichaos.units import EXPECTED, MAX_DURATION_S

from .validate import Fields, parse_duration

DISTS = ("fixed", "uniform", "normal", "lognormal", "empirical")


@dataclass(frozen=True)
class Lengths:
    dist: str
    params: tuple[tuple[str, float], ...]  # sorted (name, value) pairs
    values: tuple[float, ...] = ()  # empirical samples
    minimum: float = 1
    maximum: float = 32768
    seconds: bool = False  # durations, not whole tokens

    def p(self, name: str) -> float:
        return dict(self.params)[name]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist == "fixed":
            raw = np.full(n, self.p("value"))
        elif self.dist == "uniform" and self.seconds:
            raw = rng.uniform(self.p("low"), self.p("high"), n)
        elif self.dist == "uniform":
            raw = rng.uniform(self.p("low"), self.p("high") + 1.0, n)
            raw = np.floor(raw)
        elif self.dist == "normal":
            raw = rng.normal(self.p("mean"), self.p("std"), n)
        elif self.dist == "lognormal":
            sigma = self.p("sigma")
            # parameterised by its mean, which is what people know about their traffic
            mu = math.log(self.p("mean")) - sigma * sigma / 2.0
            raw = rng.lognormal(mu, sigma, n)
        else:
            raw = rng.choice(np.asarray(self.values, dtype=float), n)
        if self.seconds:
            return np.clip(raw, self.minimum, self.maximum).astype(np.float64)
        return np.clip(np.rint(raw), self.minimum, self.maximum).astype(np.int64)

    def mean(self) -> float:
        return float(self.sample(np.random.default_rng(0), 20000).mean())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dist": self.dist, **dict(self.params)}
        if self.dist == "empirical":
            out["values"] = list(self.values)
        out.update(min=self.minimum, max=self.maximum)
        return out


def parse_lengths(value: Any, file: str | Path, field: str, base_dir: Path, *,
                  seconds: bool = False) -> Lengths:  # fmt: skip
    """A length distribution; with ``seconds``, a distribution of durations (a bare duration
    such as ``5s`` is a fixed one)."""
    if seconds and isinstance(value, int | float | str) and not isinstance(value, bool):
        fixed = parse_duration(value)
        if fixed is None:
            raise InputError(file, field, f"{EXPECTED}, or a distribution {{dist: ...}}", value)
        value = {"dist": "fixed", "value": fixed}
    elif isinstance(value, int) and not isinstance(value, bool):
        value = {"dist": "fixed", "value": value}
    f = Fields(value, file, field)
    amount = f.duration if seconds else f.number
    dist = f.choice("dist", DISTS)
    if seconds:
        lo = f.duration("min", default=0.0)
        hi = f.duration("max", default=MAX_DURATION_S)
    else:
        lo = f.integer("min", minimum=0, default=1)
        hi = f.integer("max", minimum=1, default=32768)
    if hi < lo:
        f.fail("max", f"a value >= min ({lo:g})", hi)
    params: dict[str, float] = {}
    values: tuple[float, ...] = ()
    if dist == "fixed":
        params["value"] = amount("value", minimum=0)
    elif dist == "uniform":
        params["low"] = amount("low", minimum=0) if f.has("low") else float(lo)
        params["high"] = amount("high", minimum=params["low"]) if f.has("high") else float(hi)
    elif dist == "normal":
        params["mean"] = amount("mean", minimum=0)
        params["std"] = amount("std", minimum=0)
    elif dist == "lognormal":
        params["mean"] = amount("mean", minimum=1e-9)
        params["sigma"] = f.number("sigma", minimum=0)
    else:
        values = _empirical(f, base_dir, seconds)
    f.finish()
    return Lengths(dist, tuple(sorted(params.items())), values, lo, hi, seconds)


def _empirical(f: Fields, base_dir: Path, seconds: bool) -> tuple[float, ...]:
    if f.has("values"):
        values = f.number_list("values", minimum=0)
        return tuple(values) if seconds else tuple(round(v) for v in values)
    if seconds:
        f.fail("values", "a list of seconds (a trace gives token lengths, not durations)")
    from .traces import TRACE_FORMATS, read_trace

    path = f.string("trace")
    fmt = f.choice("format", TRACE_FORMATS)
    column = f.choice("column", ("prompt", "output"))
    trace = read_trace(fmt, _resolve(path, base_dir), f.file, f.name("trace"))
    col = trace.prompt_tokens if column == "prompt" else trace.output_tokens
    return tuple(int(v) for v in col)


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p
