"""``aichaos run``: one game day from inputs to exit code.

Lifecycle: validate every input (nothing started before) → run directory and manifest → stack
up (or check the target answers) → server metrics source → load and experiment on one clock,
with live progress → rollbacks → stop load → collect server metrics → evaluate → stack down →
render → exit code (DESIGN: 0 met, 1 an SLO failed, 2 bad input, 3 could not run or complete).

Ctrl-C or SIGTERM at any moment makes the run ``aborted`` and its exit code 3. During the load
it stops the load and rolls every fault back, then evaluates and renders what was recorded.
Signals never interrupt the clean-up (no fault is ever left in place because the user pressed
Ctrl-C twice); they do stop the evaluation and the rendering, which are then rendered again
from what exists, headlined ABORTED. The ``interrupt`` event records when the first signal
came and in which stage.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from contextlib import suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from aichaos import exits
from aichaos.errors import NotCompleted
from aichaos.processes import ProcessRef
from aichaos.reports import fmt
from aichaos.rundir import (
    EVENTS_JSONL,
    INTERRUPT,
    SUMMARY_MD,
    EventKind,
    EventLog,
    FaultProxy,
    InputError,
    RunManifest,
    RunStatus,
    read_events,
    read_manifest,
)
from aichaos.stackfile import StackState

from .lifecycle import RunLifecycle, versions
from .orphans import remove_orphans
from .progress import Progress
from .run_plan import RunOptions, RunPlan, plan_run
from .server_metrics import PrometheusSource, Scraper, metrics_summary, write_metrics
from .signals import Signals
from .stack import Stack
from .stack_state import DEFAULT_POINTER, stack_places
from .supervisor import StackError
from .targets import TARGET, fault_proxy_topology
from .topology import TopologyError

if TYPE_CHECKING:
    from aichaos.slo.result import SloResult

DRAIN_S = 30.0  # requests in flight at the end of the schedule get this long to finish
TICK_S = 0.5
UNSCRAPED_KINDS = ("proxy", "prometheus")


class CouldNotRun(NotCompleted):
    """The game day could not run (stack, target or load generator); one line."""


def run_game_day(options: RunOptions) -> int:
    # the handlers come first: a Ctrl-C while planning or removing orphans is a stop (3),
    # never a KeyboardInterrupt (130); nothing is started once one came
    signals = Signals()
    signals.install()
    try:
        plan = _prepare(options)
    except BaseException:
        signals.restore()
        raise
    if plan is not None and not signals.flag.is_set():
        return GameDay(plan, signals).execute()
    signals.restore()
    if signals.flag.is_set():  # read after the restore: a signal just before it counts too
        _say(f"interrupted before the run started: exit {exits.NOT_COMPLETED}")
        return exits.NOT_COMPLETED
    return exits.BAD_INPUT


def _prepare(options: RunOptions) -> RunPlan | None:
    """The plan (None after one line for bad input), with the stacks dead owners left gone."""
    try:
        plan = plan_run(options)
    except (InputError, TopologyError) as exc:
        print(f"aichaos run: {exc}", file=sys.stderr)
        return None
    # a stack an earlier run's dead owner left (its owner watch killed too) is stopped, not
    # left serving, with its faults, beside this game day
    places = stack_places(DEFAULT_POINTER, plan.run_dir.parent)
    remove_orphans(places, _say, "aichaos run")
    return plan


def _say(line: str) -> None:
    print(f"aichaos run: {line}", file=sys.stderr)


class GameDay:
    def __init__(self, plan: RunPlan, signals: Signals | None = None, stack: Stack | None = None):
        """``stack``: a stack someone else brought up and takes down (``aichaos sweep`` runs
        every step on one); the game day runs on it instead of bringing its own up."""
        self.plan = plan
        self.run_dir = plan.run_dir
        self.signals = signals or Signals()
        self.progress = Progress(tty=False if plan.options.ci else None)
        self.events: EventLog | None = None
        self.shared_stack = stack
        self.stack: Stack | None = None
        self.target: str | None = plan.target
        self.via: str | None = None  # the fault proxy the load goes through, with --target
        self.prometheus_url: str | None = plan.options.prometheus_url
        self.scraper: Scraper | None = None
        self.load: Any = None
        self.chaos: Any = None
        self.configuration: dict[str, Any] = {}
        self.t0: float | None = None
        self.result: SloResult | None = None
        self.stack_info: dict[str, Any] | None = None
        self._interrupt_noted = False
        self.bad_input = False  # an InputError refused the run once it was under way: exit 2
        inputs = {**plan.manifest_inputs(), "target": plan.target}
        manifest = RunManifest(
            id=plan.run_id,
            kind="run",
            command=plan.options.command or sys.argv,
            versions=versions(),
            owner=ProcessRef.current(),  # read as crashed once it is gone
            started_at=time.time(),
            **inputs,
        )
        self.life = RunLifecycle(self.run_dir, manifest, signals=self.signals)

    # the run's status and problem are its manifest's (``RunLifecycle``)
    @property
    def status(self) -> RunStatus:
        return self.life.manifest.status

    @status.setter
    def status(self, value: RunStatus) -> None:
        self.life.manifest.status = value

    @property
    def problem(self) -> str | None:
        return self.life.manifest.problem

    @problem.setter
    def problem(self, value: str | None) -> None:
        self.life.manifest.problem = value

    @property
    def started_at(self) -> float:
        return float(self.life.manifest.started_at or 0.0)

    # --- the lifecycle ---------------------------------------------------------------------

    def execute(self) -> int:
        self.signals.install()
        try:
            self._lifecycle()
        except Exception as exc:  # whatever failed, the clean-up below still runs
            self._unexpected(exc)
        finally:
            self._stage("finishing")
            self._stack_down()
            self.progress.close()
            self._write_manifest()
            if self._catch_up():  # a signal in the last steps: the reports must say so too
                self._render_reports()
            self._publish()
            if self._catch_up():  # a signal while publishing: run.json and reports say so
                self._render_reports()
            self.progress.say(f"run directory {self.run_dir} ({self.status})")
        code = self._exit_code(self.result)
        # restored only now: until the exit code stands, a signal is a flag, never a
        # KeyboardInterrupt; one that came meanwhile still makes it 3
        self.signals.restore()
        return self.life.exit_code(code)

    def _lifecycle(self) -> None:
        self.run_dir.mkdir(parents=True)
        self.events = EventLog(self.run_dir / EVENTS_JSONL, "harness")
        self._write_manifest()
        try:
            self._bring_up()
            self._drive()
        except CouldNotRun as exc:
            # a stop during bring-up surfaces as a failure to start: it is still a stop
            self.status = "aborted" if self.signals.flag.is_set() else "failed"
            self.problem = str(exc)
            self._note_interrupt()
            self.progress.say(str(exc))
        except InputError as exc:
            # refused once the stack runs (the blast radius of an http provider, a replica
            # the topology lacks): bad input, exit 2, nothing of the experiment started
            self.status, self.problem, self.bad_input = "failed", str(exc), True
            _say(str(exc))
        except Exception as exc:
            self._unexpected(exc)
        finally:
            self._wind_down()
        self._evaluate()
        self._stage("stack-down")
        self._stack_down()
        self._render()

    def _unexpected(self, exc: Exception) -> None:
        """A failure nobody planned for: the run failed (exit 3), one line here, the
        traceback in the run directory's log."""
        self.status = "failed"
        self.problem = self.problem or f"unexpected error: {exc!r}"
        where = ""
        if self.run_dir.exists():
            log = self.run_dir / "logs" / "harness-error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                traceback.print_exception(exc, file=f)
            where = f" (traceback in {log})"
        _say(f"{self.problem}{where}")

    def _stage(self, name: str) -> None:
        self.signals.stage = name

    def _bring_up(self) -> None:
        self._stage("bring-up")
        plan = self.plan
        note = plan.sizing_note()
        if note:
            self.progress.say(note)
        if self.shared_stack is not None:
            self.stack = self.shared_stack
            self.target = self.stack.url(_gateway(self.stack.status()))
        elif plan.topology is None:
            self._check_target()
            from aichaos.experiments.policy import uses_stack_activities

            if plan.experiment is not None and uses_stack_activities(plan.experiment):
                self._front_target()
        else:
            self.progress.say(f"bringing the stack up ({plan.topology_source})")
            try:
                self.stack = Stack.up(
                    plan.topology,
                    self.run_dir,
                    source=plan.topology_source,
                    interrupt=self.signals.flag,
                )
            except StackError as exc:
                raise CouldNotRun(str(exc)) from exc
            self.target = self.stack.url(_gateway(self.stack.status()))
        self._start_metrics()
        self.configuration = self._experiment_configuration()
        self._write_manifest()

    def _front_target(self) -> None:
        """A fault proxy in front of the target, the load sent through it: the experiment's
        faults act there (the target is an endpoint aichaos did not start)."""
        assert self.target is not None
        self.progress.say(f"putting a fault proxy in front of {self.target}")
        try:
            self.stack = Stack.up(
                fault_proxy_topology(self.target),
                self.run_dir,
                source="fault proxy in front of the target",
                interrupt=self.signals.flag,
            )
        except StackError as exc:
            raise CouldNotRun(str(exc)) from exc
        path = urlsplit(self.target).path.rstrip("/")
        self.via = self.stack.proxy_url(TARGET) + path
        self.progress.say(f"load goes through the fault proxy at {self.via}")

    def _check_target(self) -> None:
        """Any HTTP answer from the target will do; no answer is exit 3."""
        assert self.target is not None
        try:
            httpx.get(f"{self.target.rstrip('/')}/v1/models", timeout=5.0)
        except httpx.HTTPError as exc:
            raise CouldNotRun(f"--target {self.target}: unreachable ({exc})") from exc

    def _start_metrics(self) -> None:
        if self.stack is not None and not self.prometheus_url:
            prometheus = self.stack.status().prometheus
            self.prometheus_url = prometheus.url if prometheus else None
        if self.prometheus_url:
            if not PrometheusSource(self.prometheus_url).wait_scraping():
                self.progress.say(f"Prometheus at {self.prometheus_url} has not scraped yet")
            return
        sources = {"target": self.target} if self.stack is None else _scrape_sources(self.stack)
        self.scraper = Scraper(sources).start()

    def _experiment_configuration(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "aichaos_run_dir": str(self.run_dir),
            "aichaos_target": self.target,
        }
        if self.stack is not None:
            config["aichaos_stack_file"] = str(self.stack.run_dir / "stack.json")
            toxiproxy = self.stack.status().service_of_kind("proxy")
            if toxiproxy is not None:
                config["aichaos_toxiproxy_url"] = toxiproxy.url
        return config

    def _drive(self) -> None:
        from aichaos.experiments.runner import ChaosRun
        from aichaos.scenarios.runner import LoadRunner

        plan = self.plan
        if self.signals.flag.is_set():
            raise CouldNotRun("interrupted before the load started")
        self._stage("load")
        assert self.target is not None
        self.load = LoadRunner(
            plan.scenario, self.via or self.target, self.run_dir, workers=plan.options.workers
        )
        chaos = None
        if plan.experiment is not None:
            # before the load: the policy's checks that need the stack (its endpoints, its
            # replicas) refuse here, with nothing of the load or the experiment started
            chaos = ChaosRun(
                plan.experiment,
                self.run_dir,
                configuration=self.configuration,
                t0=time.time(),  # replaced by the load's time 0 below
                permissions=self.plan.options.permissions,
            )
        # the runner picks a time 0 far enough ahead for its Locust processes to be ready
        self.t0 = self.load.start()
        if chaos is not None:
            chaos.t0 = self.t0
            chaos.start()
            self.chaos = chaos  # only a started run is stopped and waited for
        self.events.emit(EventKind.RUN, self.plan.run_id, "start", {"t0": self.t0}, t=self.t0)
        self._watch()

    def _watch(self) -> None:
        """Progress until the schedule is done, the user stops it or the load generator dies."""
        end = self.t0 + self.plan.scenario.duration_s
        while True:
            if self.signals.flag.is_set():
                self.status = "aborted"
                self._note_interrupt()
                self.progress.say("interrupted: stopping the load and rolling faults back")
                return
            if not self.load.alive:
                if time.time() < end - 1.0:
                    raise CouldNotRun("the load generator stopped before the end of the run")
                break
            if time.time() > end + DRAIN_S:
                break
            self._show_progress(end)
            time.sleep(TICK_S)
        self.status = "completed"

    def _show_progress(self, end: float) -> None:
        now = time.time()
        # read once a tick: the windows come from events.jsonl
        windows = self.chaos.windows() if self.chaos is not None else []
        active = [w for w in windows if w.end is None]
        fault = active[-1].name if active else None
        if now < self.t0 + self.plan.scenario.warmup_s:
            phase = "warm-up"
        elif fault:
            phase = "fault"
        elif windows:
            phase = "recovery"
        else:
            phase = "baseline"
        self.progress.update(phase, fault, end - now, self.load.progress())

    def _wind_down(self) -> None:
        """Rollbacks first, then the load, then server metrics; each step runs even when the
        one before it failed."""
        self._stage("wind-down")
        self.progress.close()
        if self.chaos is not None:
            with suppress(Exception):
                self.chaos.stop()
                self.chaos.wait(timeout=60)
        if self.configuration:
            from aichaos.experiments.safety import restore_all

            for note in _guarded(restore_all, self.configuration) or []:
                self.progress.say(f"restored: {note}")
        if self.load is not None:
            _guarded(self.load.stop)
            _guarded(self.load.wait, 30)
        if self.events is not None and self.t0 is not None:
            self.events.emit(EventKind.RUN, self.plan.run_id, "end", {"status": self.status})
        self._collect_metrics()

    def _collect_metrics(self) -> None:
        rows: list = []
        if self.scraper is not None:
            rows = self.scraper.stop()
        elif self.prometheus_url and self.t0 is not None:
            source = PrometheusSource(self.prometheus_url)
            rows = _guarded(source.collect, self.started_at, time.time()) or []
        write_metrics(self.run_dir, rows)
        self.metrics_rows = metrics_summary(rows)

    def _evaluate(self) -> None:
        """Evaluate what was recorded; a signal stops it, and the run is then not evaluated."""
        from aichaos.slo.compare import with_baseline
        from aichaos.slo.evaluate import evaluate_run, write_result
        from aichaos.slo.history import with_history

        self._write_manifest()  # the evaluation reads the run's status from run.json
        self._stage("evaluation")
        self.events.emit(EventKind.EVALUATION, self.plan.run_id, "start")
        baseline = self.plan.options.baseline
        try:
            stopped, result = self.signals.interruptible(
                evaluate_run,
                self.run_dir,
                self.plan.slo,
                prometheus_url=self.prometheus_url,
            )
            if not stopped and result is not None and baseline and baseline.is_dir():
                stopped, compared = self.signals.interruptible(
                    with_baseline, result, baseline, self.plan.slo
                )
                result = compared or result  # stopped while comparing: evaluated, not compared
            if not stopped and result is not None and baseline and baseline.is_dir():
                stopped, analysed = self.signals.interruptible(
                    with_history, result, baseline, self.plan.slo
                )
                result = analysed or result  # the change points over the kept history
        except Exception as exc:  # the report still shows what was recorded
            self.problem = self.problem or f"evaluation failed: {exc}"
            self.progress.say(self.problem)
            traceback.print_exc(file=sys.stderr)
            return
        self.events.emit(EventKind.EVALUATION, self.plan.run_id, "end", {"stopped": stopped})
        if result is None:
            self._catch_up()
            self.progress.say("interrupted during the evaluation: the run is not evaluated")
            return
        self.result = result
        write_result(self.run_dir, result)
        self._catch_up()

    def _catch_up(self) -> bool:
        """A signal after the load (evaluation, stack down, rendering) still stops the run: it
        becomes aborted in run.json and in slo.json. True when this call changed the status."""
        from aichaos.slo.evaluate import judge_completion, write_result

        if not self.signals.flag.is_set() or self.status != "completed":
            return False
        self.status = "aborted"
        self._note_interrupt()
        self._write_manifest()
        if self.result is not None:
            events, _ = read_events(self.run_dir)
            self.result = judge_completion(self.result, read_manifest(self.run_dir), events)
            write_result(self.run_dir, self.result)
        return True

    def _note_interrupt(self) -> None:
        """The ``interrupt`` event, once, at the first signal's time (the handler cannot
        write it: it may run while the event log's lock is held)."""
        if self.signals.first is None or self._interrupt_noted or self.events is None:
            return
        self._interrupt_noted = True
        t, name, stage = self.signals.first
        self.events.emit(INTERRUPT, name, "instant", {"during": stage}, t=t)

    def _render(self) -> None:
        """Render the reports; a signal during it stops it, and they are rendered again, not
        interruptible, from what exists, so no report says anything but how the run ended."""
        self._catch_up()
        self._stage("rendering")
        stopped, _ = self.signals.interruptible(self._render_reports)
        if self._catch_up() or stopped:
            self.progress.say("interrupted while rendering: rendering the reports as aborted")
            self._render_reports()

    def _render_reports(self) -> None:
        from aichaos.reports.render import render_run

        _guarded(render_run, self.run_dir)

    def _publish(self) -> None:
        """Point at the report, hand summary.md to the CI's step summary, open the browser."""
        report = self.run_dir / "report.html"
        if report.exists():
            self.progress.say(f"report: {report.resolve().as_uri()}")
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if self.plan.options.ci and summary and (self.run_dir / SUMMARY_MD).exists():
            with open(summary, "a", encoding="utf-8") as f:
                f.write((self.run_dir / SUMMARY_MD).read_text(encoding="utf-8") + "\n")
        if self.plan.options.open_report and report.exists() and _has_display():
            import webbrowser

            webbrowser.open(report.resolve().as_uri())

    def _exit_code(self, result: SloResult | None) -> int:
        from aichaos.slo.evaluate import exit_code

        if self.bad_input and not self.signals.flag.is_set():
            self.progress.say(f"run {self.status}: exit {exits.BAD_INPUT}")
            return exits.BAD_INPUT
        if self.signals.flag.is_set() or self.status != "completed" or result is None:
            self.progress.say(f"run {self.status}: exit {exits.NOT_COMPLETED}")
            return exits.NOT_COMPLETED
        code = exit_code(result)
        verdict = result.verdict
        self.progress.say(f"verdict: {verdict}, score {fmt.number(result.score)}")
        undecided = result.key_undecided
        if verdict == "inconclusive" and undecided:
            self.progress.say(
                "inconclusive key objectives (their intervals straddle the "
                f"threshold; more traffic decides them): {', '.join(undecided)}"
            )
        options = self.plan.options
        if code == exits.OK and options.promote and options.baseline is not None:
            from aichaos.slo.baseline import promote

            promoted = promote(self.run_dir, options.baseline)
            self.progress.say(f"promoted into the baseline: {promoted}")
        return code

    def _stack_down(self) -> None:
        if self.stack is not None and self.stack is not self.shared_stack:
            _guarded(self.stack.down)
        self.stack = None

    # --- the manifest ----------------------------------------------------------------------

    def _write_manifest(self) -> None:
        if not self.run_dir.exists():
            return
        manifest = self.life.manifest
        manifest.ended_at = None if self.status == "running" else time.time()
        if self.stack is not None:  # kept once the stack is down: the reports name it
            self.stack_info = _stack_summary(self.stack, self.plan.topology_source)
        manifest.t0 = self.t0
        manifest.target = self.target
        manifest.fault_proxy = FaultProxy(url=self.via, upstream=self.target) if self.via else None
        manifest.stack = self.stack_info
        manifest.prometheus_url = self.prometheus_url
        manifest.metrics_rows = getattr(self, "metrics_rows", None)
        self.life.save()


