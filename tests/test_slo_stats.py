"""Percentiles, their distribution-free intervals and the regression tests, against numpy and
scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from aichaos.slo import stats


@pytest.mark.parametrize("n", [30, 200, 4000])
@pytest.mark.parametrize("percentile", [50.0, 90.0, 95.0, 99.0])
def test_percentile_is_numpys_linear_and_the_interval_is_scipys_quantile_test(percentile, n):
    x = np.random.default_rng(11).lognormal(np.log(0.15), 0.5, n)
    est = stats.estimate(x, percentile)
    assert est.value == pytest.approx(np.percentile(x, percentile), rel=1e-12)
    assert est.samples == n
    ref = sps.quantile_test(x, q=0, p=percentile / 100).confidence_interval(0.95)
    for mine, theirs in zip(est.ci, (ref.low, ref.high), strict=True):
        assert (mine is None and np.isnan(theirs)) or mine == theirs
    low = est.ci[0] if est.ci[0] is not None else -np.inf
    high = est.ci[1] if est.ci[1] is not None else np.inf
    assert low <= est.value <= high


def test_interval_covers_the_true_percentile_at_least_at_the_stated_rate():
    rng = np.random.default_rng(2)
    true_p95 = np.exp(1.6448536269514722)  # standard lognormal
    covered = 0
    for _ in range(400):
        lo, hi = stats.estimate(rng.lognormal(0, 1, 600), 95).ci
        covered += lo <= true_p95 <= hi
    assert 0.93 <= covered / 400 <= 0.995


def test_a_tail_percentile_of_few_samples_has_no_upper_bound():
    x = np.random.default_rng(0).exponential(1, 30)
    low, high = stats.estimate(x, 99).ci
    assert high is None and low is not None  # 0.99**30 = 74%: nothing bounds p99 above
    assert None not in stats.estimate(x, 50).ci
    assert stats.estimate(np.empty(0), 50).value is None
    assert stats.order_ranks(368, 99, 0.95)[1] is not None  # 0.99**368 < 2.5%
    assert stats.order_ranks(367, 99, 0.95)[1] is None
    # the regression gate's floor of samples beyond a percentile
    assert stats.required_samples(99) == 500 and stats.required_samples(50) == 10


def test_two_proportion_test_agrees_with_chi_square():
    bad_a, n_a, bad_b, n_b = 30, 5000, 55, 5000
    one_sided = stats.two_proportion_greater(bad_a, n_a, bad_b, n_b)
    table = [[bad_a, n_a - bad_a], [bad_b, n_b - bad_b]]
    _, p_two, _, _ = sps.chi2_contingency(table, correction=False)
    assert 2 * one_sided == pytest.approx(p_two, rel=1e-9)
    assert stats.two_proportion_greater(bad_b, n_b, bad_a, n_a) > 0.99


def test_mann_whitney_and_percentile_difference():
    rng = np.random.default_rng(4)
    base = rng.lognormal(np.log(0.2), 0.4, 3000)
    slower = base * 1.2
    assert stats.mann_whitney_greater(slower, base) < 1e-6
    same = rng.lognormal(np.log(0.2), 0.4, 3000)
    assert stats.mann_whitney_greater(same, base) > 0.01
    diff, (lo, hi) = stats.percentile_difference(base, slower, 95, seed=1)
    assert diff == pytest.approx(np.percentile(slower, 95) - np.percentile(base, 95))
    assert 0 < lo < diff < hi


def test_one_partition_summary_equals_the_separate_estimates():
    x = np.random.default_rng(9).gamma(2.0, 0.1, 20_000)
    table, ests = stats.summarize(x, stats.PERCENTILES, (95.0, 99.0))
    assert table["count"] == x.size and table["mean"] == pytest.approx(x.mean())
    for q in stats.PERCENTILES:
        assert table[f"p{q:g}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
    for q in (95.0, 99.0):
        assert ests[q] == stats.estimate(x, q)
