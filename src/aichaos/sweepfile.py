"""``sweep.json``: what ``aichaos sweep`` found, written by ``harness/sweep.py`` and read by the
sweep report (``reports/sweep.py``) and the exit code.

A sweep runs steps of increasing offered rate, each a whole game day on one stack, under one or
more **conditions** (no fault, then each ``--under`` experiment held through every step). A
step **holds** when no key objective of the SLO spec failed and every key point estimate meets
its threshold (a step of a minute can rarely *prove* a tiny error ratio, so the point estimate
decides, as a reviewer reading the table would); it **fails beyond doubt** when the spec's
verdict is ``fail``; it is **saturated** when the stack fell behind: clearly fewer requests
ended within the step's measured window than were sent in it (the queue grew). A condition's
**capacity** is its highest holding rate below its lowest broken one; the interval between
them is where the true knee lies.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from .errors import InputError
from .files import write_json
from .validation import read_json_model

SWEEP_JSON = "sweep.json"
NO_FAULT = "no fault"


class SliPoint(BaseModel):
    """One key objective's value at one step, as the step's slo.json has it."""

    id: str
    value: float | None
    threshold: float | None
    unit: str
    status: str
    meets: bool  # the point estimate meets the threshold

    @property
    def held(self) -> bool:
        return self.status != "fail" and self.meets


class Step(BaseModel):
    offered_rps: float
    achieved_rps: float
    requests: int
    errors: int
    verdict: str
    holds: bool
    beyond_doubt: bool  # the spec's verdict is fail: the interval excludes the threshold
    saturated: bool
    slis: list[SliPoint]
    run_dir: str
    exit_code: int

    @property
    def broken(self) -> bool:
        return not self.holds or self.saturated


class Condition(BaseModel):
    name: str  # NO_FAULT or the experiment held through every step
    experiment: str | None
    steps: list[Step]  # in the order they ran
    capacity_rps: float | None  # the highest holding rate below the lowest broken one
    broken_rps: float | None  # the lowest broken rate (None: none broke, the top was reached)
    stopped_because: str

    def by_rate(self) -> list[Step]:
        return sorted(self.steps, key=lambda s: s.offered_rps)

    def capacity_text(self) -> str:
        if self.capacity_rps is None:
            low = self.by_rate()[0].offered_rps if self.steps else None
            return f"no rate held (lowest tried {low:g} req/s)" if low else "no step ran"
        if self.broken_rps is None:
            return f"holds at least {self.capacity_rps:g} req/s (nothing broke)"
        return f"holds {self.capacity_rps:g} req/s (broke at {self.broken_rps:g})"


class SweepResult(BaseModel):
    scenario: str
    slo: str
    step_s: float
    target: str
    conditions: list[Condition]
    required_rps: float | None = None
    status: str = "completed"  # completed, aborted or failed
    problem: str | None = None

    @property
    def capacity_rps(self) -> float | None:
        return self.conditions[0].capacity_rps if self.conditions else None

    def statements(self) -> list[str]:
        """Capacity per condition and the headroom each fault implies, in words."""
        lines = []
        for c in self.conditions:
            lines.append(f"{c.name}: {c.capacity_text()} ({c.stopped_because})")
            ratio = self.headroom(c) if c.name != NO_FAULT else None
            if ratio is not None:
                lines.append(f"{c.name}: provision {ratio:.2g}x to carry the no-fault capacity")
        return lines

    def headroom(self, condition: Condition) -> float | None:
        """Capacity over capacity under ``condition``: how much more to provision so that the
        load the stack carries with no fault is still carried under it."""
        base, under = self.capacity_rps, condition.capacity_rps
        if base is None or not under:
            return None
        return base / under


def write_sweep(directory: Path, result: SweepResult) -> Path:
    path = directory / SWEEP_JSON
    write_json(path, result.model_dump(mode="json"))
    return path


def read_sweep(directory: Path) -> SweepResult:
    """The sweep in ``directory``; an InputError (one line, exit 2) when it has none or a bad
    one."""
    result = read_json_model(directory / SWEEP_JSON, SweepResult)
    if result is None:
        raise InputError(str(directory / SWEEP_JSON), "sweep", "a sweep.json aichaos wrote")
    return result
