"""Phases of a run from its manifest and ``events.jsonl``.

- ``all``: the whole run, warm-up included (rundir contract).
- ``baseline``: warm-up end → first fault start (or run end when there is no fault).
- ``fault:<name>``: each fault window, from an event pair ``kind: "fault"`` start/end with the
  same ``name`` (``aichaos.rundir.fault_windows``, the one derivation). A second window of the
  same name is ``fault:<name>#2``. A start without an end lasts to the run's end (and is
  noted).
- ``recovery``: last fault end → run end.

Warm-up: ``warmup_s`` of run.json after ``started_at``. Gaps between two faults belong to
``all`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aichaos.rundir import EventKind, RunManifest, fault_windows


@dataclass
class Phase:
    name: str
    kind: str  # baseline | fault | recovery | all
    start: float
    end: float
    fault: dict[str, Any] | None = None
    requests: int = 0  # requests that ended in the phase
    carried_in: int = 0  # of them, sent before it (they straddle its opening boundary)
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration,
            "requests": self.requests,
            "carried_in": self.carried_in,
            "fault": self.fault,
        }


def run_span(
    manifest: RunManifest | None, events: list[dict], t_first: float | None, t_last: float | None
) -> tuple[float, float]:
    """Run start and end: run.json first, then the run's (or the load's) start and end
    events, then the records."""
    start = manifest.started_at if manifest is not None else None
    end = manifest.ended_at if manifest is not None else None
    load = [e for e in events if e.get("kind") in (EventKind.RUN, EventKind.LOAD)]
    if start is None:
        starts = [e["t"] for e in load if e.get("action") == "start"]
        start = starts[0] if starts else t_first
    if end is None:
        ends = [e["t"] for e in load if e.get("action") == "end"]
        end = ends[-1] if ends else t_last
    if start is None:
        start = min((e["t"] for e in events), default=0.0)
    if end is None:
        end = max((e["t"] for e in events), default=start)
    if t_last is not None and end < t_last:
        end = t_last  # records sent after the recorded end still belong to the run
    return float(start), float(end)


def warmup_end(manifest: RunManifest | None, start: float) -> float:
    """The warm-up is the run's first ``warmup_s`` seconds (run.json)."""
    return start + (manifest.warmup_s if manifest is not None else 0.0)


def build_phases(
    manifest: RunManifest | None, events: list[dict], t_first: float | None, t_last: float | None
) -> tuple[list[Phase], list[str]]:
    start, end = run_span(manifest, events, t_first, t_last)
    windows, notes = fault_windows(events, run_end=end)
    warm = min(max(warmup_end(manifest, start), start), end)
    phases: list[Phase] = []
    first_fault = windows[0].start if windows else end
    phases.append(Phase("baseline", "baseline", warm, max(warm, first_fault)))
    counts: dict[str, int] = {}
    ends = [w.end if w.end is not None else end for w in windows]  # all set: run_end given
    for w, w_end in zip(windows, ends, strict=True):
        counts[w.name] = counts.get(w.name, 0) + 1
        suffix = "" if counts[w.name] == 1 else f"#{counts[w.name]}"
        fault = {"name": w.name, "activity": w.activity, "experiment": w.experiment}
        phases.append(Phase(f"fault:{w.name}{suffix}", "fault", w.start, w_end, fault))
    if windows:
        last_end = max(ends)
        phases.append(Phase("recovery", "recovery", min(last_end, end), end))
    phases.append(Phase("all", "all", start, end))
    return phases, notes


def select(phases: list[Phase], scope: str) -> list[Phase]:
    """The phases an objective's scope names: ``fault`` is every fault window."""
    if scope == "fault":
        return [p for p in phases if p.kind == "fault"]
    return [p for p in phases if p.name == scope]
