"""The experiment's schedule fields (``x-aichaos``), as one typed contract.

On the experiment: ``{"settle": seconds}`` (how long the run waits after the last rollback).
On a method action: ``{"at": seconds, "duration": seconds, "rollback": "name"}``: when it
fires (after the load's time 0), how long its fault is held, which of the experiment's
rollbacks undoes it. Validated once by the experiment catalog; the runner, the clock and the
completion check read them through ``action_timing`` / ``experiment_timing``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .rundir import SCHEDULE_EXTENSION
from .units import MAX_DURATION_S

Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION_S, allow_inf_nan=False, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionTiming(_Strict):
    at: Seconds | None = None
    duration: Seconds | None = None
    rollback: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class ExperimentTiming(_Strict):
    settle: Seconds = 0.0


def action_timing(activity: Any) -> ActionTiming | None:
    """The schedule of a (validated) method action; None when it has none."""
    raw = activity.get(SCHEDULE_EXTENSION) if isinstance(activity, dict) else None
    if raw is None:
        return None
    try:
        return ActionTiming.model_validate(raw)
    except ValidationError:
        return None  # never validated (an old run.json): no schedule to honour


def experiment_timing(experiment: Any) -> ExperimentTiming:
    raw = experiment.get(SCHEDULE_EXTENSION) if isinstance(experiment, dict) else None
    try:
        return ExperimentTiming.model_validate(raw or {})
    except ValidationError:
        return ExperimentTiming()
