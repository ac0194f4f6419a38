"""Phases of a run from its manifest and ``events.jsonl``.

- ``all``: the whole run, warm-up included (rundir contract).
- ``baseline``: warm-up end → first fault start (or run end when there is no fault).
- ``fault:<name>``: each fault window, from an event pair ``kind: "fault"`` start/end with the
  same ``name`` (``EventKind.FAULT``, written by the experiment runner). A second window of the
  same name is ``fault:<name>#2``. A start without an end lasts to the run's end (and is
  noted).
- ``recovery``: last fault end → run end.

Warm-up: ``warmup_s`` of run.json after ``started_at``. Gaps between two faults belong to
``all`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aichaos.rundir import EventKind


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
    manifest: dict[str, Any], events: list[dict], t_first: float | None, t_last: float | None
) -> tuple[float, float]:
    """Run start and end: run.json first, then the run's (or the load's) start and end
    events, then the records."""
    start = manifest.get("started_at")
    end = manifest.get("ended_at")
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


def fault_windows(events: list[dict], run_end: float) -> tuple[list[dict], list[str]]:
    """``[{"name", "start", "end", "activity", "experiment", "open"}]`` in start order (epoch
    seconds; ``open``: still on when the run stopped, so it ends at ``run_end``), and notes.
    The one derivation of fault windows: the phases of the verdict and the charts' shading."""
    notes: list[str] = []
    open_: dict[str, list[dict]] = {}
    windows: list[dict] = []
    for e in events:
        if e.get("kind") != EventKind.FAULT:
            continue
        detail = e.get("detail") or {}
        name = str(e.get("name"))
        if e.get("action") == "start":
            open_.setdefault(name, []).append(
                {
                    "name": name,
                    "start": float(e["t"]),
                    "activity": detail.get("activity"),
                    "experiment": detail.get("experiment"),
                    "open": False,
                }
            )
        elif e.get("action") == "end":
            if open_.get(name):
                w = open_[name].pop(0)
                w["end"] = float(e["t"])
                windows.append(w)
            else:
                notes.append(f"events.jsonl: fault {name!r} ended without a start; ignored")
    for name, left in open_.items():
        for w in left:
            w["end"] = max(run_end, w["start"])
            w["open"] = True
            notes.append(f"events.jsonl: fault {name!r} never ended; window runs to the run's end")
            windows.append(w)
    windows.sort(key=lambda w: w["start"])
    return windows, notes


def warmup_end(manifest: dict[str, Any], start: float) -> float:
    """The warm-up is the run's first ``warmup_s`` seconds (run.json)."""
    return start + float(manifest.get("warmup_s") or 0.0)


def build_phases(
    manifest: dict[str, Any], events: list[dict], t_first: float | None, t_last: float | None
) -> tuple[list[Phase], list[str]]:
    start, end = run_span(manifest, events, t_first, t_last)
    windows, notes = fault_windows(events, end)
    warm = min(max(warmup_end(manifest, start), start), end)
    phases: list[Phase] = []
    first_fault = windows[0]["start"] if windows else end
    phases.append(Phase("baseline", "baseline", warm, max(warm, first_fault)))
    counts: dict[str, int] = {}
    for w in windows:
        counts[w["name"]] = counts.get(w["name"], 0) + 1
        suffix = "" if counts[w["name"]] == 1 else f"#{counts[w['name']]}"
        fault = {
            "name": w["name"],
            "activity": w.get("activity"),
            "experiment": w.get("experiment"),
        }
        phases.append(Phase(f"fault:{w['name']}{suffix}", "fault", w["start"], w["end"], fault))
    if windows:
        last_end = max(w["end"] for w in windows)
        phases.append(Phase("recovery", "recovery", min(last_end, end), end))
    phases.append(Phase("all", "all", start, end))
    return phases, notes


def select(phases: list[Phase], scope: str) -> list[Phase]:
    """The phases an objective's scope names: ``fault`` is every fault window."""
    if scope == "fault":
        return [p for p in phases if p.kind == "fault"]
    return [p for p in phases if p.name == scope]
