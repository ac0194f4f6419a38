"""The one wait loop (aichaos.waiting): the value of the first true check, None on timeout,
bounded in count whatever the check costs."""

from __future__ import annotations

import itertools

from aichaos.waiting import wait_until


def test_returns_the_first_true_value_of_the_check():
    calls = itertools.count(1)
    assert wait_until(lambda: (n := next(calls)) >= 3 and n, timeout=5, interval=0.001) == 3


def test_gives_none_after_the_timeout_and_checks_at_least_once():
    calls = []
    assert wait_until(lambda: calls.append(1), timeout=0.05, interval=0.01) is None
    assert 1 <= len(calls) <= 7  # one more than the intervals that fit in the timeout
    calls.clear()
    assert wait_until(lambda: calls.append(1), timeout=0, interval=0.01) is None
    assert len(calls) == 1
