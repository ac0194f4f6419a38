"""One class per SLI, in one registry (``SLIS``): its unit, the good side of its threshold,
the fields an objective on it carries, how its threshold reads, and how one phase's value is
measured. The spec reader and the evaluator ask the registry; neither keeps an if-chain over
SLI names.

``measure`` gets the ``Evaluator`` (``evaluate.py``): the run's records in the order each SLI
is placed by, the masks, the interval helpers and ``row``, which turns a value, its interval
and its sample count into an objective row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aichaos.rundir import InputError

from .fields import check_keys, number, parse_duration, ratio
from .result import ObjectiveRow

if TYPE_CHECKING:
    from .evaluate import Evaluator
    from .phases import Phase
    from .spec import Objective

Row = ObjectiveRow
METRIC_AGGS = ("max", "min", "mean", "last", "p95")


class Sli:
    """An SLI measured per phase (and per tier when the objective names tiers), over the
    requests of the objective's turns when it names them."""

    name: ClassVar[str]
    unit: ClassVar[str] = ""
    op: ClassVar[str] = "<="  # the good side of a threshold, when the objective does not say
    kind: ClassVar[str] = "other"  # latency | ratio | time | other
    from_records: ClassVar[bool] = True  # measured from request records (turns can scope it)

    def fields(self, item: dict[str, Any], file: str, where: str) -> dict[str, Any]:
        """The objective's fields of this SLI only (a percentile, a query...)."""
        if "percentile" in item:
            raise InputError(file, f"{where}.percentile", f"no percentile for sli {self.name}")
        return {}

    def threshold(self, value: Any, file: str, where: str) -> float:
        return number(value, file, where, minimum=None)

    def rows(self, ev: Evaluator, obj: Objective) -> list[Row]:
        from .phases import select

        out = []
        for scope in obj.phases:
            phases = select(ev.run.phases, scope)
            if not phases:
                out.append(ev.row(obj, scope, None, None, None, 0, f"no {scope} phase"))
            for phase in phases:
                for tier in obj.tiers or (None,):
                    out.append(self.measure(ev, obj, phase, tier))
        return out

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        raise NotImplementedError


class Latency(Sli):
    """A percentile of a per-request latency, with its distribution-free interval."""

    unit = "s"
    kind = "latency"

    def __init__(self, name: str):
        self.name = name

    def fields(self, item: dict[str, Any], file: str, where: str) -> dict[str, Any]:
        if "percentile" not in item:
            raise InputError(file, f"{where}.percentile", "a percentile like 95 or 99.9")
        percentile = number(item["percentile"], file, f"{where}.percentile")
        if not 0 < percentile < 100:
            raise InputError(file, f"{where}.percentile", "a number between 0 and 100", percentile)
        clock = item.get("clock", "sent")
        if clock not in ("sent", "scheduled"):
            raise InputError(file, f"{where}.clock", "sent or scheduled", clock)
        return {"percentile": percentile, "clock": clock}

    def threshold(self, value: Any, file: str, where: str) -> float:
        return duration_threshold(value, file, where)

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        rows = ev.run.rows(phase, self.name)
        key = (self.name, rows.start, rows.stop, tier, obj.clock, obj.turns)
        ev.want(key, obj.percentile or 50.0)
        est = ev.summary(key)[1][obj.percentile or 50.0]
        why = None if est.samples else "no samples"
        return ev.row(obj, phase.name, tier, est.value, est.ci, est.samples, why)


class Ratio(Sli):
    """A share of requests (0..1) with its Wilson interval."""

    unit = "ratio"
    kind = "ratio"

    def threshold(self, value: Any, file: str, where: str) -> float:
        return ratio(value, file, where)

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        rows = ev.run.rows(phase)
        mask = ev.scope_mask(rows, tier, obj.turns)
        k, n, why = self.count(ev, obj, rows, mask)
        value, ci = (k / n, ev.wilson(k, n)) if n else (None, None)
        return ev.row(obj, phase.name, tier, value, ci, n, None if n else why)

    def count(self, ev: Evaluator, obj: Objective, rows: slice, mask) -> tuple[int, int, str]:
        """(events counted, events in all, why there are none)."""
        raise NotImplementedError


class Flagged(Ratio):
    """The share of requests flagged bad (errors) or shed."""

    def __init__(self, name: str, flags: str):
        self.name, self.flags = name, flags

    def count(self, ev: Evaluator, obj: Objective, rows: slice, mask) -> tuple[int, int, str]:
        flags = (ev.bad if self.flags == "bad" else ev.shed_mask())[rows] & mask
        return int(flags.sum()), int(mask.sum()), "no requests"


class Availability(Ratio):
    """The share of requests that did not fail, counted as good events (its Wilson interval
    is the error ratio's turned over)."""

    name = "availability"
    op = ">="

    def count(self, ev: Evaluator, obj: Objective, rows: slice, mask) -> tuple[int, int, str]:
        requests = int(mask.sum())
        return requests - int((ev.bad[rows] & mask).sum()), requests, "no requests"


