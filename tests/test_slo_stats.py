"""Percentiles, bootstrap intervals and regression tests against numpy and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from aichaos.slo import stats


@pytest.mark.parametrize("percentile", [50.0, 90.0, 95.0, 99.0])
def test_percentile_is_numpys_linear_and_the_interval_matches_scipys_bootstrap(percentile):
    rng = np.random.default_rng(11)
    x = rng.lognormal(np.log(0.15), 0.5, 4000)
    est = stats.estimate(x, percentile, resamples=4000, seed=3)
    assert est.value == pytest.approx(np.percentile(x, percentile), rel=1e-12)
    assert est.samples == 4000 and est.enough
    ref = sps.bootstrap(
        (x,),
        lambda a, axis: np.percentile(a, percentile, axis=axis),
        n_resamples=4000,
        method="percentile",
        random_state=5,
    ).confidence_interval
    width = ref.high - ref.low
    # two Monte-Carlo estimates of the same interval: agree to a fraction of its width
    assert abs(est.ci[0] - ref.low) < 0.15 * width
    assert abs(est.ci[1] - ref.high) < 0.15 * width
    assert est.ci[0] <= est.value <= est.ci[1]


def test_interval_covers_the_true_percentile_at_about_the_stated_rate():
    rng = np.random.default_rng(2)
    true_p95 = np.exp(1.6448536269514722)  # standard lognormal
    covered = 0
    for i in range(200):
        x = rng.lognormal(0, 1, 600)
        lo, hi = stats.estimate(x, 95, resamples=1000, seed=i).ci
        covered += lo <= true_p95 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_enough_samples_rule():
    assert stats.required_samples(99) == 500
    assert stats.required_samples(95) == 100
    assert stats.required_samples(50) == 10
    assert stats.required_samples(99.9) == 5000
    x = np.random.default_rng(0).exponential(1, 40)
    assert not stats.estimate(x, 99).enough  # p99 from 40 samples
    assert stats.estimate(x, 50).enough
    assert stats.estimate(np.empty(0), 50).value is None


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
    table, ests = stats.summarize(x, stats.PERCENTILES, (95.0, 99.0), resamples=500, seed=4)
    assert table["count"] == x.size and table["mean"] == pytest.approx(x.mean())
    for q in stats.PERCENTILES:
        assert table[f"p{q:g}"] == pytest.approx(np.percentile(x, q), rel=1e-12)
    for q in (95.0, 99.0):
        alone = stats.estimate(x, q, resamples=500, seed=4)
        assert ests[q].value == pytest.approx(alone.value, rel=1e-12)
        lo, hi = ests[q].ci
        # other draws, same distribution: the intervals agree closely
        width = alone.ci[1] - alone.ci[0]
        assert abs(lo - alone.ci[0]) < 0.2 * width and abs(hi - alone.ci[1]) < 0.2 * width
