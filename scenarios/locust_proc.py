"""One Locust process of a load run: standalone, master or worker.

``python -m aichaos.scenarios.locust_proc run CONFIG.json`` runs the whole schedule in this
process (``workers`` = 1) or, as a Locust master, hands a share of it to each of ``workers``
Locust workers and gathers their records. ``python -m aichaos.scenarios.locust_proc worker
--master HOST [--master-port P]`` (the token in ``$AICHAOS_LOAD_TOKEN``) joins a master from
any machine: once the worker has proved it holds the run's token (``worker_gate``), the master
sends it the scenario, t0 and its share through Locust's messaging, and the worker sends its
records back the same way, so one run directory holds every request. The master never lets
Locust hand out users (Locust would give them to any client): each worker starts its one user
itself when its share arrives.

Every process stops, flushing what it recorded, when the process that owns the run dies
(``aichaos load`` / ``run`` / ``chaos``, identified by PID and start time; ``kill -9`` included).

Locust (gevent, monkey-patched) lives only in these processes, never in aichaos's asyncio code.
Each process watches its own CPU and event-loop lag and warns when they make its timings
untrustworthy. Locust's request statistics (console and web UI) are fed from the same
measurements, but no SLI is ever taken from them.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - monkey-patching must come first
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from geventhttpclient.url import URL  # noqa: E402
from locust import events as locust_events  # noqa: E402
from locust import task  # noqa: E402
from locust.contrib.fasthttp import FastHttpUser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.exception import StopUser  # noqa: E402
from locust.log import setup_logging  # noqa: E402
from locust.runners import STATE_MISSING  # noqa: E402
from locust.stats import print_percentile_stats, print_stats  # noqa: E402

from aichaos import exits  # noqa: E402
from aichaos.load_health import REFUSALS_KEPT, LoadHealth, LoadProgress, Refusal  # noqa: E402
from aichaos.loopback import is_loopback_name  # noqa: E402
from aichaos.processes import OwnerWatch, ProcessRef  # noqa: E402
from aichaos.rundir import EVENTS_JSONL, EventKind, EventLog, RequestRecord  # noqa: E402

from .engine import MAX_IN_FLIGHT, Dispatcher  # noqa: E402
from .load_config import LoadConfig  # noqa: E402
from .records import RecordWriter, warm_up  # noqa: E402
from .schedule import Schedule, build_schedule  # noqa: E402
from .spec import Scenario  # noqa: E402
from .stopwatch import Planned, new_record  # noqa: E402
from .worker_gate import TOKEN_ENV, WorkerGate, proof  # noqa: E402

FLUSH_S = 1.0  # records reach the run directory at least this often (the contract says 2 s)
PROGRESS_S = 0.5
HEALTH_TICK_S = 0.05
CPU_WARN_PERCENT = 90.0
LAG_WARN_S = 0.005
RECENT = 10_000  # samples kept for the live TTFT p95 and lag p99
LOST_AFTER_S = 10.0  # a worker missing to Locust and silent this long is lost
STOP_GRACE_S = 10.0  # after a stop, how long in-flight requests may take to end and flush


class ScheduleUser(FastHttpUser):
    """The one Locust user of a process: its task is the dispatcher for this process's share
    of the schedule. Requests run on the dispatcher's own greenlet pool, on this user's
    geventhttpclient connection pool (sized for every request in flight)."""

    host = "http://127.0.0.1"
    concurrency = MAX_IN_FLIGHT
    connection_timeout = 10.0
    # no per-recv timer (one per token would cost ~15 µs each): each request runs under its
    # own whole-request timeout instead (the scenario's target.timeout)
    network_timeout = None
    job: Any = None  # set by the process before the user is spawned

    @task
    def dispatch(self) -> None:
        if type(self).job is not None:
            type(self).job(self.connection())
        raise StopUser()

    def connection(self) -> Any:
        """This user's geventhttpclient client for the target."""
        return self.client.client.clientpool.get_client(URL(self.host))


