"""slo.json rearranged into the rows the report's tables show. Nothing is computed here: each
figure is taken as the evaluator wrote it and only joined to its phase (budget, alerts,
recovery, failover) or grouped (objectives by phase)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aichaos.reports.fmt import STATUSES


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def phase_rows(slo: dict[str, Any], t0: float) -> list[dict[str, Any]]:
    """One row per phase with its budget figures, the first alert that fired for it, its
    recovery times and its failover time."""
    budget = {b.get("phase"): b for b in _dicts((slo.get("budget") or {}).get("by_phase"))}
    alerts = _dicts(slo.get("alerts"))
    recovery = _dicts(slo.get("recovery"))
    failover = {f.get("fault"): f for f in _dicts(slo.get("failover"))}
    rows = []
    for phase in _dicts(slo.get("phases")):
        name = phase.get("name")
        mine = [a for a in alerts if a.get("fault") == name]
        fired = [a for a in mine if _is_num(a.get("time_to_detect_s"))]
        first = min(fired, key=lambda a: _num(a.get("time_to_detect_s")), default=None)
        start, end = phase.get("start"), phase.get("end")
        rows.append(
            {
                "phase": phase,
                "name": name,
                "kind": phase.get("kind"),
                "start_rel": start - t0 if _is_num(start) else None,
                "end_rel": end - t0 if _is_num(end) else None,
                "length": end - start if _is_num(start) and _is_num(end) else None,
                "requests": phase.get("requests"),
                "carried_in": phase.get("carried_in") if phase.get("kind") != "all" else None,
                "budget": budget.get(name) or {},
                "alert": first,
                "alerts": mine,
                "recovery": [r for r in recovery if r.get("fault") == name],
                "failover": failover.get(name),
            }
        )
    return rows


def objectives_by_phase(slo: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Objective rows grouped by phase, in the order slo.json lists the phases."""
    order = [p.get("name") for p in _dicts(slo.get("phases"))]
    groups: dict[str, list[dict[str, Any]]] = {}
    for o in _dicts(slo.get("objectives")):
        groups.setdefault(str(o.get("phase")), []).append(o)
    known = [name for name in order if name in groups]
    rest = [name for name in groups if name not in order]
    return [(name, groups[name]) for name in known + rest]


def status_counts(slo: dict[str, Any] | None) -> dict[str, int]:
    counts = Counter(str(o.get("status")) for o in _dicts((slo or {}).get("objectives")))
    return {s: counts.get(s, 0) for s in STATUSES}


def failing(slo: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [o for o in _dicts((slo or {}).get("objectives")) if o.get("status") == "fail"]


def latency_rows(slo: dict[str, Any]) -> list[dict[str, Any]]:
    """Per phase and metric: the percentiles the evaluator reported, and goodput."""
    goodput = slo.get("goodput") or {}
    rows = []
    for phase, metrics in (slo.get("latency") or {}).items():
        if not isinstance(metrics, dict):
            continue
        for metric, stats in metrics.items():
            if isinstance(stats, dict):
                rows.append({"phase": phase, "metric": metric, "stats": stats})
        if not metrics and phase in goodput:
            rows.append({"phase": phase, "metric": None, "stats": {}})
    return rows


def tier_rows(slo: dict[str, Any]) -> list[dict[str, Any]]:
    tiers = slo.get("tiers") or {}
    return [{"tier": name, **stats} for name, stats in tiers.items() if isinstance(stats, dict)]


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


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """The baseline comparison's changes, regressions first, each with its unit."""
    rows = [
        {**c, "unit": sli_unit(str(c.get("sli", "")))} for c in _dicts(comparison.get("changes"))
    ]
    rank = lambda c: 0 if c.get("regression") else (1 if c.get("significant") else 2)  # noqa: E731
    return sorted(rows, key=rank)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _num(v: Any) -> float:
    return float(v) if _is_num(v) else float("inf")


def prompt_length_lines(slo: dict[str, Any]) -> list[str]:
    """Sentences on the prompt lengths (slo's ``prompt_lengths``): where they were counted,
    how many were capped, and how far the server's counts were from the intended ones."""
    pl = slo.get("prompt_lengths")
    if not isinstance(pl, dict) or not pl.get("sources"):
        return []
    sources = ", ".join(f"{k} {v}" for k, v in sorted(pl["sources"].items()))
    lines = [f"Intended prompt lengths counted by: {sources}."]
    if pl.get("approximate"):
        lines.append(
            f"{pl['approximate']} requests have APPROXIMATE lengths (one token per word): "
            "the target had no /tokenize and the scenario names no tokenizer."
        )
    if pl.get("capped"):
        lines.append(f"{pl['capped']} requests were capped to fit the target's max_model_len.")
    if _is_num(pl.get("share_within")):
        tol = _num(pl.get("tolerance")) * 100
        lines.append(
            f"Server-reported prompt tokens within ±{tol:g}% of the intended count: "
            f"{pl['within_tolerance']} of {pl['compared']} ({_num(pl['share_within']):.1%})."
        )
    for w in _dicts(pl.get("worst")):
        lines.append(
            f"Intended {w.get('intended')}, served {w.get('served')} "
            f"({_num(w.get('relative')):+.1%})."
        )
    return lines
