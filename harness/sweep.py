"""``aichaos sweep``: the highest rate at which the SLOs hold, with no fault and under faults.

One stack (or ``--target``) for the whole sweep. Each **step** is a whole game day at one
constant offered rate (the scenario's workload, tiers and prompts; its rate replaced), in a run
directory of its own under the sweep's, evaluated against the SLO spec. A **condition** climbs
the grid of rates until a step breaks (a key objective misses, or the stack is saturated),
then narrows between the highest holding rate and the lowest broken one by bisection. The
conditions are: no fault, then each ``--under`` experiment, its fault held through every step
(each of its scheduled actions starts at the step's time 0 and lasts the whole step); a
condition under a fault climbs no higher than the rate at which the no-fault one broke.

What a step holds, what is saturated and what capacity means: ``aichaos.sweepfile``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from aichaos import exits
from aichaos.experiments.catalog import load_experiment
from aichaos.experiments.clock import hold_through
from aichaos.experiments.policy import Permissions
from aichaos.rundir import InputError
from aichaos.scenarios.spec import Scenario, load_scenario
from aichaos.slo.decide import samples_needed
from aichaos.slo.result import ObjectiveRow, SloResult
from aichaos.slo.saturation import keeping_up
from aichaos.slo.spec import SloSpec, load_spec, on_good_side
from aichaos.sweepfile import NO_FAULT, Condition, SliPoint, Step, SweepResult, write_sweep
from aichaos.units import Duration

from .run import CouldNotRun, GameDay, _gateway
from .run_plan import RunOptions, RunPlan, _topology, new_run_id
from .signals import Signals
from .stack import Stack
from .supervisor import StackError

MAX_STEPS = 40  # a bound on any sweep: grid plus narrowing, every condition


class SweepOptions(BaseModel):
    """The command line of ``aichaos sweep``."""

    model_config = ConfigDict(extra="forbid")

    scenario: str = "steady"
    rates: list[PositiveFloat] | None = None  # an explicit grid, ascending
    start_rps: PositiveFloat = 2.0
    factor: float = Field(default=2.0, gt=1.0)
    max_rps: PositiveFloat = 128.0
    step_s: Duration = 60.0
    slo: str = "default"
    under: list[str] = []
    narrow: int = Field(default=3, ge=0, le=8)  # 3 on a doubling grid: the knee within ±6%
    require_rps: PositiveFloat | None = None
    target: str | None = None
    topology: Path | None = None
    backend: str = "sim"
    model: str | None = None
    workers: PositiveInt = 1
    out: Path = Path("runs")
    seed: int | None = None
    ci: bool = False
    permissions: Permissions = Field(default_factory=Permissions)

    def grid(self) -> list[float]:
        if self.rates:
            return sorted(self.rates)
        count = int(math.log(self.max_rps / self.start_rps, self.factor) + 1e-9) + 1
        return [round(self.start_rps * self.factor**i, 3) for i in range(max(count, 1))]


class Plan(BaseModel):
    """The sweep's inputs, resolved and checked before anything starts."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    options: SweepOptions
    scenario: Scenario
    spec: SloSpec
    experiments: dict[str, dict[str, Any]]  # --under ref -> experiment document
    grid: list[float]
    sweep_dir: Path


def plan_sweep(options: SweepOptions) -> Plan:
    """Every input loaded and checked; an InputError (one line, exit 2) for the first bad one."""
    scenario = load_scenario(options.scenario, duration_s=options.step_s, seed=options.seed)
    spec = load_spec(options.slo)
    spec.check_tiers(scenario.tiers, f"scenario {scenario.name}")
    grid = options.grid()
    _check_step_length(scenario, spec, options.step_s, grid[0])
    experiments = {ref: load_experiment(ref, options.permissions) for ref in options.under}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_dir = options.out / f"sweep-{stamp}-{scenario.name}"
    if sweep_dir.exists():
        raise InputError("--out", "sweep directory", "a directory that does not exist yet")
    return Plan(options=options, scenario=scenario, spec=spec, experiments=experiments,
                grid=grid, sweep_dir=sweep_dir)  # fmt: skip


def _check_step_length(scenario: Scenario, spec: SloSpec, step_s: float, rate: float) -> None:
    """Each step must send enough requests for every key percentile to be estimated with the
    spec's confidence, from the lowest rate of the grid up."""
    shares = {t.name: t.share for t in scenario.tier_list}
    measured = step_s - scenario.warmup_s
    for obj in spec.objectives:
        if not obj.key or obj.percentile is None:
            continue
        share = sum(shares.get(t, 0.0) for t in obj.tiers) if obj.tiers else 1.0
        need = samples_needed(obj, spec.confidence)
        if need and rate * measured * share < need:
            at_least = math.ceil(need / (rate * share) + scenario.warmup_s)
            raise InputError(
                "--step",
                "step length",
                f"at least {at_least}s at {rate:g} req/s for {need} samples of {obj.id} "
                f"(spec {spec.name}, confidence {spec.confidence:g}), or a higher --start",
                f"{step_s:g}s",
            )