class Health:
    """CPU of this process and lag of its event loop (how late a short sleep wakes up)."""

    def __init__(self, worker: str):
        self.worker = worker
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)
        self.lags: list[float] = []
        self.last_warning = 0.0

    def loop_lag(self) -> None:
        while True:
            start = time.perf_counter()
            gevent.sleep(HEALTH_TICK_S)
            self.lags.append(time.perf_counter() - start - HEALTH_TICK_S)

    def sample(self, in_flight: int) -> dict[str, Any]:
        lags, self.lags = self.lags, []
        lag = np.asarray(lags or [0.0])
        return {
            "t": time.time(),
            "worker": self.worker,
            "cpu_percent": self.proc.cpu_percent(None),
            "loop_lag_p99_s": float(np.percentile(lag, 99)),
            "loop_lag_max_s": float(lag.max()),
            "in_flight": in_flight,
        }

    def warning(self, sample: dict[str, Any]) -> str | None:
        why = []
        if sample["cpu_percent"] >= CPU_WARN_PERCENT:
            why.append(f"CPU {sample['cpu_percent']:.0f}%")
        if sample["loop_lag_max_s"] >= LAG_WARN_S:
            why.append(f"event-loop lag {sample['loop_lag_max_s'] * 1000:.1f} ms")
        if not why:
            return None
        return f"{self.worker}: {', '.join(why)}: timings may no longer be trustworthy"


class Progress:
    """Totals over the processes of one run, written to ``load/<runner>.progress.json``."""

    def __init__(self, path: Path, scheduled: int):
        self.path = path
        self.scheduled = scheduled
        self.parts: dict[str, dict[str, Any]] = {}
        self.ttfts: list[float] = []
        self.lags: list[float] = []
        self.history: list[tuple[float, int]] = []
        self.warnings: list[str] = []
        self.started = time.time()
        self.finished = False
        self.health = LoadHealth()  # refused clients and their dropped rows

    def update(self, worker: str, report: dict[str, Any]) -> None:
        self.parts[worker] = report
        self.ttfts = (self.ttfts + report.get("new_ttfts", []))[-RECENT:]
        self.lags = (self.lags + report.get("new_lags", []))[-RECENT:]

    def snapshot(self, t0: float) -> LoadProgress:
        sent = sum(p["sent"] for p in self.parts.values())
        done = sum(p["done"] for p in self.parts.values())
        closed_scheduled = sum(p.get("scheduled", 0) for p in self.parts.values())
        errors: dict[str, int] = {}
        for p in self.parts.values():
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        now = time.time()
        self.history = [(t, s) for t, s in self.history if now - t <= 5.0] + [(now, sent)]
        t_old, s_old = self.history[0]
        rps = (sent - s_old) / (now - t_old) if now - t_old > 0.2 else 0.0
        return LoadProgress(
            scheduled=self.scheduled or closed_scheduled,
            sent=sent,
            done=done,
            errors_by_kind=errors,
            rps=rps,
            ttft_p95_s=float(np.percentile(self.ttfts, 95)) if self.ttfts else None,
            lag_p99_s=float(np.percentile(self.lags, 99)) if self.lags else None,
            elapsed_s=max(0.0, now - t0),
            t0=t0,
            workers=sorted(self.parts),
            warnings=self.warnings[-5:],
            finished=self.finished,
            **self.health.model_dump(),
            updated_at=now,
        )

    def write(self, t0: float) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.snapshot(t0).model_dump_json())
        tmp.replace(self.path)


def locust_stats_event(env: Environment) -> Any:
    """Feed Locust's own statistics (console, web UI) from our records."""

    def fire(record: RequestRecord) -> None:
        failed = record["error_kind"] is not None
        e2e = record["e2e_s"] if record["e2e_s"] is not None else 0.0
        env.events.request.fire(
            request_type="POST",
            name=f"{record['tier']} e2e",
            response_time=e2e * 1000.0,
            response_length=record["output_tokens"] or 0,
            exception=RuntimeError(record["error_kind"]) if failed else None,
            context={},
        )
        if record["ttft_s"] is not None:
            env.events.request.fire(
                request_type="TTFT",
                name=record["tier"],
                response_time=record["ttft_s"] * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )

    return fire


