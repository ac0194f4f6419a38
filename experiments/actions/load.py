"""Noisy neighbour: extra traffic from one tier for a window, on top of the run's own load.

By default the neighbour is a small open-loop sender in this process: ``rate`` requests per
second to the gateway with ``X-Tier: <tier>``, non-streaming, for at most ``max_duration_s``
(a stop nobody sent cannot make it run forever). Its requests are the fault, not the measured
load, so they are counted (returned by the rollback) but not written to the run's records.
With ``scenario`` (a scenario file or name), the neighbour is instead the scenario run by the
load runner of ``aichaos.scenarios`` (imported only then), writing its records to the run.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from chaoslib.exceptions import ActivityFailed

from .. import context

WORKERS = 8
MAX_BACKLOG = 64  # requests waiting for a worker; beyond it a tick is skipped, not queued
REQUEST_TIMEOUT = 30.0


class Neighbour:
    def __init__(self, url: str, tier: str, rate: float, max_tokens: int, max_duration_s: float):
        self.url, self.tier, self.rate = url, tier, rate
        self.max_tokens, self.max_duration_s = max_tokens, max_duration_s
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._backlog = 0
        self._client = httpx.Client(timeout=REQUEST_TIMEOUT)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="aichaos-neighbour")
        self._thread = threading.Thread(target=self._send_loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _one(self, n: int) -> None:
        body = {
            "messages": [{"role": "user", "content": f"noisy neighbour request {n}"}],
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
        }
        try:
            response = self._client.post(
                f"{self.url}/v1/chat/completions", json=body, headers={"X-Tier": self.tier}
            )
            key = str(response.status_code)
        except httpx.HTTPError as exc:
            key = type(exc).__name__
        with self._lock:
            self.counts[key] += 1
            self._backlog -= 1

    def _send_loop(self) -> None:
        started = time.monotonic()
        interval = 1.0 / self.rate
        n = 0
        while not self._stop.is_set():
            due = started + n * interval
            if due - started > self.max_duration_s:
                break
            self._stop.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                break
            with self._lock:
                if self._backlog >= MAX_BACKLOG:
                    self.counts["skipped"] += 1
                    n += 1
                    continue
                self._backlog += 1
            self._pool.submit(self._one, n)
            n += 1

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        with self._lock:
            return dict(self.counts)


class _ScenarioNeighbour:
    """The neighbour as a scenario driven by the load runner (issue 5's ``LoadRunner``)."""

    def __init__(self, scenario: str, tier: str, url: str, configuration: dict | None):
        try:
            from aichaos.scenarios.runner import LoadRunner
            from aichaos.scenarios.spec import load_scenario
        except ImportError as exc:
            raise ActivityFailed(f"scenario neighbours need aichaos.scenarios: {exc}") from None
        run_dir = context.run_dir(configuration)
        try:
            spec = load_scenario(scenario)
        except Exception as exc:  # InputError and friends: one line for the journal
            raise ActivityFailed(f"scenario {scenario!r}: {exc}") from None
        # its own name, so its files do not collide with the run's own load runner
        self.runner = LoadRunner(spec, url, run_dir, name=f"noisy-{tier}")

    def start(self) -> None:
        self.runner.start(time.time())

    def stop(self) -> dict[str, int]:
        return {"exit_code": self.runner.stop()}


_RUNNING: dict[str, Any] = {}
_RUNNING_LOCK = threading.Lock()


def noisy_neighbour(
    tier: str = "free",
    rate: float = 20.0,
    max_tokens: int = 16,
    max_duration_s: float = 600.0,
    scenario: str | None = None,
    configuration: dict | None = None,
) -> dict[str, Any]:
    """Start extra traffic for ``tier`` (``rate`` requests/s) until the rollback stops it."""
    if not (0 < rate <= 500):
        raise ActivityFailed(f"rate: expected requests per second in (0, 500], got {rate}")
    url = context.target_url(configuration)
    neighbour: Any
    if scenario is not None:
        neighbour = _ScenarioNeighbour(scenario, tier, url, configuration)
    else:
        neighbour = Neighbour(url, tier, float(rate), int(max_tokens), float(max_duration_s))
    with _RUNNING_LOCK:
        if tier in _RUNNING:
            raise ActivityFailed(f"a noisy neighbour for tier {tier!r} is already running")
        _RUNNING[tier] = neighbour
    neighbour.start()
    return {"tier": tier, "rate": rate, "target": url, "scenario": scenario}


def stop_noisy_neighbours(configuration: dict | None = None) -> dict[str, dict[str, int]]:
    """Rollback: stop every noisy neighbour; per tier, the answers it got (status → count)."""
    with _RUNNING_LOCK:
        running = dict(_RUNNING)
        _RUNNING.clear()
    return {tier: neighbour.stop() for tier, neighbour in running.items()}