class Stopped(Exception):
    """Ctrl-C or SIGTERM: the sweep stops after rolling the running step's faults back."""


class Sweep:
    def __init__(self, plan: Plan, signals: Signals):
        self.plan = plan
        self.options = plan.options
        self.signals = signals
        self.stack: Stack | None = None
        self.steps_run = 0

    def run(self) -> SweepResult:
        o = self.options
        result = SweepResult(scenario=self.plan.scenario.name, slo=self.plan.spec.name,
                             step_s=o.step_s, target=o.target or "", conditions=[],
                             required_rps=o.require_rps)  # fmt: skip
        self.plan.sweep_dir.mkdir(parents=True)
        try:
            self._bring_up(result)
            limit = None
            for name, ref in [(NO_FAULT, None), *[(ref, ref) for ref in self.plan.experiments]]:
                condition = Condition(
                    name=name,
                    experiment=ref,
                    steps=[],
                    capacity_rps=None,
                    broken_rps=None,
                    stopped_because="did not finish",
                )
                result.conditions.append(condition)
                self._climb(result, condition, limit)
                if ref is None:
                    limit = condition.broken_rps
        except (CouldNotRun, StackError) as exc:
            result.status, result.problem = "failed", str(exc)
        except Stopped:
            result.status, result.problem = "aborted", "interrupted"
        finally:
            if self.stack is not None:
                self.stack.down()
        if self.signals.flag.is_set():
            result.status, result.problem = "aborted", "interrupted"
        write_sweep(self.plan.sweep_dir, result)
        return result

    def _bring_up(self, result: SweepResult) -> None:
        o = self.options
        if o.target is not None:
            return
        topology, source = _topology(RunOptions(topology=o.topology, backend=o.backend,
                                                model=o.model))  # fmt: skip
        _say(f"bringing the stack up ({source})")
        self.stack = Stack.up(topology, self.plan.sweep_dir / "stack", source=source,
                              interrupt=self.signals.flag)  # fmt: skip
        result.target = self.stack.url(_gateway(self.stack.status()))

    # --- one condition: climb, then narrow --------------------------------------------------

    def _climb(self, result: SweepResult, condition: Condition, limit: float | None) -> None:
        """Climb the grid for ``condition`` (in ``result``), then narrow; sweep.json is written
        after every step, so an interrupted sweep keeps the steps it finished."""
        stopped = "the top of the grid held"
        for rate in self.plan.grid:
            if limit is not None and rate > limit:
                stopped = f"the rate at which the no-fault condition broke ({limit:g} req/s)"
                break
            step = self._add_step(result, condition, rate)
            if step.broken:
                stopped = _why_broken(step)
                break
        condition.stopped_because = stopped
        for _ in range(self.options.narrow):
            low, high = _bounds(condition.steps)
            if low is None or high is None or self.signals.flag.is_set():
                break
            self._add_step(result, condition, round((low + high) / 2, 3))

    def _add_step(self, result: SweepResult, condition: Condition, rate: float) -> Step:
        step = self._step(condition.name, condition.experiment, rate)
        condition.steps.append(step)
        condition.capacity_rps, condition.broken_rps = _bounds(condition.steps)
        write_sweep(self.plan.sweep_dir, result)
        return step

    def _step(self, name: str, ref: str | None, rate: float) -> Step:
        if self.signals.flag.is_set():
            raise Stopped
        self.steps_run += 1
        if self.steps_run > MAX_STEPS:
            raise CouldNotRun(f"more than {MAX_STEPS} steps: the grid is too fine")
        _say(f"{name}: {rate:g} req/s for {self.options.step_s:g}s")
        run_plan = self._step_plan(name, ref, rate)
        # the step's own handlers while it runs (they stop it and roll its faults back);
        # the sweep's again between steps
        game = GameDay(run_plan, Signals(), stack=self.stack)
        code = game.execute()
        if game.signals.flag.is_set():
            self.signals.flag.set()
            raise Stopped
        if game.status != "completed" or game.result is None or game.t0 is None:
            raise CouldNotRun(f"step {rate:g} req/s ({name}) did not complete: {game.problem} "
                              f"({run_plan.run_dir})")  # fmt: skip
        step = _step_of(game.result, rate, run_plan, code, game.t0)
        _say(f"{name}: {rate:g} req/s -> {_step_line(step)}")
        return step

    def _step_plan(self, name: str, ref: str | None, rate: float) -> RunPlan:
        o, plan = self.options, self.plan
        data = {**plan.scenario.to_dict(), "rate": {"shape": "constant", "rps": rate}}
        data["name"] = f"{plan.scenario.name}-{rate:g}rps"
        # prompts of their own in every step: a repeated one would be a cache hit
        data["seed"] = (plan.scenario.seed or 0) + self.steps_run
        scenario = Scenario.from_dict(data)
        experiment = hold_through(plan.experiments[ref], o.step_s) if ref else None
        folder = "no-fault" if ref is None else Path(ref).stem
        run_id = f"{folder}-{rate:g}rps-{new_run_id()}"
        options = RunOptions(scenario=scenario.name, experiment=ref or "none", slo=o.slo,
                             target=o.target, workers=o.workers, out=plan.sweep_dir, ci=True,
                             seed=o.seed, permissions=o.permissions, command=sys.argv)  # fmt: skip
        return RunPlan(run_id, plan.sweep_dir / run_id, scenario, experiment, plan.spec,
                       None, None, o.target, options)  # fmt: skip


