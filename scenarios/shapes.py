"""Rate shapes: the request rate (per second) as a function of time since the run's start.

Each shape is a small frozen object with a vectorised ``rate(t)`` over a numpy array, built from
its validated scenario mapping by ``parse_shape``. Arrivals are drawn from these rates exactly
(thinning or time rescaling in ``arrivals``), never by changing a user count once a second.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .validate import Fields


class Shape:
    kind = ""

    def rate(self, t: np.ndarray) -> np.ndarray:  # requests per second at times t
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Shape):
    rps: float
    kind = "constant"

    def rate(self, t: np.ndarray) -> np.ndarray:
        return np.full_like(t, self.rps, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": "constant", "rps": self.rps}


@dataclass(frozen=True)
class Ramp(Shape):
    start_rps: float
    end_rps: float
    length_s: float
    curve: str = "linear"  # linear | exponential
    kind = "ramp"

    def rate(self, t: np.ndarray) -> np.ndarray:
        x = np.clip(t / self.length_s, 0.0, 1.0) if self.length_s > 0 else np.ones_like(t)
        if self.curve == "exponential":
            # geometric interpolation: equal ratios in equal times, as load tests ramp
            lo = max(self.start_rps, 1e-6)
            hi = max(self.end_rps, 1e-6)
            return lo * (hi / lo) ** x
        return self.start_rps + (self.end_rps - self.start_rps) * x

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": "ramp",
            "from": self.start_rps,
            "to": self.end_rps,
            "over": self.length_s,
            "curve": self.curve,
        }


@dataclass(frozen=True)
class Step(Shape):
    times: tuple[float, ...]  # ascending, first is 0
    rates: tuple[float, ...]
    kind = "step"

    def rate(self, t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(np.asarray(self.times), t, side="right") - 1
        return np.asarray(self.rates)[np.clip(idx, 0, len(self.rates) - 1)]

    def to_dict(self) -> dict[str, Any]:
        steps = [{"at": a, "rps": r} for a, r in zip(self.times, self.rates, strict=True)]
        return {"shape": "step", "steps": steps}


@dataclass(frozen=True)
class Spike(Shape):
    base_rps: float
    peak_rps: float
    at_s: float
    length_s: float
    kind = "spike"

    def rate(self, t: np.ndarray) -> np.ndarray:
        inside = (t >= self.at_s) & (t < self.at_s + self.length_s)
        return np.where(inside, self.peak_rps, self.base_rps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": "spike",
            "base": self.base_rps,
            "peak": self.peak_rps,
            "at": self.at_s,
            "length": self.length_s,
        }


@dataclass(frozen=True)
class Diurnal(Shape):
    """A 24-hour profile compressed into ``period_s``: a sinusoid between peak and
    peak / peak_to_trough with its maximum at ``peak_hour``, or an hourly table of
    multipliers of ``peak_rps`` (linearly interpolated, wrapping at midnight)."""

    peak_rps: float
    period_s: float
    peak_to_trough: float = 2.5
    peak_hour: float = 14.0
    start_hour: float = 0.0
    hourly: tuple[float, ...] | None = None
    kind = "diurnal"

    def rate(self, t: np.ndarray) -> np.ndarray:
        hour = (self.start_hour + 24.0 * t / self.period_s) % 24.0
        if self.hourly is not None:
            table = np.asarray((*self.hourly, self.hourly[0]))
            return self.peak_rps * np.interp(hour, np.arange(25.0), table)
        trough = self.peak_rps / self.peak_to_trough
        wave = (1.0 + np.cos(2.0 * math.pi * (hour - self.peak_hour) / 24.0)) / 2.0
        return trough + (self.peak_rps - trough) * wave

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shape": "diurnal",
            "peak": self.peak_rps,
            "period": self.period_s,
            "start_hour": self.start_hour,
        }
        if self.hourly is not None:
            out["hourly"] = list(self.hourly)
        else:
            out.update(peak_to_trough=self.peak_to_trough, peak_hour=self.peak_hour)
        return out


@dataclass(frozen=True)
class Burst(Shape):
    """A baseline with bursts of ``factor`` × baseline lasting ``length_s``: every ``every_s``
    from ``first_s`` (periodic), or at ``starts`` (random bursts are drawn once, from the seed,
    when the scenario is resolved, so the resolved scenario replays exactly)."""

    base_rps: float
    factor: float
    length_s: float
    starts: tuple[float, ...]
    kind = "burst"

    def rate(self, t: np.ndarray) -> np.ndarray:
        inside = np.zeros_like(t, dtype=bool)
        for s in self.starts:
            inside |= (t >= s) & (t < s + self.length_s)
        return np.where(inside, self.base_rps * self.factor, self.base_rps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": "burst",
            "base": self.base_rps,
            "factor": self.factor,
            "length": self.length_s,
            "starts": list(self.starts),
        }


@dataclass(frozen=True)
class Stages(Shape):
    """Shapes chained in time; each stage sees time from its own start."""

    lengths: tuple[float, ...]
    shapes: tuple[Shape, ...] = field(default=())
    kind = "stages"

    def rate(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros_like(t, dtype=float)
        start = 0.0
        for i, (length, shape) in enumerate(zip(self.lengths, self.shapes, strict=True)):
            last = i == len(self.lengths) - 1
            mask = (t >= start) & ((t < start + length) | last)
            if mask.any():
                out[mask] = shape.rate(t[mask] - start)
            start += length
        return out

    def to_dict(self) -> dict[str, Any]:
        stages = []
        for length, shape in zip(self.lengths, self.shapes, strict=True):
            stages.append({"duration": length, **shape.to_dict()})
        return {"shape": "stages", "stages": stages}


SHAPES = ("constant", "ramp", "step", "spike", "diurnal", "burst", "stages")


def parse_shape(f: Fields, duration_s: float, rng: np.random.Generator) -> Shape:
    """Build a shape from ``f`` (a validated mapping); ``duration_s`` is the span it covers."""
    shape = _parse_shape(f, duration_s, rng)
    f.finish()
    return shape


def _parse_shape(f: Fields, duration_s: float, rng: np.random.Generator) -> Shape:
    kind = f.choice("shape", SHAPES, default="constant")
    if kind == "constant":
        return Constant(f.number("rps", minimum=0.0))
    if kind == "ramp":
        curve = f.choice("curve", ("linear", "exponential"), default="linear")
        minimum = 1e-6 if curve == "exponential" else 0.0
        return Ramp(
            f.number("from", minimum=minimum),
            f.number("to", minimum=minimum),
            f.duration("over", default=duration_s),
            curve,
        )
    if kind == "step":
        steps = f.list_of_maps("steps", min_len=1)
        times, rates = [], []
        for s in steps:
            times.append(s.duration("at"))
            rates.append(s.number("rps", minimum=0.0))
        if times[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(times)):
            f.fail("steps", "ascending 'at' times starting at 0", times)
        return Step(tuple(times), tuple(rates))
    if kind == "spike":
        return Spike(
            f.number("base", minimum=0.0),
            f.number("peak", minimum=0.0),
            f.duration("at"),
            f.duration("length", minimum=1e-9),
        )
    if kind == "diurnal":
        hourly = f.number_list("hourly", length=24, minimum=0.0, default=None)
        return Diurnal(
            f.number("peak", minimum=1e-9),
            f.duration("period", default=duration_s, minimum=1e-9),
            f.number("peak_to_trough", minimum=1.0, default=2.5),
            f.number("peak_hour", minimum=0.0, maximum=24.0, default=14.0),
            f.number("start_hour", minimum=0.0, maximum=24.0, default=0.0),
            tuple(hourly) if hourly is not None else None,
        )
    if kind == "burst":
        base = f.number("base", minimum=0.0)
        factor = f.number("factor", minimum=0.0)
        length = f.duration("length", minimum=1e-9)
        if f.has("starts"):
            starts = tuple(f.number_list("starts", minimum=0.0))
        elif f.has("count"):
            # random bursts: uniform start times, drawn once from the scenario's seed
            count = f.integer("count", minimum=0)
            starts = tuple(sorted(float(x) for x in rng.uniform(0, duration_s, count)))
        else:
            every = f.duration("every", minimum=1e-9)
            first = f.duration("first", default=every)
            starts = tuple(float(x) for x in np.arange(first, duration_s, every))
        return Burst(base, factor, length, starts)
    stages = f.list_of_maps("stages", min_len=1)
    lengths, shapes = [], []
    for stage in stages:
        length = stage.duration("duration", minimum=1e-9)
        lengths.append(length)
        shapes.append(parse_shape(stage, length, rng))
    return Stages(tuple(lengths), tuple(shapes))