def _has_display() -> bool:
    """A graphical session to open a browser in; without one (a server, CI) a text browser
    would take the terminal over, so the report's path is printed instead."""
    return sys.platform == "darwin" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def _gateway(state: StackState) -> str:
    gateways = [name for name, s in state.services.items() if s.kind == "gateway"]
    if not gateways:
        raise CouldNotRun("the topology has no service of kind 'gateway' to send load to")
    return gateways[0]


def _scrape_sources(stack: Stack) -> dict[str, str]:
    services = stack.status().services
    return {n: s.url for n, s in services.items() if s.kind not in UNSCRAPED_KINDS and s.url}


def _stack_summary(stack: Stack | None, source: str | None) -> dict[str, Any] | None:
    if stack is None:
        return None
    state = stack.status()
    return {
        "topology": source,
        "services": {n: {"kind": s.kind, "url": s.url} for n, s in state.services.items()},
        "proxies": {n: {"url": p.url, "upstream": p.upstream} for n, p in state.proxies.items()},
        "prometheus": state.prometheus.model_dump(mode="json") if state.prometheus else None,
    }


def _guarded(fn: Any, *args: Any) -> Any:
    """Run one clean-up step; a failure is reported and the next step still runs."""
    try:
        return fn(*args)
    except Exception as exc:
        print(f"aichaos run: {getattr(fn, '__qualname__', fn)}: {exc}", file=sys.stderr)
        return None


__all__ = ["run_game_day"]
