"""Statistics for SLIs: exact percentiles with distribution-free confidence intervals, and
the tests the regression gate uses.

Percentiles are numpy's default (linear interpolation between order statistics), computed
exactly from all samples.

The interval of a percentile is the distribution-free one from order statistics (the same as
``scipy.stats.quantile_test(...).confidence_interval()``): the number of samples at or below
the true p-quantile is Binomial(n, p), so the k-th and (u+1)-th smallest samples, with k and u
the binomial's α/2 and 1−α/2 quantiles, bracket it with at least the stated confidence, for
any distribution and any n. A side the sample cannot bound is None: from 30 samples nothing
bounds a p99 from above (0.99³⁰ = 74% of such samples lie wholly below it), so a verdict
"p99 ≤ T" cannot pass on them, though it can fail. Verdicts come from these intervals, not
from sample counts.

The regression gate compares two runs' percentiles by bootstrap (``percentile_difference``),
cheaply and exactly in distribution: a bootstrap resample of ``n`` values from the sorted
sample ``x`` is ``x[ceil(n*U) - 1]`` for ``n`` uniform draws ``U``, so its ``k``-th order
statistic is ``x[ceil(n*U_(k)) - 1]`` with ``U_(k) ~ Beta(k, n - k + 1)``, and the next one is
``U_(k+1) = U_(k) + (1 - U_(k)) * Beta(1, n - k)``. Drawing those two per replicate gives the
bootstrap distribution of numpy's interpolated percentile in O(B) after one partial sort of the
narrow band of ranks the draws land in. ``required_samples`` is that gate's floor: a percentile
p is compared only with at least ``min_tail`` samples at or beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def required_samples(percentile: float, min_tail: int = 5) -> int:
    tail = 1.0 - percentile / 100.0
    return math.ceil(round(min_tail / tail, 6)) if tail > 0 else 1 << 62


@dataclass
class Estimate:
    value: float | None
    ci: tuple[float | None, float | None] | None  # a side None: the sample cannot bound it
    samples: int


def order_ranks(n: int, percentile: float, confidence: float) -> tuple[int | None, int | None]:
    """0-based ranks (into the sorted sample) of the distribution-free interval's ends for
    the ``percentile`` of ``n`` samples; None for a side ``n`` samples cannot bound."""
    alpha = (1.0 - confidence) / 2.0
    p = percentile / 100.0
    k = int(sps.binom.ppf(alpha, n, p))
    u = int(sps.binom.ppf(1.0 - alpha, n, p))
    return (k - 1 if k >= 1 else None), (u if u < n else None)


def percentiles(values: np.ndarray, qs=PERCENTILES) -> dict[str, float | int]:
    """p50 .. p99.9 and the count, as the latency section of slo.json shows them."""
    out: dict[str, float | int] = {"count": int(values.size)}
    if values.size:
        got = np.percentile(values, list(qs))
        out |= {f"p{q:g}": float(v) for q, v in zip(qs, got, strict=True)}
        out["mean"] = float(values.mean())
    return out


def _draw_order_stat_pairs(n: int, k: int, b: int, rng: np.random.Generator):
    """Indices (0-based, into the sorted sample) of the k-th and (k+1)-th order statistics of
    ``b`` bootstrap resamples (``k`` 1-based)."""
    u_k = rng.beta(k, n - k + 1, b)
    u_next = u_k + (1.0 - u_k) * rng.beta(1, n - k, b) if k < n else u_k
    i_k = np.clip(np.ceil(n * u_k).astype(np.int64) - 1, 0, n - 1)
    i_next = np.clip(np.ceil(n * u_next).astype(np.int64) - 1, 0, n - 1)
    return i_k, i_next


def bootstrap_replicates(
    values: np.ndarray, percentile: float, resamples: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """The exact percentile and ``resamples`` bootstrap replicates of it."""
    n = values.size
    h = (n - 1) * percentile / 100.0
    lo = math.floor(h)
    frac = h - lo
    i_k, i_next = _draw_order_stat_pairs(n, lo + 1, resamples, rng)
    first = min(int(i_k.min()), lo)
    last = max(int(i_next.max()), min(lo + 1, n - 1))
    # only the ranks the draws can reach are sorted: partition once around the band
    part = np.partition(values, (first, last)) if n > 1 else values.copy()
    band = np.sort(part[first : last + 1])
    x = lambda i: band[i - first]  # noqa: E731 - a lookup into the sorted band
    exact = float(x(lo) + frac * (x(min(lo + 1, n - 1)) - x(lo)))
    reps = x(i_k) + frac * (x(i_next) - x(i_k))
    return exact, reps


def estimate(values: np.ndarray, percentile: float, *, confidence: float = 0.95) -> Estimate:
    """The ``percentile`` of ``values`` and its distribution-free interval."""
    return summarize(values, (), (percentile,), confidence=confidence)[1][percentile]


def summarize(
    values: np.ndarray,
    plain: tuple[float, ...] = PERCENTILES,
    with_ci: tuple[float, ...] = (),
    *,
    confidence: float = 0.95,
) -> tuple[dict[str, float | int], dict[float, Estimate]]:
    """``percentiles(values, plain)`` and an ``Estimate`` for every q of ``with_ci`` from ONE
    partial sort: every order statistic any of them needs (the two around each percentile,
    the two ends of each interval) is a pivot of a single ``np.partition``, so a large
    sample is scanned once, not once per percentile."""
    n = int(values.size)
    table: dict[str, float | int] = {"count": n}
    if n == 0:
        return table, {q: Estimate(None, None, 0) for q in with_ci}
    ranks = {q: order_ranks(n, q, confidence) for q in with_ci}
    pivots: set[int] = set()
    for q in (*plain, *with_ci):
        h = (n - 1) * q / 100.0
        pivots.update((math.floor(h), min(math.floor(h) + 1, n - 1)))
    for ends in ranks.values():
        pivots.update(r for r in ends if r is not None)
    part = np.partition(values, sorted(pivots)) if n > 1 else values.copy()

    def at(q: float) -> float:
        h = (n - 1) * q / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        return float(part[lo] + (h - lo) * (part[hi] - part[lo]))

    for q in plain:
        table[f"p{q:g}"] = at(q)
    table["mean"] = float(values.mean())
    out: dict[float, Estimate] = {}
    for q, (k, u) in ranks.items():
        ci = (None if k is None else float(part[k]), None if u is None else float(part[u]))
        out[q] = Estimate(at(q), ci, n)
    return table, out


# --- regression tests --------------------------------------------------------------------------


def mann_whitney_greater(new: np.ndarray, base: np.ndarray) -> float:
    """One-sided p-value that ``new`` is stochastically greater (slower) than ``base``."""
    if new.size == 0 or base.size == 0:
        return float("nan")
    return float(sps.mannwhitneyu(new, base, alternative="greater", method="asymptotic").pvalue)


def percentile_difference(
    base: np.ndarray,
    new: np.ndarray,
    percentile: float,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """new − base percentile and its bootstrap interval (independent resamples of each)."""
    rng = np.random.default_rng(seed)
    b_exact, b_reps = bootstrap_replicates(base, percentile, resamples, rng)
    n_exact, n_reps = bootstrap_replicates(new, percentile, resamples, rng)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(n_reps - b_reps, [alpha, 1.0 - alpha])
    return n_exact - b_exact, (float(lo), float(hi))


def two_proportion_greater(bad_base: int, n_base: int, bad_new: int, n_new: int) -> float:
    """One-sided p-value of the pooled two-proportion z test that the new ratio is higher."""
    if n_base == 0 or n_new == 0:
        return float("nan")
    pooled = (bad_base + bad_new) / (n_base + n_new)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_base + 1 / n_new))
    diff = bad_new / n_new - bad_base / n_base
    if se == 0:
        return 1.0 if diff <= 0 else 0.0
    return float(sps.norm.sf(diff / se))
