"""slo.json rearranged into the rows the report's tables show. Nothing is computed here: each
figure is taken as the evaluator wrote it and only joined to its phase (budget, alerts,
recovery, failover) or grouped (objectives by phase)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aichaos.reports.fmt import STATUSES
from aichaos.slo.result import Comparison, ObjectiveRow, PromptLengths, SloResult


def phase_rows(slo: SloResult, t0: float) -> list[dict[str, Any]]:
    """One row per phase with its budget figures, the first alert that fired for it, its
    recovery times and its failover time."""
    budget = {b.phase: b for b in slo.budget.by_phase} if slo.budget is not None else {}
    failover = {f.fault: f for f in slo.failover}
    rows = []
    for phase in slo.phases:
        name = phase.name
        mine = [a for a in slo.alerts if a.fault == name]
        fired = [a for a in mine if a.time_to_detect_s is not None]
        first = min(fired, key=lambda a: a.time_to_detect_s or 0.0, default=None)
        start, end = phase.start, phase.end
        rows.append(
            {
                "phase": phase,
                "name": name,
                "kind": phase.kind,
                "start_rel": start - t0,
                "end_rel": end - t0,
                "length": end - start,
                "requests": phase.requests,
                "carried_in": phase.carried_in if phase.kind != "all" else None,
                "budget": budget.get(name),
                "alert": first,
                "alerts": mine,
                "recovery": [r for r in slo.recovery if r.fault == name],
                "failover": failover.get(name),
            }
        )
    return rows


def objectives_by_phase(slo: SloResult) -> list[tuple[str, list[ObjectiveRow]]]:
    """Objective rows grouped by phase, in the order slo.json lists the phases."""
    order = [p.name for p in slo.phases]
    groups: dict[str, list[ObjectiveRow]] = {}
    for o in slo.objectives:
        groups.setdefault(o.phase, []).append(o)
    known = [name for name in order if name in groups]
    rest = [name for name in groups if name not in order]
    return [(name, groups[name]) for name in known + rest]


def status_counts(slo: SloResult | None) -> dict[str, int]:
    counts = Counter(o.status for o in slo.objectives) if slo is not None else Counter()
    return {s: counts.get(s, 0) for s in STATUSES}


def failing(slo: SloResult | None) -> list[ObjectiveRow]:
    return [o for o in slo.objectives if o.status == "fail"] if slo is not None else []


def latency_rows(slo: SloResult) -> list[dict[str, Any]]:
    """Per phase and metric: the percentiles the evaluator reported, and goodput."""
    rows: list[dict[str, Any]] = []
    for phase, samples in slo.latency.items():
        metrics = samples.metrics()
        for metric, stats in metrics:
            rows.append({"phase": phase, "metric": metric, "stats": stats.by_label()})
        if not metrics and phase in slo.goodput:
            rows.append({"phase": phase, "metric": None, "stats": {}})
    return rows


def tier_rows(slo: SloResult) -> list[dict[str, Any]]:
    return [
        {
            "tier": name,
            "requests": t.requests,
            "errors": t.errors,
            "error_ratio": t.error_ratio,
            "ttft": t.ttft.by_label() if t.ttft is not None else None,
        }
        for name, t in slo.tiers.items()
    ]


LATENCY_SLIS = ("ttft", "tpot", "itl", "e2e")


def sli_unit(sli: str) -> str | None:
    """The unit of a comparison's SLI, from its name (ttft-p95 is seconds, error_ratio a
    ratio): the comparison rows do not carry one."""
    name = sli.lower()
    if name.startswith(LATENCY_SLIS):
        return "s"
    if "error" in name or "availability" in name or "goodput_share" in name:
        return "ratio"
    return None


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The baseline comparison's changes, regressions first, each with its unit."""
    rows = [{**dict(c), "unit": sli_unit(c.sli)} for c in comparison.changes]
    rank = lambda c: 0 if c["regression"] else (1 if c["significant"] else 2)  # noqa: E731
    return sorted(rows, key=rank)


def prompt_length_lines(pl: PromptLengths | None) -> list[str]:
    """Sentences on the prompt lengths (slo's ``prompt_lengths``): where they were counted,
    how many were capped, and how far the server's counts were from the intended ones."""
    if pl is None or not pl.sources:
        return []
    sources = ", ".join(f"{k} {v}" for k, v in sorted(pl.sources.items()))
    lines = [f"Intended prompt lengths counted by: {sources}."]
    if pl.approximate:
        lines.append(
            f"{pl.approximate} requests have APPROXIMATE lengths (one token per word): "
            "the target had no /tokenize and the scenario names no tokenizer."
        )
    if pl.capped:
        lines.append(f"{pl.capped} requests were capped to fit the target's max_model_len.")
    if pl.share_within is not None:
        lines.append(
            f"Server-reported prompt tokens within ±{pl.tolerance * 100:g}% of the intended "
            f"count: {pl.within_tolerance} of {pl.compared} ({pl.share_within:.1%})."
        )
    for w in pl.worst:
        lines.append(f"Intended {w.intended}, served {w.served} ({w.relative:+.1%}).")
    return lines
