"""The Chaos Toolkit journal (``journal.json``, chaoslib's own shape) as rows for the report:
what the experiment did, what each activity returned, and which rollbacks ran."""

from __future__ import annotations

import json
from typing import Any

OUTPUT_CHARS = 2000  # an activity's output is shown up to this much; the journal has it all


def journal_view(journal: dict[str, Any] | None) -> dict[str, Any] | None:
    if not journal:
        return None
    experiment = journal.get("experiment") if isinstance(journal.get("experiment"), dict) else {}
    steady = journal.get("steady_states") if isinstance(journal.get("steady_states"), dict) else {}
    return {
        "title": str(experiment.get("title") or "untitled experiment"),
        "description": str(experiment.get("description") or ""),
        "status": str(journal.get("status") or "unknown"),
        "deviated": bool(journal.get("deviated")),
        "start": journal.get("start"),
        "end": journal.get("end"),
        "duration": journal.get("duration"),
        "chaoslib": journal.get("chaoslib-version"),
        "steady_before": _steady(steady.get("before")),
        "steady_after": _steady(steady.get("after")),
        "run": [_activity(r) for r in _runs(journal.get("run"))],
        "rollbacks": [_activity(r) for r in _runs(journal.get("rollbacks"))],
    }


def _runs(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _steady(state: Any) -> dict[str, Any] | None:
    if not isinstance(state, dict):
        return None
    return {
        "met": state.get("steady_state_met"),
        "probes": [_activity(r) for r in _runs(state.get("probes"))],
    }


def _activity(run: dict[str, Any]) -> dict[str, Any]:
    activity = run.get("activity") if isinstance(run.get("activity"), dict) else {}
    provider = activity.get("provider") if isinstance(activity.get("provider"), dict) else {}
    target = ".".join(str(p) for p in (provider.get("module"), provider.get("func")) if p)
    exception = run.get("exception")
    if isinstance(exception, list):
        exception = "".join(str(line) for line in exception)
    return {
        "name": str(activity.get("name") or "?"),
        "type": str(activity.get("type") or ""),
        "provider": target or str(provider.get("url") or provider.get("path") or ""),
        "arguments": _text(provider.get("arguments")) if provider.get("arguments") else "",
        "status": str(run.get("status") or ""),
        "tolerance_met": run.get("tolerance_met"),
        "start": run.get("start"),
        "duration": run.get("duration"),
        "output": _text(run.get("output")),
        "exception": _text(exception) if exception else "",
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
    if len(text) > OUTPUT_CHARS:
        return text[:OUTPUT_CHARS] + f"\n… ({len(text) - OUTPUT_CHARS} more characters)"
    return text
