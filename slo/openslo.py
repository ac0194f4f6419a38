"""OpenSLO v1 ``kind: SLO`` documents, read as aichaos specs.

What maps (budgeting method ``Occurrences`` only — a run is a count of requests):

- ``thresholdMetric`` over an ``aichaos`` metric source (``spec: {sli: ttft|tpot|e2e|itl}``)
  with objectives ``{op: lte|lt, value: V, target: T}``: "a share T of requests at or under V",
  i.e. the ``T``-th percentile at or under V → a latency objective (percentile 100·T, threshold
  V).
- ``ratioMetric`` over an ``aichaos`` source (``good: {sli: ok}``, ``total: {sli: requests}``,
  or ``bad: {sli: errors}``): availability with threshold ``target``.
- ``Prometheus`` sources (``spec: {query: ...}``): ``thresholdMetric`` → a PromQL objective
  (the query against ``value`` with ``op``); ``ratioMetric`` → PromQL good/total ratio (with
  ``counter: true`` each side is taken as ``increase(QUERY[$window])``, so the queries must be
  selectors) against ``target``.
- ``timeWindow[0].duration`` → the budget period; the first ratio objective's target → the
  availability objective; ``kind: SLI`` documents may be referenced with ``indicatorRef``.

Everything else (Timeslices, calendar windows, other metric sources, alert policies) is
refused or ignored with one clear line.
"""

from __future__ import annotations

from typing import Any

from aichaos.rundir import InputError

from .fields import parse_duration
from .spec import SloSpec

OPS = {"lte": "<=", "lt": "<", "gte": ">=", "gt": ">"}
GOOD_SLIS, BAD_SLIS, TOTAL_SLIS = ("ok", "good"), ("errors", "bad"), ("requests", "total")


def _get(d: Any, path: str, file: str, where: str) -> Any:
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise InputError(file, f"{where}.{path}", "a value (the field is required)")
        cur = cur[key]
    return cur


def _source(metric: Any, file: str, where: str) -> tuple[str, dict]:
    src = _get(metric, "metricSource", file, where)
    kind = str(src.get("type", "")) if isinstance(src, dict) else ""
    if kind.lower() not in ("aichaos", "prometheus"):
        raise InputError(file, f"{where}.metricSource.type", "aichaos or Prometheus", kind or None)
    spec = src.get("spec") or {}
    if not isinstance(spec, dict):
        raise InputError(file, f"{where}.metricSource.spec", "a mapping")
    return kind.lower(), spec


def from_openslo(docs: list[Any], file: str) -> SloSpec:
    slis = {
        d["metadata"]["name"]: d["spec"]
        for d in docs
        if isinstance(d, dict) and d.get("kind") == "SLI" and isinstance(d.get("metadata"), dict)
    }
    objectives: list[dict[str, Any]] = []
    top: dict[str, Any] = {}
    for i, doc in enumerate(docs):
        where = f"document[{i}]"
        if not isinstance(doc, dict) or doc.get("kind") != "SLO":
            continue
        if doc.get("apiVersion") != "openslo/v1":
            raise InputError(file, f"{where}.apiVersion", "openslo/v1", doc.get("apiVersion"))
        name = str(_get(doc, "metadata.name", file, where))
        spec = _get(doc, "spec", file, where)
        method = spec.get("budgetingMethod", "Occurrences")
        if method != "Occurrences":
            raise InputError(file, f"{where}.spec.budgetingMethod", "Occurrences", method)
        windows = spec.get("timeWindow") or []
        if windows and "period" not in top:
            top["period"] = parse_duration(
                windows[0].get("duration", "30d"), file, f"{where}.spec.timeWindow[0].duration"
            )
        top.setdefault("name", spec.get("service") or name)
        if "indicatorRef" in spec:
            ref = spec["indicatorRef"]
            if ref not in slis:
                raise InputError(file, f"{where}.spec.indicatorRef", "the name of a kind: SLI", ref)
            indicator = slis[ref]
        else:
            indicator = _get(spec, "indicator.spec", file, f"{where}.spec")
        goals = spec.get("objectives") or []
        if not goals:
            raise InputError(file, f"{where}.spec.objectives", "a non-empty list")
        for j, goal in enumerate(goals):
            gw = f"{where}.spec.objectives[{j}]"
            objectives.append(_objective(name, j, indicator, goal, file, gw, top))
    if not objectives:
        raise InputError(file, "kind", "at least one OpenSLO document of kind SLO")
    top["objectives"] = objectives
    return SloSpec.from_dict(top, file)


def _objective(
    name: str, j: int, indicator: dict, goal: Any, file: str, where: str, top: dict
) -> dict[str, Any]:
    if not isinstance(goal, dict):
        raise InputError(file, where, "a mapping {op, value, target}", goal)
    oid = f"{name}-{j}" if j else name
    if "thresholdMetric" in indicator:
        kind, src = _source(indicator["thresholdMetric"], file, f"{where}.thresholdMetric")
        op = OPS.get(goal.get("op", ""))
        if op is None:
            raise InputError(file, f"{where}.op", "lte, lt, gte or gt", goal.get("op"))
        value = _get(goal, "value", file, where)
        if kind == "prometheus":
            query = _get(src, "query", file, f"{where}.metricSource.spec")
            return {"id": oid, "sli": "promql", "query": query, "op": op, "threshold": value}
        sli = src.get("sli")
        if op not in ("<=", "<") or sli not in ("ttft", "tpot", "e2e", "itl"):
            raise InputError(
                file, f"{where}.metricSource.spec.sli", "ttft, tpot, e2e or itl with op lte/lt", sli
            )
        target = float(_get(goal, "target", file, where))
        return {"id": oid, "sli": sli, "percentile": round(100 * target, 6), "threshold": value}
    if "ratioMetric" in indicator:
        ratio = indicator["ratioMetric"]
        target = float(_get(goal, "target", file, where))
        top.setdefault("availability_objective", target)
        total_kind, total = _source(_get(ratio, "total", file, where), file, f"{where}.total")
        side = "good" if "good" in ratio else "bad"
        kind, part = _source(_get(ratio, side, file, where), file, f"{where}.{side}")
        if kind == "prometheus" and total_kind == "prometheus":
            q_part, q_total = part.get("query"), total.get("query")
            if ratio.get("counter"):
                q_part, q_total = (f"sum(increase({q}[$window]))" for q in (q_part, q_total))
            expr = f"({q_part}) / ({q_total})"
            if side == "bad":
                expr = f"1 - {expr}"
            return {"id": oid, "sli": "promql", "query": expr, "op": ">=", "threshold": target}
        names = GOOD_SLIS if side == "good" else BAD_SLIS
        if part.get("sli") not in names or total.get("sli") not in TOTAL_SLIS:
            raise InputError(
                file,
                f"{where}.{side}.metricSource.spec.sli",
                f"{names[0]} over {TOTAL_SLIS[0]}",
                part.get("sli"),
            )
        return {"id": oid, "sli": "availability", "threshold": target}
    raise InputError(file, f"{where}.indicator", "a ratioMetric or a thresholdMetric")
