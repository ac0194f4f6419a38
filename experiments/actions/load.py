"""Noisy neighbour: extra traffic from one tier for a window, on top of the run's own load.

By default the neighbour is a small open-loop sender in this process: ``rate`` requests per
second to the gateway with ``X-Tier: <tier>``, non-streaming, for at most ``max_duration_s``
(a stop nobody sent cannot make it run forever). Its requests are the fault, not the measured
load, so they are counted (returned by the rollback) but not written to the run's records.
With ``scenario`` (a scenario file or name), the neighbour is instead the scenario run by the
load runner of ``aichaos.scenarios`` (imported only then), writing its records to the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from typing import Any

import httpx
from chaoslib.exceptions import ActivityFailed

from .. import context

MAX_IN_FLIGHT = 256
REQUEST_TIMEOUT = 30.0


class Neighbour:
    """Open loop on one asyncio loop in its own thread: a request every ``1/rate`` seconds
    whatever the answers take, at most ``MAX_IN_FLIGHT`` at once (beyond, a tick is skipped
    and counted, so a stalled gateway cannot pile up unbounded work here)."""

    def __init__(self, url: str, tier: str, rate: float, max_tokens: int, max_duration_s: float):
        self.url, self.tier, self.rate = url, tier, rate
        self.max_tokens, self.max_duration_s = max_tokens, max_duration_s
        self.counts: Counter[str] = Counter()
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="aichaos-neighbour", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _main(self) -> None:
        asyncio.run(self._send_loop())

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        body = {
            "messages": [{"role": "user", "content": f"noisy neighbour request {n}"}],
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
        }
        try:
            response = await client.post(
                f"{self.url}/v1/chat/completions", json=body, headers={"X-Tier": self.tier}
            )
            self.counts[str(response.status_code)] += 1
        except httpx.HTTPError as exc:
            self.counts[type(exc).__name__] += 1

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._wake = loop, asyncio.Event()
        self._ready.set()
        started = loop.time()
        interval = 1.0 / self.rate
        tasks: set[asyncio.Task] = set()
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
            n = 0
            while not self._stopped.is_set():
                due = started + n * interval
                if due - started > self.max_duration_s:
                    break
                try:  # the stop wakes this at once, whatever the rate
                    await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))
                    break
                except TimeoutError:
                    pass
                if len(tasks) >= MAX_IN_FLIGHT:
                    self.counts["skipped"] += 1
                else:
                    task = asyncio.create_task(self._one(client, n))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                n += 1
            if tasks:  # the window is over: unanswered requests are abandoned, and counted
                self.counts["abandoned"] += len(tasks)
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> dict[str, int]:
        self._stopped.set()
        if self._loop is not None and self._wake is not None:
            # RuntimeError: the loop already ended (max_duration_s ran out)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(timeout=REQUEST_TIMEOUT + 5)
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
