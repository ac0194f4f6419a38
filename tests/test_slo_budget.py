"""Error budget and burn-rate math against the SRE workbook's worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from aichaos.slo import budget as bm
from aichaos.slo.spec import AlertRule, load_spec

DAY = 86400.0


def test_workbook_budget_cases():
    objective, rate = 0.999, 100.0  # any steady request rate gives the same shares
    period = rate * 30 * DAY
    # a 14.4x burn for one hour spends 2% of a 30-day budget
    bad = 14.4 * (1 - objective) * rate * 3600
    assert bm.budget_spent(bad, objective, period) == pytest.approx(0.02)
    # a 6x burn for six hours spends 5%
    bad = 6 * (1 - objective) * rate * 6 * 3600
    assert bm.budget_spent(bad, objective, period) == pytest.approx(0.05)
    assert bm.burn_rate(0.0144, objective) == pytest.approx(14.4)
    # 99.9% over 30 days allows 43.2 minutes of full outage: that spends exactly the budget
    assert bm.budget_spent(rate * 43.2 * 60, objective, period) == pytest.approx(1.0)


def test_default_alerts_are_the_workbooks():
    rules = {(a.burn_rate, a.long_window_s, a.short_window_s) for a in load_spec("default").alerts}
    assert rules == {(14.4, 3600, 300), (6.0, 21600, 1800), (1.0, 3 * DAY, 6 * 3600)}


def _replay(rule, fault_start, fault_s, seconds, base_ratio=0.0, fault_ratio=1.0, rate=10):
    total = np.full(seconds, float(rate))
    bad = np.full(seconds, rate * base_ratio)
    bad[fault_start : fault_start + fault_s] = rate * fault_ratio
    holds, _ = bm.alert_holds(rule, total, bad, 0.999, rate, base_ratio)
    return bm.first_firing(holds, 0.0, fault_start)


def test_a_full_outage_pages_after_the_workbooks_detection_times():
    page_1h = AlertRule("p", "page", 14.4, 3600, 300)
    page_6h = AlertRule("p6", "page", 6.0, 6 * 3600, 1800)
    ticket = AlertRule("t", "ticket", 1.0, 3 * DAY, 6 * 3600)
    # 100% errors: the 1 h window reaches 1.44% bad after 0.0144 * 3600 = 51.84 s
    assert _replay(page_1h, 100, 600, 1000) == 100 + 52
    assert _replay(page_6h, 100, 600, 1000) == 100 + 130  # 0.006 * 21600 = 129.6 s
    assert _replay(ticket, 100, 600, 1000) == 100 + 260  # 0.001 * 259200 = 259.2 s
    # a 40 s outage never pages on the 1 h window
    assert _replay(page_1h, 100, 40, 1000) is None
    # 10% errors: 1 h window needs 0.0144 / 0.1 * 3600 = 518.4 s
    assert _replay(page_1h, 100, 900, 1000, fault_ratio=0.1) == 100 + 519


def test_prefill_at_the_baseline_error_ratio_shortens_detection():
    rule = AlertRule("p", "page", 14.4, 3600, 300)
    # with 0.5 % errors before the run, the window already holds 0.005 * 3600 s worth of bad
    # events: (0.005 * (3600 - k) + k) / 3600 >= 0.0144  ->  k >= 34.0 s
    assert _replay(rule, 100, 600, 1000, base_ratio=0.005) == 100 + 35


def test_time_to_recover_needs_the_hold():
    flips = {5: False, 6: False}  # a relapse at 5-6 s after the end restarts the streak

    def within(a, b):
        k = round(b - 100.0)
        return k >= 3 and flips.get(k, True) is not False

    assert bm.time_to_recover(100.0, 200.0, 10.0, 4.0, within) == 7.0
    assert bm.time_to_recover(100.0, 105.0, 10.0, 4.0, within) is None


def test_time_to_failover():
    t = np.arange(0.0, 10.0, 0.5)
    ttft = np.full(t.size, 0.2)
    fallback = t >= 3.0
    assert bm.time_to_failover(t, ttft, fallback, 1.0, 8.0) == pytest.approx(2.2)
    assert bm.time_to_failover(t, ttft, np.zeros(t.size, bool), 1.0, 8.0) is None


def test_an_alert_on_fewer_bad_events_than_the_minimum_is_low_traffic_not_a_detection():
    """A short game day with no history to pre-fill from: one bad request early in the run
    burns both windows past the factor; it is no detection until the long window holds 5 bad
    events the run saw."""
    rule = AlertRule("p", "page", 14.4, 3600, 300)
    total = np.ones(120)
    bad = np.zeros(120)
    bad[10] = 1.0  # one early bad event
    bad[60:] = 1.0  # the fault, from 60 s
    holds, low = bm.alert_holds(rule, total, bad, 0.999, 0.0, 0.0, min_events=5)
    assert low[10:60].all() and not holds[:60].any()  # one event burns, but is no evidence
    assert bm.first_firing(holds, 0.0, 60.0) == 64.0  # the early one and the fault's 4th
    before, _ = bm.alert_holds(rule, total, bad, 0.999, 0.0, 0.0, min_events=1)
    assert bm.first_firing(before, 0.0, 60.0) == 61.0  # what it "detected" on one event