def _bounds(steps: list[Step]) -> tuple[float | None, float | None]:
    """The lowest broken rate, and the highest holding rate below it."""
    broken = [s.offered_rps for s in steps if s.broken]
    high = min(broken) if broken else None
    held = [s.offered_rps for s in steps if not s.broken and (high is None or s.offered_rps < high)]
    return (max(held) if held else None), high


def _why_broken(step: Step) -> str:
    if step.saturated:
        return (f"saturated at {step.offered_rps:g} req/s (completed {step.achieved_rps:.1f} "
                "req/s)")  # fmt: skip
    missed = ", ".join(p.id for p in step.slis if not p.held)
    how = "failed beyond doubt" if step.beyond_doubt else "missed"
    return f"{how} at {step.offered_rps:g} req/s: {missed}"


def _step_of(result: SloResult, rate: float, plan: RunPlan, code: int, t0: float) -> Step:
    keys = [r for r in result.objectives if r.key and r.phase == "all"]
    points = [SliPoint(id=r.id, value=r.value, threshold=r.threshold, unit=r.unit,
                       status=r.status, meets=_point_meets(r)) for r in keys]  # fmt: skip
    scenario = plan.scenario
    load = keeping_up(plan.run_dir, t0, scenario.warmup_s, scenario.duration_s)
    return Step(offered_rps=rate, achieved_rps=load.ended_rps, requests=result.requests or 0,
                errors=load.errors, verdict=result.verdict,
                holds=bool(points) and all(p.held for p in points),
                beyond_doubt=result.verdict == "fail",
                saturated=load.saturated, slis=points,
                run_dir=str(plan.run_dir), exit_code=code)  # fmt: skip


def _point_meets(row: ObjectiveRow) -> bool:
    """The row's point estimate meets its threshold."""
    if row.value is None or row.threshold is None:
        return False
    return on_good_side(row.value, row.op, row.threshold)


def _step_line(step: Step) -> str:
    state = "holds" if not step.broken else ("saturated" if step.saturated else "broken")
    values = ", ".join(f"{p.id} {p.value:.3g}" for p in step.slis if p.value is not None)
    return f"{state} (completed {step.achieved_rps:.1f} req/s; {values})"


def _say(line: str) -> None:
    print(f"aichaos sweep: {line}", file=sys.stderr, flush=True)


def run_sweep(options: SweepOptions) -> int:
    """The sweep from options to exit code: 0 done (and capacity >= --require-rps), 1 capacity
    below --require-rps, 2 bad input, 3 the sweep could not run or was interrupted."""
    from aichaos.reports.sweep import render_sweep

    plan = plan_sweep(options)
    signals = Signals()
    signals.install()
    try:
        result = Sweep(plan, signals).run()
    finally:
        signals.restore()
    report = render_sweep(plan.sweep_dir, result)
    _say(f"report: {report.resolve().as_uri()}")
    for line in result.statements():
        _say(line)
    if result.status != "completed":
        _say(f"sweep {result.status}: {result.problem}: exit {exits.NOT_COMPLETED}")
        return exits.NOT_COMPLETED
    capacity = result.capacity_rps
    if options.require_rps is not None and (capacity or 0.0) < options.require_rps:
        _say(f"capacity {capacity or 0:g} req/s is below --require-rps {options.require_rps:g}")
        return exits.SLO_FAILED
    return exits.OK