class ServedShare(Ratio):
    """The share of answered requests served by a fallback, or degraded."""

    def __init__(self, name: str):
        self.name = name

    def count(self, ev: Evaluator, obj: Objective, rows: slice, mask) -> tuple[int, int, str]:
        ok = ev.r.ok[rows] & mask
        flags = ev.fallback_ok[rows] & mask if self.name == "fallback_share" else ev.degraded(rows)
        return int((flags & ok).sum()), int(ok.sum()), "no answered requests"


class Goodput(Ratio):
    """The share of requests answered within every latency limit."""

    name = "goodput"
    op = ">="

    def fields(self, item: dict[str, Any], file: str, where: str) -> dict[str, Any]:
        super().fields(item, file, where)
        if "latency" not in item:
            return {}
        lat = item["latency"]
        if not isinstance(lat, dict):
            raise InputError(file, f"{where}.latency", "a mapping like {ttft: 500ms}", lat)
        check_keys(lat, {"ttft", "tpot", "e2e"}, file, f"{where}.latency")
        return {
            "latency": {k: parse_duration(v, file, f"{where}.latency.{k}") for k, v in lat.items()}
        }

    def count(self, ev: Evaluator, obj: Objective, rows: slice, mask) -> tuple[int, int, str]:
        good = ev.good_mask(rows, obj.latency or None) & mask
        return int(good.sum()), int(mask.sum()), "no requests"


class Cost(Sli):
    name = "cost_per_request"
    unit = "currency"

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        rows = ev.run.rows(phase)
        mask = ev.scope_mask(rows, tier, obj.turns)
        n = int(mask.sum())
        value = float(ev.costs(rows)[mask].mean()) if n else None
        return ev.row(obj, phase.name, tier, value, None, n, None if n else "no requests")


class ServerSide(Sli):
    """A server-side value: a threshold may be a duration ("500ms") or a plain number."""

    from_records = False

    def threshold(self, value: Any, file: str, where: str) -> float:
        if isinstance(value, str):
            return parse_duration(value, file, where)
        return number(value, file, where, minimum=None)


class Promql(ServerSide):
    name = "promql"

    def fields(self, item: dict[str, Any], file: str, where: str) -> dict[str, Any]:
        super().fields(item, file, where)
        if not isinstance(item.get("query"), str) or not item["query"].strip():
            raise InputError(file, f"{where}.query", "a PromQL expression")
        return {"query": item["query"]}

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        return ev.promql_row(obj, phase, tier)


class Metric(ServerSide):
    name = "metric"

    def fields(self, item: dict[str, Any], file: str, where: str) -> dict[str, Any]:
        super().fields(item, file, where)
        if not isinstance(item.get("metric"), str) or not item["metric"]:
            raise InputError(file, f"{where}.metric", "a series name of metrics.parquet")
        agg = item.get("agg", "max")
        if agg not in METRIC_AGGS:
            raise InputError(file, f"{where}.agg", f"one of {list(METRIC_AGGS)}", agg)
        labels = item.get("labels", {})
        if not isinstance(labels, dict):
            raise InputError(file, f"{where}.labels", "a mapping of label to value", labels)
        labels = {str(k): str(v) for k, v in labels.items()}
        return {"metric": item["metric"], "agg": agg, "labels": labels}

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        return ev.metric_row(obj, phase, tier)


class TimeTo(Sli):
    """A time measured once per fault window: to fail over (the first fallback answer), to
    detect (the first burn-rate alert), to recover (the SLIs back within their thresholds).
    Never within the run fails."""

    unit = "s"
    kind = "time"
    from_records = False

    def __init__(self, name: str, measured: str):
        self.name, self.measured = name, measured  # measured: the Evaluator's method

    def threshold(self, value: Any, file: str, where: str) -> float:
        return duration_threshold(value, file, where)

    def rows(self, ev: Evaluator, obj: Objective) -> list[Row]:
        phases = ev.fault_scope(obj)
        if not phases:
            return [ev.row(obj, "fault", None, None, None, 0, "no fault window in this run")]
        return [self.measure(ev, obj, p, None) for p in phases]

    def measure(self, ev: Evaluator, obj: Objective, phase: Phase, tier: str | None) -> Row:
        value = getattr(ev, self.measured)(phase)
        row = ev.row(obj, phase.name, None, value, None, 1, None)
        if value is None:
            row.status = "fail"
            row.detail = f"{self.name.replace('_', ' ')}: never (within the run)"
        return row


def duration_threshold(value: Any, file: str, where: str) -> float:
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        # "500" reads as 500 seconds where its writer almost surely meant milliseconds
        expected = "a duration with its unit, such as 500ms or 2s (a number is seconds)"
        raise InputError(file, where, expected, value)
    return parse_duration(value, file, where)


SLIS: dict[str, Sli] = {
    s.name: s
    for s in (
        *(Latency(n) for n in ("ttft", "tpot", "itl", "e2e")),
        Flagged("error_rate", "bad"),
        Availability(),
        Goodput(),
        ServedShare("fallback_share"),
        Flagged("shed_share", "shed"),
        ServedShare("degraded_share"),
        TimeTo("time_to_failover", "failover_time"),
        TimeTo("time_to_detect", "detect_time"),
        TimeTo("time_to_recover", "recover_time"),
        Cost(),
        Promql(),
        Metric(),
    )
}


def of_kind(kind: str) -> tuple[str, ...]:
    return tuple(name for name, sli in SLIS.items() if sli.kind == kind)
