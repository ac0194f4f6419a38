"""How a run ended and how much of it ran: an incomplete run is never headlined as a pass.

A run whose run.json status is not ``completed`` gets, whatever its recorded objectives
scored, the verdict of how it ended (DESIGN, Safety):

- ``aborted``: Ctrl-C or SIGTERM stopped it (the harness writes an ``interrupt`` event);
- ``crashed``: the process that owned it died (the owner watch writes ``owner_gone``);
- ``incomplete``: anything else that did not finish — the stack, the target or the load
  generator failed, or run.json still says ``running`` while its owner lives.

run.json's status is read settled (``RunManifest.settled_status``): ``running`` with a dead owner
is ``crashed``. This is the one place that reads it; slo.json and every report agree.

Its phases are told against the plan: each one ran, was cut (so many seconds of so many
planned) or did not run. The stop is the first ``interrupt`` or ``owner_gone`` event, else
the end of the run as recorded. The plan is run.json's: ``t0`` and ``duration_s`` for the
load, the experiment's ``x-aichaos`` ``at`` / ``duration`` for each fault.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from aichaos.rundir import INTERRUPT, OWNER_GONE, EventKind, RunManifest
from aichaos.schedule import action_timing

from .phases import build_phases

if TYPE_CHECKING:
    from .result import SloResult

IncompleteVerdict = Literal["aborted", "crashed", "incomplete"]
COMPLETED = "completed"
INCOMPLETE: IncompleteVerdict = "incomplete"
# run.json status -> verdict; every other unfinished status is ``incomplete``
VERDICT_OF_STATUS: dict[str, IncompleteVerdict] = {"aborted": "aborted", "crashed": "crashed"}
# the verdicts of a run that did not complete; the reports give all three one look
INCOMPLETE_VERDICTS = ("aborted", "crashed", INCOMPLETE)
STOP_KINDS = (INTERRUPT, OWNER_GONE)


class PhaseRan(BaseModel):
    name: str
    kind: str  # baseline | fault | recovery
    state: Literal["ran", "cut", "not_run"]
    ran_s: float | None = None
    planned_s: float | None = None


class Completion(BaseModel):
    status: str  # run.json's
    verdict: IncompleteVerdict
    stopped_at: float | None = None  # epoch seconds
    during: str | None = None  # the stage the stop came in (load, evaluation, ...) when known
    load_started: bool = False
    phases: list[PhaseRan] = []


def incomplete_verdict(status: Any) -> IncompleteVerdict | None:
    """The verdict an unfinished run is headlined with; None for a completed run, or for a
    run directory without a status (no run.json), which its objectives judge."""
    if status is None or status == COMPLETED:
        return None
    return VERDICT_OF_STATUS.get(str(status), INCOMPLETE)


def completion(
    manifest: RunManifest | None, phases: list[dict[str, Any]], events: list[dict[str, Any]]
) -> Completion | None:
    """How an unfinished run ended; ``phases`` as slo.json holds them. None when it finished
    (or when there is no run.json, or it records no status)."""
    status = manifest.settled_status() if manifest is not None else None
    verdict = incomplete_verdict(status)
    if verdict is None:
        return None
    whole = next((p for p in phases if p.get("kind") == "all"), None)
    stop = next((e for e in events if e.get("kind") in STOP_KINDS), None)
    stopped_at = _number(stop.get("t")) if stop else None
    if stopped_at is None and whole is not None:
        stopped_at = _number(whole.get("end"))
    during = (stop.get("detail") or {}).get("during") if stop else None
    return Completion(
        status=str(status),
        verdict=verdict,
        stopped_at=stopped_at,
        during=str(during) if during else None,
        load_started=_load_started(manifest, events, whole),
        phases=_phases_ran(manifest, phases, stopped_at),
    )


def run_completion(
    manifest: RunManifest | None, slo: SloResult | None, events: list[dict[str, Any]]
) -> Completion | None:
    """How an unfinished run ended, judged now from run.json (which may have changed since
    slo.json was written: a crash while rendering) with slo.json's phases, or, for a run that
    was never evaluated, the phases slo cuts from its events. What the reports render."""
    phases = [p.model_dump(mode="json") for p in slo.phases] if slo is not None else []
    if not phases:
        timed = [e for e in events if _number(e.get("t")) is not None]
        phases = [p.to_dict() for p in build_phases(manifest, timed, None, None)[0]]
    return completion(manifest, phases, events)


def _load_started(manifest: RunManifest | None, events: list[dict], whole: dict | None) -> bool:
    t0 = manifest.t0 if manifest is not None else None
    if _number(t0) is not None or (whole or {}).get("requests"):
        return True
    starts = [e for e in events if e.get("action") == "start"]
    return any(e.get("kind") in (EventKind.RUN, EventKind.LOAD) for e in starts)


def planned_faults(
    manifest: RunManifest | None,
) -> dict[str, tuple[float | None, float | None]]:
    """``{fault name: (at, duration)}`` from the experiment run.json recorded (as scaled for
    the run); a fault window is named after its action."""
    experiment = manifest.experiment if manifest is not None else None
    method = experiment.get("method") if experiment is not None else None
    planned: dict[str, tuple[float | None, float | None]] = {}
    for activity in method if isinstance(method, list) else []:
        timing = action_timing(activity)
        if timing is not None and activity.get("type") == "action":
            planned[str(activity.get("name"))] = (timing.at, timing.duration)
    return planned


def _phases_ran(
    manifest: RunManifest | None, phases: list[dict[str, Any]], stopped_at: float | None
) -> list[PhaseRan]:
    planned = planned_faults(manifest)
    t0 = _number(manifest.t0) if manifest is not None else None
    length = _number(manifest.duration_s) if manifest is not None else None
    run_end = t0 + length if t0 is not None and length is not None else None
    starts = [t0 + at for at, _ in planned.values() if t0 is not None and at is not None]
    ends = [t0 + at + d for at, d in planned.values() if t0 is not None and None not in (at, d)]
    started = {str((p.get("fault") or {}).get("name")) for p in phases if p.get("kind") == "fault"}
    missing = [name for name in planned if name not in started]
    out: list[PhaseRan] = []
    for p in phases:
        kind = p.get("kind")
        if kind == "baseline":
            end = min(starts) if starts else (run_end if not planned else None)
            out.append(_ran(p, _span(p, end), stopped_at))
        elif kind == "fault":
            name = str((p.get("fault") or {}).get("name"))
            out.append(_ran(p, planned.get(name, (None, None))[1], stopped_at))
    for name in missing:
        out.append(PhaseRan(name=f"fault:{name}", kind="fault", state="not_run",
                            planned_s=planned[name][1]))  # fmt: skip
    recovery = next((p for p in phases if p.get("kind") == "recovery"), None)
    planned_recovery = run_end - max(ends) if run_end is not None and ends else None
    if recovery is not None and not missing:
        out.append(_ran(recovery, planned_recovery, stopped_at))
    elif planned:
        # the recovery the plan meant comes after the last fault, which never came
        out.append(PhaseRan(name="recovery", kind="recovery", state="not_run",
                            planned_s=planned_recovery))  # fmt: skip
    return out


def _span(phase: dict[str, Any], planned_end: float | None) -> float | None:
    start = _number(phase.get("start"))
    if planned_end is None or start is None:
        return None
    return max(0.0, planned_end - start)


def _ran(phase: dict[str, Any], planned_s: float | None, stopped_at: float | None) -> PhaseRan:
    name, kind = str(phase.get("name")), str(phase.get("kind"))
    start, end = _number(phase.get("start")), _number(phase.get("end"))
    if start is None or end is None:
        return PhaseRan(name=name, kind=kind, state="not_run", planned_s=planned_s)
    if stopped_at is None:
        return PhaseRan(name=name, kind=kind, state="ran", ran_s=end - start, planned_s=planned_s)
    if start >= stopped_at:
        return PhaseRan(name=name, kind=kind, state="not_run", planned_s=planned_s)
    ran = min(end, stopped_at) - start
    # cut: the stop came before the phase's planned end, or, without a plan, while it was on
    cut = start + planned_s > stopped_at if planned_s is not None else end >= stopped_at
    state: Literal["ran", "cut"] = "cut" if cut else "ran"
    return PhaseRan(name=name, kind=kind, state=state, ran_s=ran, planned_s=planned_s)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
