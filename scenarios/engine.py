"""The dispatcher: sends a schedule's requests at their times, inside one Locust process.

One greenlet sleeps until each arrival's time (anchored at the run's epoch t0, shared by every
worker) and starts the request on its own greenlet from a large pool, so a request goes out on
time however many are in flight. A request that cannot go out on time still goes out, as soon
as possible, and its record keeps both t_scheduled and t_sent: lateness is measured, nothing is
dropped. Closed-loop mode instead keeps a fixed number of requests in flight.

A conversation starts at its first turn's arrival; each later turn goes out its think time
after the previous answer came (its ``t_scheduled``), on the same greenlet, carrying the
questions and answers so far (``conversation``). A turn that would go out after the run's
duration, or after a failed turn, is not sent.

gevent only: this module is imported in Locust processes, never in aichaos's asyncio parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool
import numpy as np

from aichaos.rundir import RequestRecord

from .conversation import AnswerCounter, Conversation
from .payload import build_request, prompt_fields, prompt_parts
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
                 model: str | None = None, id_prefix: str = "",
                 target_url: str = "") -> None:  # fmt: skip
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
        self.next_turn = schedule.turn_links()[1]
        self.target_url = target_url
        self.answers: AnswerCounter | None = None

    def run(self) -> None:
        try:
            if self.scenario.mode == "closed":
                self._closed_loop()
            else:
                self._open_loop()
            # a conversation's turns may still be due until the run's end
            left = max(0.0, self.perf_t0 + self.scenario.duration_s - time.perf_counter())
            self.pool.join(timeout=left + self.scenario.target.timeout_s + 5.0)
        finally:
            self.pool.kill(block=True, timeout=5)
            self.finished.set()

    def stop(self) -> None:
        self.stopping.set()

    def _open_loop(self) -> None:
        times = self.schedule.t
        # a conversation's later turns follow its answers (``_send``), not the clock
        for i in np.nonzero(self.schedule.turn <= 1)[0]:
            if not self._sleep_until(self.perf_t0 + times[i]):
                return
            self.pool.spawn(self._send, int(i), self.t0 + times[i])

    def _sleep_until(self, due: float) -> bool:
        """Until ``due`` (perf_counter); False when the load was stopped meanwhile."""
        perf = time.perf_counter
        while not self.stopping.is_set():
            wait = due - perf()
            if wait <= 0:
                return True
            gevent.sleep(wait - _SPIN_S if wait > 2 * _SPIN_S else 0)
        return False

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
        """Arrival ``i``; when it starts a conversation, its later turns after it."""
        conversation = Conversation()
        while True:
            record = self._request(i, t_scheduled, conversation)
            following = int(self.next_turn[i])
            if following < 0 or record["status"] != "ok":
                return
            # the next question comes its think time after this answer came
            done = record["t_sent"] + record["done_s"]
            t_scheduled = done + float(self.schedule.think[following])
            if t_scheduled - self.t0 >= self.scenario.duration_s:
                return
            if not self._sleep_until(self.perf_t0 + (t_scheduled - self.t0)):
                return
            i = following

    def _request(self, i: int, t_scheduled: float, conversation: Conversation) -> RequestRecord:
        s = self.schedule
        tier = self.tiers[s.tier_names[s.tier[i]]]
        rid = f"{self.id_prefix}-{s.index[i]}"
        if self.scenario.mode == "closed":
            rid = f"{rid}-{self.counters.sent}"
        sized = s.sizes
        prompt_tokens = int(s.prompt_tokens[i]) + conversation.drift
        max_tokens, capped = self._fit(prompt_tokens, int(s.output_tokens[i]))
        session = f"{self.id_prefix}-s{s.session_id[i]}" if s.session_id[i] >= 0 else None
        planned = Planned(rid, tier.name, t_scheduled, prompt_tokens,
                          sized.source if sized is not None else "estimate",
                          capped or (bool(sized.capped[i]) if sized is not None else False),
                          session, int(s.turn[i]) if session else None)  # fmt: skip
        record = new_record(planned, self.worker, self.scenario.name)
        shared, question = prompt_parts(s, i, self.scenario.seed)
        prompt = prompt_fields(self.scenario.target.chat, shared, question, conversation.history)
        body, headers = build_request(self.scenario.target, tier, prompt, max_tokens, self.model)
        headers["X-Request-Id"] = rid  # so server logs and traces name the same request
        answer: list[str] | None = [] if self.next_turn[i] >= 0 else None
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
                answer,
            )
        except gevent.GreenletExit:
            record["error_kind"] = "incomplete_stream"
            record["error_detail"] = "the load was stopped before the response completed"
            self._finish(record)
            raise
        self._finish(record)
        if answer is not None and record["status"] == "ok":
            self._remember(conversation, i, question, "".join(answer), record)
        return record

    def _fit(self, prompt_tokens: int, max_tokens: int) -> tuple[int, bool]:
        """max_tokens within the target's context after the prompt (a conversation whose
        answers came out longer than planned); whether it had to be cut."""
        sized = self.schedule.sizes
        limit = sized.max_model_len if sized is not None else None
        if limit is None or prompt_tokens + max_tokens <= limit:
            return max_tokens, False
        return max(limit - prompt_tokens, 1), True

    def _remember(self, conversation: Conversation, i: int, question: str, answer: str,
                  record: RequestRecord) -> None:  # fmt: skip
        """The turn's question and answer join the conversation's history, the answer's
        length counted in the target's tokens."""
        sized = self.schedule.sizes
        if self.answers is None:
            source = sized.source if sized is not None else "estimate"
            self.answers = AnswerCounter(source, self.target_url, self.model, self.scenario)
        tokens = self.answers.tokens(answer, record["output_tokens"])
        planned = sized.answer_tokens[i] if sized is not None else self.schedule.output_tokens[i]
        conversation.add(question, answer, tokens, int(planned))

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