class Share:
    """This process's part of a run: a dispatcher, its records and its health."""

    def __init__(self, cfg: LoadConfig, schedule: Schedule, worker: str, env: Environment,
                 sink_rows: Any, sink_progress: Any) -> None:  # fmt: skip
        self.cfg = cfg
        self.scenario = Scenario.from_dict(cfg.scenario)
        self.schedule = schedule
        self.worker = worker
        self.env = env
        self.sink_rows = sink_rows
        self.sink_progress = sink_progress
        self.rows: list[RequestRecord] = []
        self.health = Health(worker)
        self.dispatcher: Dispatcher | None = None
        self.done = gevent.event.Event()
        self.t0 = cfg.t0

    def run(self, client: Any) -> None:
        model = self.cfg.model
        self.dispatcher = Dispatcher(
            self.scenario,
            self.schedule,
            client,
            self.worker,
            self.t0,
            self._add_row,
            locust_stats_event(self.env),
            model=model,
            id_prefix=self.worker,
            target_url=self.cfg.target_url,
        )
        if time.time() > self.t0 + 0.05:
            print(f"{self.worker}: started {time.time() - self.t0:.2f}s after t0", file=sys.stderr)
        gevent.spawn(self.health.loop_lag)
        flusher = gevent.spawn(self._flush_loop)
        try:
            self.dispatcher.run()
        finally:
            flusher.kill()
            self._flush()
            self._report()
            self.done.set()

    def _add_row(self, row: RequestRecord) -> None:
        self.rows.append(row)  # not a bound list.append: _flush swaps the list

    def stop(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        else:
            self.done.set()

    def _flush_loop(self) -> None:
        next_flush = time.monotonic() + FLUSH_S
        while True:
            gevent.sleep(PROGRESS_S)
            self._report()
            if time.monotonic() >= next_flush:
                self._flush()
                next_flush = time.monotonic() + FLUSH_S

    def _flush(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            self.sink_rows(self.worker, rows)

    def _report(self) -> None:
        d = self.dispatcher
        if d is None:
            return
        ttfts, lags = d.counters.take_new()
        health = self.health.sample(len(d.pool))
        self.sink_progress(
            self.worker,
            {
                "scheduled": d.counters.scheduled,
                "sent": d.counters.sent,
                "done": d.counters.done,
                "errors": dict(d.counters.errors),
                "new_ttfts": ttfts,
                "new_lags": lags,
                "health": health,
                "warning": self.health.warning(health),
            },
        )


class Collector:
    """Where records and progress end up: the run directory, written by this process (the
    standalone process or the master)."""

    def __init__(self, cfg: LoadConfig, scheduled: int):
        self.run_dir = cfg.run_dir
        self.runner_id = cfg.runner_id
        load_dir = self.run_dir / "load"
        load_dir.mkdir(parents=True, exist_ok=True)
        self.load_dir = load_dir
        self.writers: dict[str, RecordWriter] = {}
        self.progress = Progress(load_dir / f"{self.runner_id}.progress.json", scheduled)
        self.events = EventLog(self.run_dir / EVENTS_JSONL, source="load")
        self.t0 = cfg.t0
        self.last_warning_at: dict[str, float] = {}
        self.threadpool = gevent.get_hub().threadpool

    def rows(self, worker: str, rows: list[RequestRecord]) -> None:
        writer = self.writers.get(worker)
        if writer is None:
            writer = self.writers[worker] = RecordWriter(self.run_dir, worker)
        writer.extend(rows)
        # Parquet encoding off the event loop, so the dispatcher's timers keep their time
        self.threadpool.apply(writer.flush)

    def report(self, worker: str, report: dict[str, Any]) -> None:
        self.progress.update(worker, report)
        health = report.get("health")
        if health:
            with open(self.load_dir / f"{worker}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(health) + "\n")
        warning = report.get("warning")
        now = time.time()
        if warning and now - self.last_warning_at.get(worker, 0.0) >= 10.0:
            self.last_warning_at[worker] = now
            self.progress.warnings.append(warning)
            print(f"warning: {warning}", file=sys.stderr, flush=True)
            self.events.emit(
                EventKind.LOAD, "timing_warning", detail={"worker": worker, "why": warning}
            )
        self.progress.write(self.t0)

    def refused(self, refusal: Refusal) -> None:
        """A client the master would not let join: counted in the health file, said once."""
        health = self.progress.health
        health.refused_workers += 1
        if len(health.refused) < REFUSALS_KEPT:
            health.refused.append(refusal)
        message = f"refused a load worker ({refusal.client}): {refusal.why}"
        self.progress.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)
        self.events.emit(EventKind.LOAD, "worker_refused", detail=refusal.model_dump())
        self.progress.write(self.t0)

    def dropped(self, rows: int) -> None:
        self.progress.health.dropped_rows += rows
        self.progress.write(self.t0)

    def finish(self) -> None:
        for writer in self.writers.values():
            writer.flush()
        self.progress.finished = True
        self.progress.write(self.t0)


def _watch_owner(owner: ProcessRef | None, stop: Any) -> None:
    """Stop when the process owning the run is gone (no orphaned load generators)."""
    if owner is not None:
        OwnerWatch(owner, stop).start()


def _resolve_model(target_url: str, scenario: Scenario) -> str | None:
    """The target's first served model, when the scenario names none (vLLM wants one)."""
    if scenario.target.model:
        return scenario.target.model
    from geventhttpclient import HTTPClient

    try:
        client = HTTPClient.from_url(target_url, connection_timeout=3, network_timeout=3)
        try:
            resp = client.get("/v1/models")
            if resp.status_code == 200:
                data = json.loads(resp.read())
                models = data.get("data") or []
                if models:
                    return models[0].get("id")
        finally:
            client.close()
    except Exception:  # unreachable or not OpenAI-shaped: requests go without a model
        return None
    return None


def _environment(target_url: str, scenario: Scenario) -> Environment:
    ScheduleUser.host = target_url.rstrip("/")
    return Environment(user_classes=[ScheduleUser], events=locust_events)


def _prepare_process() -> None:
    setup_logging("INFO")  # Locust's own console output (its stats table) goes to our log
    warm_up()
    # the record writer runs in a thread: hand the GIL back to the event loop within 1 ms
    # (the default 5 ms would show up as schedule lag)
    sys.setswitchinterval(0.001)


def run_standalone(cfg: LoadConfig) -> int:
    _prepare_process()
    scenario = Scenario.from_dict(cfg.scenario)
    schedule = build_schedule(scenario, cfg.sizing)
    env = _environment(cfg.target_url, scenario)
    runner = env.create_local_runner()
    if cfg.web_ui:
        env.create_web_ui("127.0.0.1", cfg.web_port or 8089)
    collector = Collector(cfg, len(schedule) if scenario.mode == "open" else 0)
    cfg.model = _resolve_model(cfg.target_url, scenario)
    worker = f"{cfg.runner_id}-w0"
    share = Share(cfg, schedule, worker, env, collector.rows, collector.report)
    ScheduleUser.job = share.run
    _install_stop(share.stop)
    _watch_owner(cfg.owner, share.stop)
    collector.progress.write(collector.t0)  # ready: LoadRunner.wait_ready() sees this
    runner.start(1, spawn_rate=1)
    share.done.wait()
    collector.finish()
    _locust_summary(env)
    runner.quit()
    if env.web_ui:
        env.web_ui.stop()
    return 0


def _trust_the_routing_id(runner: Any) -> None:
    """Make ``msg.node_id`` the ZMQ routing id the master received ``msg`` from.

    ``node_id`` is a field of the msgpack body, written by the sender: any client can put a
    trusted worker's id there (ids show in Locust's log lines). Locust's ``client_listener``
    reads the routing id from the ROUTER socket, which the sender cannot forge while that
    worker is connected (ZMQ refuses a second peer with the same identity), but hands it only
    to its ``client_ready`` handling; custom-message listeners get the body alone. Its public
    ``MasterRunner.handle_message(client_id, msg)`` is the one place both meet, so we stamp
    the routing id there, before Locust's own handlers (heartbeat, quit) and ours see it: the
    gate, the rows and ``aichaos_done`` are then keyed by who really sent them."""
    dispatch = runner.handle_message

    def handle_message(client_id: str, msg: Any) -> None:
        msg.node_id = client_id
        dispatch(client_id, msg)

    runner.handle_message = handle_message  # client_listener looks it up for each message


def _admit_workers(runner: Any, gate: WorkerGate, collector: Collector) -> Any:
    """The master's side of the token handshake (``worker_gate``); returns ``refuse``."""

    def refuse(client_id: str, why: str) -> None:
        refusal = gate.refuse(client_id, why)
        if refusal is None:
            return
        collector.refused(refusal)
        runner.send_message("aichaos_refused", {"why": why}, client_id=client_id)
        runner.send_message("quit", None, client_id=client_id)  # Locust's own: leave

    def on_connect(client_id: str, **_: Any) -> None:
        gate.connected(client_id)

    def on_hello(environment: Any, msg: Any, **_: Any) -> None:
        if gate.token is not None and msg.node_id not in gate.refused:
            nonce = gate.challenge(msg.node_id)
            runner.send_message("aichaos_challenge", {"nonce": nonce}, client_id=msg.node_id)

    def on_proof(environment: Any, msg: Any, **_: Any) -> None:
        mac = msg.data.get("mac") if isinstance(msg.data, dict) else None
        if not gate.verify(msg.node_id, mac):
            refuse(msg.node_id, "wrong token")

    def police() -> None:  # a client that never proves anything is refused too
        while True:
            for client_id in gate.overdue():
                refuse(client_id, "no token proof")
            gevent.sleep(0.5)

    runner.environment.events.worker_connect.add_listener(on_connect)
    runner.register_message("aichaos_hello", on_hello)
    runner.register_message("aichaos_proof", on_proof)
    gevent.spawn(police)
    return refuse


def _check_master_bind(cfg: LoadConfig) -> str | None:
    """Why this master must not start (None: it may)."""
    bind = cfg.master_bind
    if not is_loopback_name(bind) and not cfg.token:
        return (
            f"master_bind {bind!r} is beyond loopback: a worker token is required "
            f"(the config's 'token', or {TOKEN_ENV})"
        )
    return None


def run_master(cfg: LoadConfig) -> int:
    refusal = _check_master_bind(cfg)
    if refusal is not None:  # before binding anything
        print(f"error: {refusal}", file=sys.stderr, flush=True)
        return exits.BAD_INPUT
    _prepare_process()
    scenario = Scenario.from_dict(cfg.scenario)
    schedule = build_schedule(scenario, cfg.sizing)
    env = _environment(cfg.target_url, scenario)
    runner = env.create_master_runner(cfg.master_bind, int(cfg.master_port or 5557))
    _trust_the_routing_id(runner)  # before any greenlet switch lets a message in
    if cfg.web_ui:
        env.create_web_ui("127.0.0.1", cfg.web_port or 8089)
    count = cfg.workers
    collector = Collector(cfg, len(schedule) if scenario.mode == "open" else 0)
    gate = WorkerGate(cfg.token)
    refuse = _admit_workers(runner, gate, collector)
    done: set[str] = set()
    all_done = gevent.event.Event()
    stopping = gevent.event.Event()
    shares: dict[str, tuple[str, Schedule]] = {}  # client id -> (worker name, its arrivals)

    reported: dict[str, set[str]] = {}
    heard: dict[str, float] = {}  # worker name -> when it last sent rows or progress

    def sender(msg: Any) -> str | None:
        """The worker name of the client that sent ``msg``, if it was given a share; anything
        else (a stranger, a worker without a share) is not listened to."""
        share = shares.get(msg.node_id)
        return share[0] if share is not None and gate.is_trusted(msg.node_id) else None

    def on_rows(environment: Any, msg: Any, **_: Any) -> None:
        worker = sender(msg)
        rows = msg.data.get("rows") if isinstance(msg.data, dict) else None
        if worker is None:
            collector.dropped(len(rows) if isinstance(rows, list) else 0)
            refuse(msg.node_id, "sent request rows without the run's token")
            return
        heard[worker] = time.monotonic()
        reported.setdefault(worker, set()).update(r["request_id"] for r in rows)
        collector.rows(worker, rows)

    def on_progress(environment: Any, msg: Any, **_: Any) -> None:
        worker = sender(msg)
        if worker is not None:
            heard[worker] = time.monotonic()
            collector.report(worker, msg.data["report"])

    def on_done(environment: Any, msg: Any, **_: Any) -> None:
        worker = sender(msg)
        if worker is not None:
            done.add(worker)
            if len(done) >= count:
                all_done.set()

    runner.register_message("aichaos_rows", on_rows)
    runner.register_message("aichaos_progress", on_progress)
    runner.register_message("aichaos_done", on_done)

    def stop() -> None:
        if not stopping.is_set():
            stopping.set()
            for client_id in shares:  # only workers holding a share have anything to stop
                runner.send_message("aichaos_stop", {}, client_id=client_id)

    _install_stop(stop)
    _watch_owner(cfg.owner, stop)

    def joined() -> list[str]:
        return sorted(
            c for c in list(runner.clients.keys())
            if gate.is_trusted(c) and runner.clients[c].state != STATE_MISSING
        )  # fmt: skip

    deadline = time.monotonic() + cfg.join_timeout_s
    while len(joined()) < count:
        if stopping.is_set() or time.monotonic() > deadline:
            refused = f" ({len(gate.refused)} refused)" if gate.refused else ""
            print(f"only {len(joined())} of {count} workers joined{refused}", file=sys.stderr)
            collector.finish()
            runner.quit()
            return exits.NOT_COMPLETED
        gevent.sleep(0.05)
    cfg.model = _resolve_model(cfg.target_url, scenario)
    wire = cfg.for_workers()  # never the owner or the token (its share carries its sizes)
    for index, client_id in enumerate(joined()[:count]):
        share = schedule.split(index, count)
        shares[client_id] = (f"{cfg.runner_id}-w{index}", share)
        data = {"cfg": wire, "index": index, "count": count, "schedule": share.to_wire()}
        runner.send_message("aichaos_assign", data, client_id=client_id)
    if stopping.is_set():  # stopped while assigning: the new shares hear it too
        stopping.clear()
        stop()
    started = time.monotonic()
    collector.progress.write(collector.t0)
    limit = scenario.duration_s + scenario.target.timeout_s + 30.0
    end_by = time.time() + max(0.0, cfg.t0 - time.time()) + limit
    stop_by = None
    while not all_done.is_set() and time.time() < end_by:
        all_done.wait(timeout=0.5)
        if stopping.is_set():
            stop_by = stop_by or time.time() + STOP_GRACE_S
            if time.time() > stop_by:
                break
        for client_id, (worker, share) in shares.items():
            node = runner.clients.get(client_id)
            # Locust calls a worker missing after 3 s without a heartbeat, which a busy
            # machine can cause; lost means gone from Locust, or missing and silent too
            silent = time.monotonic() - heard.get(worker, started)
            missing = node is not None and node.state == STATE_MISSING and silent > LOST_AFTER_S
            if worker not in done and (node is None or missing):
                _record_lost_worker(collector, scenario, worker, share, reported.get(worker))
                done.add(worker)
        if len(done) >= count:
            all_done.set()
    collector.finish()
    runner.quit()  # (no Locust table here: workers' last stats would still be in flight)
    if env.web_ui:
        env.web_ui.stop()
    return 0


def _locust_summary(env: Environment) -> None:
    """Locust's own tables (console view; never a source of SLIs: they round to ~2 digits)."""
    print_stats(env.stats, current=False)
    print_percentile_stats(env.stats)


def _record_lost_worker(collector: Collector, scenario: Scenario, worker: str, share: Schedule,
                        reported: set[str] | None) -> None:  # fmt: skip
    """A worker vanished (killed, machine gone): every arrival of its share it never reported
    becomes an error row, so nothing is silently dropped."""
    if scenario.mode != "open":
        return
    reported = reported or set()
    rows = []
    for i in range(len(share)):
        rid = f"{worker}-{share.index[i]}"
        if rid in reported:
            continue
        tier = share.tier_names[share.tier[i]]
        planned = Planned(rid, tier, collector.t0 + float(share.t[i]), int(share.prompt_tokens[i]))
        row = new_record(planned, worker, scenario.name)
        row["error_kind"] = "incomplete_stream"
        row["error_detail"] = f"load worker {worker} was lost before it reported this request"
        rows.append(row)
    message = f"{worker}: worker lost; {len(rows)} unreported requests recorded as errors"
    print(f"warning: {message}", file=sys.stderr, flush=True)
    collector.progress.warnings.append(message)
    collector.events.emit(
        EventKind.LOAD, "worker_lost", detail={"worker": worker, "requests": len(rows)}
    )
    if rows:
        collector.rows(worker, rows)


def run_worker(master_host: str, master_port: int, token: str,
               owner: ProcessRef | None = None) -> int:  # fmt: skip
    """Join a master; exit 2 when it refuses this worker (a wrong token)."""
    _prepare_process()
    env = Environment(user_classes=[ScheduleUser], events=locust_events)
    runner = env.create_worker_runner(master_host, master_port)
    state: dict[str, Any] = {}

    def send_rows(worker: str, rows: list[RequestRecord]) -> None:
        runner.send_message("aichaos_rows", {"worker": worker, "rows": rows})

    def send_progress(worker: str, report: dict[str, Any]) -> None:
        runner.send_message("aichaos_progress", {"worker": worker, "report": report})

    def on_challenge(environment: Any, msg: Any, **_: Any) -> None:
        nonce = str(msg.data.get("nonce")) if isinstance(msg.data, dict) else ""
        runner.send_message("aichaos_proof", {"mac": proof(token, nonce)})

    def on_refused(environment: Any, msg: Any, **_: Any) -> None:
        state["refused"] = why = (msg.data or {}).get("why", "refused")
        where = f"{master_host}:{master_port}"
        print(f"error: the master at {where} refused this worker: {why}", file=sys.stderr)

    def on_assign(environment: Any, msg: Any, **_: Any) -> None:
        if "share" in state:  # one share per worker process
            return
        cfg = LoadConfig.model_validate(msg.data["cfg"])
        ScheduleUser.host = cfg.target_url.rstrip("/")
        schedule = Schedule.from_wire(msg.data["schedule"])
        worker = f"{cfg.runner_id}-w{msg.data['index']}"
        share = state["share"] = Share(cfg, schedule, worker, env, send_rows, send_progress)

        def job(client: Any) -> None:
            try:
                share.run(client)
            finally:  # the master waits for every worker's "done", even after a crash
                runner.send_message("aichaos_done", {"worker": worker})

        # our one user, started here: the master never asks Locust to hand users out
        gevent.spawn(job, ScheduleUser(env).connection())

    def on_stop(environment: Any, msg: Any, **_: Any) -> None:
        share = state.get("share")
        if share is not None:
            share.stop()

    def leave() -> None:
        """The owner is gone: flush what this worker has to the master, then quit."""
        on_stop(env, None)
        share = state.get("share")
        if share is not None:
            share.done.wait(timeout=STOP_GRACE_S)
        runner.quit()

    runner.register_message("aichaos_challenge", on_challenge)
    runner.register_message("aichaos_refused", on_refused)
    runner.register_message("aichaos_assign", on_assign)
    runner.register_message("aichaos_stop", on_stop)
    runner.send_message("aichaos_hello", {})
    _install_stop(lambda: on_stop(env, None))
    _watch_owner(owner, leave)
    runner.greenlet.join()
    return exits.BAD_INPUT if "refused" in state else exits.OK


def _install_stop(stop: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aichaos.scenarios.locust_proc")
    sub = parser.add_subparsers(dest="role", required=True)
    run = sub.add_parser("run")
    run.add_argument("config")
    worker = sub.add_parser("worker", description=f"The token comes from ${TOKEN_ENV}.")
    worker.add_argument("--master", required=True)
    worker.add_argument("--master-port", type=int, default=5557)
    worker.add_argument("--owner-pid", type=int, default=None)
    worker.add_argument("--owner-start-time", type=float, default=None)
    args = parser.parse_args(argv)
    if args.role == "worker":
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            print(f"error: {TOKEN_ENV}: expected the run's worker token", file=sys.stderr)
            return exits.BAD_INPUT
        owner = None
        if args.owner_pid is not None and args.owner_start_time is not None:
            owner = ProcessRef(pid=args.owner_pid, start_time=args.owner_start_time)
        return run_worker(args.master, args.master_port, token, owner)
    cfg = LoadConfig.model_validate_json(Path(args.config).read_text(encoding="utf-8"))
    if cfg.distributed:
        return run_master(cfg)
    return run_standalone(cfg)


if __name__ == "__main__":
    sys.exit(main())
