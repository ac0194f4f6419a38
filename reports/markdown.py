"""``summary.md``: the verdict and what failed, short enough for a GitHub Actions step summary
(GitHub caps one at 1 MiB; this stays far below by listing only failures in full)."""

from __future__ import annotations

import re
from typing import Any

from aichaos.reports import fmt, tables
from aichaos.reports.rundata import RunData
from aichaos.reports.trend import change_text, threshold_text
from aichaos.slo.completion import INCOMPLETE_VERDICTS
from aichaos.slo.result import History, ObjectiveRow, SloResult

ORDER = {"fail": 0, "warn": 1, "inconclusive": 2, "insufficient_data": 3}  # objectives at risk
MARKS = {"pass": "✅", "warn": "⚠️", "fail": "❌", "inconclusive": "❔", "insufficient_data": "❔"}
MARKS |= dict.fromkeys(INCOMPLETE_VERDICTS, "⛔")  # a run that did not finish
MAX_ROWS = 200  # objective rows in the collapsed full table
MAX_NOTES = 20
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def cell(value: Any) -> str:
    """Text from the run made inert in a Markdown table cell: no HTML, no table break, no
    formatting, one line."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: Any) -> str:
    """Text from the run as a code span: Markdown does not apply inside one (backslashes would
    show), so only what could end the span or the table row is replaced."""
    text = " ".join(str(value).split()).replace("`", "'").replace("|", "\\|")
    return f"`{text}`"


def render_markdown(run: RunData) -> str:
    slo = run.slo
    m = run.manifest
    mark = MARKS.get(run.verdict, "❔")
    lines = [f"## {mark} Game day: {cell(run.headline)}", ""]
    experiment = (m.experiment if m is not None else None) or {}
    scenario = (m.scenario if m is not None else None) or {}
    started, ended = (m.started_at, m.ended_at) if m is not None else (None, None)
    length = ended - started if fmt.is_number(started) and fmt.is_number(ended) else None
    facts = [
        f"**Run** {code(run.run_id)}",
        f"**status** {cell(run.status)}",
        f"**scenario** {cell(scenario.get('name') or '—')}",
        f"**experiment** {cell(experiment.get('title') or 'none')}",
        f"**duration** {fmt.duration(length if length is not None else run.series['duration_s'])}",
        f"**started** {fmt.utc(started)}",
    ]
    lines += [" · ".join(facts), ""]
    if run.status != "completed":
        lines += [
            f"> **Run {cell(run.status)}**: results cover what was recorded (incomplete).",
            "",
        ]
    elif run.incomplete:
        lines += ["> **Incomplete**: the evaluation saw missing data (see notes).", ""]
    if slo is None:
        lines += ["> **Not evaluated**: no slo.json in the run directory, so no verdict.", ""]
        return "\n".join([*lines, *_notes(run)]) + "\n"
    counts = tables.status_counts(slo)
    lines.append(
        "**Objectives:** " + " · ".join(f"{n} {fmt.status_label(s)}" for s, n in counts.items())
    )
    if slo.key_failed:
        keys = ", ".join(code(k) for k in slo.key_failed)
        lines.append(f"  \n**Key objectives failed:** {keys}")
    lines.append("")
    objectives = run.objectives
    at_risk = [o for o in objectives if o.status in ORDER]
    at_risk.sort(key=lambda o: ORDER.get(o.status, 3))
    if at_risk:
        lines += ["### Failed and at-risk objectives", "", *_objective_table(at_risk), ""]
    if slo.history is not None:
        lines += _history(slo.history)
    lines += _phase_table(slo, run.series["t0"])
    if objectives:
        shown = objectives[:MAX_ROWS]
        lines += [
            f"<details><summary>All {len(objectives)} objectives</summary>",
            "",
            *_objective_table(shown),
            "",
        ]
        if len(objectives) > len(shown):
            lines += [f"… and {len(objectives) - len(shown)} more in report.html", ""]
        lines += ["</details>", ""]
    lengths = tables.prompt_length_lines(slo.prompt_lengths)
    if lengths:
        lines += ["### Prompt lengths", "", *(f"- {cell(line)}" for line in lengths), ""]
    return "\n".join([*lines, *_notes(run)]) + "\n"


def _objective_table(rows: list[ObjectiveRow]) -> list[str]:
    out = [
        "| Status | Objective | Phase | Tier | Value | Threshold | 95% CI | Samples |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for o in rows:
        unit = o.unit
        out.append(
            "| "
            + " | ".join(
                [
                    f"{MARKS.get(o.status, '')} {fmt.status_label(o.status)}",
                    code(o.objective),
                    cell(o.phase),
                    cell(o.tier or "all"),
                    fmt.value(o.value, unit),
                    f"{fmt.op(o.op)} {fmt.value(o.threshold, unit)}",
                    fmt.interval(o.ci, unit),
                    fmt.number(o.samples),
                ]
            )
            + " |"
        )
    return out


def _history(history: History) -> list[str]:
    """The history's verdict, and a row per key series with a change point at the newest run
    (a regression or an improvement; earlier ones are in report.html)."""
    mark = MARKS["fail" if history.verdict == "regression" else "pass"]
    facts = [
        f"**Runs** {history.runs}",
        f"**baseline** {code(history.baseline)}",
        f"**verdict** {mark} {cell(history.verdict)}",
    ]
    lines = ["### Trend over the baseline history", "", " · ".join(facts), ""]
    changed = [
        (s, c) for s in history.series for c in s.change_points if c.run_id == history.newest
    ]
    if not changed:
        return [*lines, "No key series changed at the newest run.", ""]
    lines += [
        "| Series | Change point | Before → after | Change | A regression is |",
        "|---|---|---:|---:|---|",
    ]
    for s, c in changed:
        verdict = f"{MARKS['fail']} regression" if c.regression else cell(c.direction)
        means = f"{fmt.value(c.before, s.unit)} → {fmt.value(c.after, s.unit)}"
        lines.append(
            f"| {code(s.id)} | {verdict} | {means} | {cell(change_text(s, c))}"
            f" | {cell(threshold_text(s))} |"
        )
    return [*lines, ""]


def _phase_table(slo: SloResult, t0: float) -> list[str]:
    rows = tables.phase_rows(slo, t0)
    if not rows:
        return []
    out = [
        "### Phases",
        "",
        "| Phase | Requests | Error ratio | Burn rate | Budget spent | Time to detect "
        "| Time to recover |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = r["budget"]
        alert = r["alert"]
        detect = fmt.duration(alert.time_to_detect_s if alert is not None else None)
        recover = ", ".join(
            f"{fmt.duration(x.time_to_recover_s)} ({cell(x.sli)})" for x in r["recovery"]
        )
        out.append(
            f"| {cell(r['name'])} | {fmt.number(r['requests'])}"
            f" | {fmt.percent(b.error_ratio if b else None)}"
            f" | {fmt.rate(b.burn_rate if b else None)}"
            f" | {fmt.percent(b.budget_spent if b else None)}"
            f" | {detect} | {recover or fmt.DASH} |"
        )
    spent = slo.budget.spent_total if slo.budget is not None else None
    out += ["", f"Error budget spent by the run: **{fmt.percent(spent)}**", ""]
    return out


def _notes(run: RunData) -> list[str]:
    if not run.notes:
        return []
    shown = run.notes[:MAX_NOTES]
    lines = ["### Data notes", "", *(f"- {cell(n)}" for n in shown)]
    if len(run.notes) > len(shown):
        lines.append(f"- … {len(run.notes) - len(shown)} more in report.html")
    return [*lines, ""]
