"""Token-length distributions for prompts and outputs: fixed, uniform, normal, lognormal and
empirical (a list of values, or a column of a trace file), all clipped to [min, max] and
rounded to whole tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .validate import Fields

DISTS = ("fixed", "uniform", "normal", "lognormal", "empirical")


@dataclass(frozen=True)
class Lengths:
    dist: str
    params: tuple[tuple[str, float], ...]  # sorted (name, value) pairs
    values: tuple[int, ...] = ()  # empirical samples
    minimum: int = 1
    maximum: int = 32768

    def p(self, name: str) -> float:
        return dict(self.params)[name]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist == "fixed":
            raw = np.full(n, self.p("value"))
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
        return np.clip(np.rint(raw), self.minimum, self.maximum).astype(np.int64)

    def mean(self) -> float:
        return float(self.sample(np.random.default_rng(0), 20000).mean())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dist": self.dist, **dict(self.params)}
        if self.dist == "empirical":
            out["values"] = list(self.values)
        out.update(min=self.minimum, max=self.maximum)
        return out


def parse_lengths(value: Any, file: str | Path, field: str, base_dir: Path) -> Lengths:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"dist": "fixed", "value": value}
    f = Fields(value, file, field)
    dist = f.choice("dist", DISTS)
    lo = f.integer("min", minimum=0, default=1)
    hi = f.integer("max", minimum=1, default=32768)
    if hi < lo:
        f.fail("max", f"a value >= min ({lo})", hi)
    params: dict[str, float] = {}
    values: tuple[int, ...] = ()
    if dist == "fixed":
        params["value"] = f.number("value", minimum=0)
    elif dist == "uniform":
        params["low"] = f.number("low", minimum=0) if f.has("low") else float(lo)
        params["high"] = f.number("high", minimum=params["low"]) if f.has("high") else float(hi)
    elif dist == "normal":
        params["mean"] = f.number("mean", minimum=0)
        params["std"] = f.number("std", minimum=0)
    elif dist == "lognormal":
        params["mean"] = f.number("mean", minimum=1e-9)
        params["sigma"] = f.number("sigma", minimum=0)
    else:
        values = _empirical(f, base_dir)
    f.finish()
    return Lengths(dist, tuple(sorted(params.items())), values, lo, hi)


def _empirical(f: Fields, base_dir: Path) -> tuple[int, ...]:
    if f.has("values"):
        values = f.number_list("values", minimum=0)
        return tuple(round(v) for v in values)
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
