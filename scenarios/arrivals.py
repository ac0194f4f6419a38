"""Arrival processes: when requests are meant to be sent, from a rate function and a seed.

- ``poisson``: exponential gaps; a time-varying rate is realised exactly by thinning (Lewis and
  Shedler): candidates from a homogeneous process at the peak rate, each kept with probability
  rate(t) / peak.
- ``gamma``: gamma gaps with shape = burstiness and scale = 1 / (rate × burstiness), as vLLM's
  ``--burstiness`` defines them (1 is Poisson, below 1 burstier, above 1 smoother). A
  time-varying rate is realised by time rescaling: a unit-rate gamma renewal process in
  operational time Λ(t) = ∫ rate, mapped back through Λ⁻¹ (thinning would turn it Poisson).
- ``constant``: evenly spaced in operational time (rate 4 → every 0.25 s).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PROCESSES = ("poisson", "gamma", "constant")
RateFn = Callable[[np.ndarray], np.ndarray]


def time_grid(duration_s: float) -> np.ndarray:
    # fine enough that a rate's integral is exact to well under one request on any run
    step = max(0.001, duration_s / 2_000_000)
    return np.arange(0.0, duration_s + step, step)


def arrival_times(rate: RateFn, duration_s: float, process: str, rng: np.random.Generator,
                  burstiness: float = 1.0) -> np.ndarray:  # fmt: skip
    """Ascending times in [0, duration_s)."""
    if duration_s <= 0:
        return np.zeros(0)
    if process == "poisson":
        return _thinned_poisson(rate, duration_s, rng)
    return _rescaled(rate, duration_s, process, rng, burstiness)


def _thinned_poisson(rate: RateFn, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    grid = time_grid(duration_s)
    peak = float(np.max(rate(grid))) if len(grid) else 0.0
    if peak <= 0:
        return np.zeros(0)
    n = rng.poisson(peak * duration_s)
    candidates = np.sort(rng.uniform(0.0, duration_s, n))
    keep = rng.uniform(0.0, peak, n) < rate(candidates)
    return candidates[keep]


def _rescaled(rate: RateFn, duration_s: float, process: str, rng: np.random.Generator,
              burstiness: float) -> np.ndarray:  # fmt: skip
    grid = time_grid(duration_s)
    r = np.maximum(rate(grid), 0.0)
    cumulative = np.concatenate(([0.0], np.cumsum((r[1:] + r[:-1]) / 2.0 * np.diff(grid))))
    total = cumulative[-1]
    if total <= 0:
        return np.zeros(0)
    if process == "constant":
        ops = np.arange(0.0, total, 1.0)
    else:
        gaps = unit_gaps(process, int(total * 1.2) + 20, rng, burstiness)
        ops = np.cumsum(gaps)
        while ops[-1] < total:  # rare: a bursty draw ran short; extend, bounded by the total
            more = np.cumsum(unit_gaps(process, int(total * 0.2) + 20, rng, burstiness))
            ops = np.concatenate((ops, ops[-1] + more))
        ops = ops[ops < total]
    times = np.interp(ops, cumulative, grid)
    return times[times < duration_s]


def unit_gaps(process: str, n: int, rng: np.random.Generator,
              burstiness: float = 1.0) -> np.ndarray:  # fmt: skip
    """``n`` gaps with mean 1 (divide by a rate to get seconds)."""
    if process == "poisson":
        return rng.exponential(1.0, n)
    if process == "gamma":
        return rng.gamma(burstiness, 1.0 / burstiness, n)
    return np.ones(n)
