"""The dispatcher: sends a schedule's requests at their times, inside one Locust process.

One greenlet sleeps until each arrival's time (anchored at the run's epoch t0, shared by every
worker) and starts the request on its own greenlet from a large pool, so a request goes out on
time however many are in flight. A request that cannot go out on time still goes out, as soon
as possible, and its record keeps both t_scheduled and t_sent: lateness is measured, nothing is
dropped. Closed-loop mode instead keeps a fixed number of requests in flight.

gevent only: this module is imported in Locust processes, never in aichaos's asyncio parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool

from aichaos.rundir import RequestRecord

from .payload import build_request
from .schedule import Schedule
from .spec import Scenario
from .stopwatch import Planned, new_record, timed_request

# Sleep with the event loop until this close to an arrival, then yield in a tight loop: a gevent
# timer alone wakes up to a millisecond late.
_SPIN_S = 0.0008
MAX_IN_FLIGHT = 10_000


class Counters:
    """What this process has done so far (shipped in progress reports)."""

    def __init__(self, scheduled: int):
        self.scheduled = scheduled
        self.sent = 0
        self.done = 0
        self.errors: dict[str, int] = {}
        self.new_ttfts: list[float] = []
        self.new_lags: list[float] = []

    def take_new(self) -> tuple[list[float], list[float]]:
        ttfts, lags = self.new_ttfts, self.new_lags
        self.new_ttfts, self.new_lags = [], []
        return ttfts, lags


class Dispatcher:
    def __init__(self, scenario: Scenario, schedule: Schedule, client: Any, worker: str,
                 t0: float, on_record: Callable[[RequestRecord], None],
                 on_locust_event: Callable[[dict[str, Any]], None] | None = None,
                 model: str | None = None, id_prefix: str = "") -> None:  # fmt: skip
        self.scenario = scenario
        self.schedule = schedule
        self.client = client
        self.worker = worker
        self.t0 = t0
        self.on_record = on_record
        self.on_locust_event = on_locust_event
        self.model = model
        self.id_prefix = id_prefix or worker
        self.counters = Counters(len(schedule) if scenario.mode == "open" else 0)
        self.pool = gevent.pool.Pool(MAX_IN_FLIGHT)
        self.stopping = gevent.event.Event()
        self.finished = gevent.event.Event()
        self.tiers = {t.name: t for t in scenario.tier_list}
        # one anchor, taken once: t_sent and sleeping both run on perf_counter from here on
        self.perf_t0 = time.perf_counter() + (t0 - time.time())

    def run(self) -> None:
        try:
            if self.scenario.mode == "closed":
                self._closed_loop()
            else:
                self._open_loop()
            self.pool.join(timeout=self.scenario.target.timeout_s + 5.0)
        finally:
            self.pool.kill(block=True, timeout=5)
            self.finished.set()

    def stop(self) -> None:
        self.stopping.set()

    def _open_loop(self) -> None:
        times = self.schedule.t
        perf_t0 = self.perf_t0
        perf = time.perf_counter
        for i in range(len(times)):
            due = perf_t0 + times[i]
            while True:
                wait = due - perf()
                if wait <= 0 or self.stopping.is_set():
                    break
                gevent.sleep(wait - _SPIN_S if wait > 2 * _SPIN_S else 0)
            if self.stopping.is_set():
                return
            self.pool.spawn(self._send, i, self.t0 + times[i])

    def _closed_loop(self) -> None:
        end = self.perf_t0 + self.scenario.duration_s
        wait = self.perf_t0 - time.perf_counter()
        if wait > 0:
            gevent.sleep(wait)
        n = len(self.schedule)
        state = {"next": 0}

        def user(k: int) -> None:
            while time.perf_counter() < end and not self.stopping.is_set():
                i = state["next"] % n
                state["next"] += 1
                self.counters.scheduled += 1
                # closed loop: the request is meant to go out as soon as the previous ends
                t_scheduled = self.t0 + (time.perf_counter() - self.perf_t0)
                self._send(i, t_scheduled)

        for k in range(self.scenario.concurrency):
            self.pool.spawn(user, k)
        self.pool.join()

    def _send(self, i: int, t_scheduled: float) -> None:
        s = self.schedule
        tier = self.tiers[s.tier_names[s.tier[i]]]
        rid = f"{self.id_prefix}-{s.index[i]}"
        if self.scenario.mode == "closed":
            rid = f"{rid}-{self.counters.sent}"
        sized = s.sizes
        planned = Planned(rid, tier.name, t_scheduled, int(s.prompt_tokens[i]),
                          sized.source if sized is not None else "estimate",
                          bool(sized.capped[i]) if sized is not None else False)  # fmt: skip
        record = new_record(planned, self.worker, self.scenario.name)
        body, headers = build_request(
            self.scenario.target, tier, s, i, self.scenario.seed, self.model
        )
        headers["X-Request-Id"] = rid  # so server logs and traces name the same request
        self.counters.sent += 1
        try:
            timed_request(
                self.client,
                self.scenario.target.path,
                body,
                headers,
                self.scenario.target.chat,
                self.scenario.target.stream,
                self.scenario.target.timeout_s,
                record,
                (self.perf_t0, self.t0),
            )
        except gevent.GreenletExit:
            record["error_kind"] = "incomplete_stream"
            record["error_detail"] = "the load was stopped before the response completed"
            self._finish(record)
            raise
        self._finish(record)

    def _finish(self, record: RequestRecord) -> None:
        c = self.counters
        c.done += 1
        if record["error_kind"]:
            c.errors[record["error_kind"]] = c.errors.get(record["error_kind"], 0) + 1
        elif record["ttft_s"] is not None:
            c.new_ttfts.append(record["ttft_s"])
        if record["t_sent"] is not None:
            c.new_lags.append(record["t_sent"] - record["t_scheduled"])
        self.on_record(record)
        if self.on_locust_event is not None:
            self.on_locust_event(record)
