"""``summary.json``: the verdict and failures in a few fields, for scripts that gate on a run
without reading the whole of slo.json."""

from __future__ import annotations

from typing import Any

from aichaos.reports import tables
from aichaos.reports.rundata import RunData
from aichaos.slo.result import History, ObjectiveRow

SUMMARY_SCHEMA_VERSION = 1
OBJECTIVE_FIELDS = (
    "id",
    "objective",
    "phase",
    "tier",
    "sli",
    "op",
    "threshold",
    "unit",
    "value",
    "ci",
    "samples",
    "status",
    "key",
    "detail",
)
HISTORY_FIELDS = {"verdict": True, "runs": True, "baseline": True, "newest": True}
SERIES_FIELDS = {"id", "verdict"}


def build_summary(run: RunData) -> dict[str, Any]:
    slo = run.slo
    m = run.manifest
    experiment = (m.experiment if m is not None else None) or {}
    scenario = (m.scenario if m is not None else None) or {}
    not_passing = [o for o in run.objectives if o.status in ("fail", "warn")]
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": run.run_id,
        "status": run.status,
        "incomplete": run.incomplete,
        "evaluated": run.evaluated,
        "verdict": run.verdict,
        "headline": run.headline,
        "score": run.score,
        # an unfinished run: how it ended and which phases ran (slo/completion.py)
        "completion": run.completion.model_dump() if run.completion else None,
        "key_failed": list(slo.key_failed) if slo is not None else [],
        "counts": tables.status_counts(slo),
        "not_passing": [_objective(o) for o in not_passing],
        "budget_spent_total": slo.budget.spent_total if slo and slo.budget else None,
        "started_at": m.started_at if m is not None else None,
        "ended_at": m.ended_at if m is not None else None,
        "duration_s": run.series.get("duration_s"),
        "scenario": scenario.get("name"),
        "experiment": experiment.get("title"),
        # seconds since the run started, as on the report's timeline
        "faults": [
            {"name": f["name"], "start_s": f["start"], "end_s": f["end"], "open": f["open"]}
            for f in run.series["faults"]
        ],
        "comparison_verdict": slo.comparison.verdict if slo and slo.comparison else None,
        "history": _history(slo.history) if slo and slo.history else None,
        "notes": run.notes,
    }


def _objective(o: ObjectiveRow) -> dict[str, Any]:
    """The row's fields a gate reads, as slo.json holds them."""
    row = o.model_dump(mode="json")
    return {k: row[k] for k in OBJECTIVE_FIELDS}


def _history(history: History) -> dict[str, Any]:
    """The baseline history's verdict and each key series' verdict, as slo.json holds them."""
    fields = {**HISTORY_FIELDS, "series": {"__all__": SERIES_FIELDS}}
    return history.model_dump(mode="json", include=fields)
