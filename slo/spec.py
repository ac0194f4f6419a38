"""SLO specs: the YAML a user writes, validated into an ``SloSpec``.

A spec names the budget period, the availability objective, prices, the burn-rate alerts and a
list of objectives. Each objective is one SLI against one threshold, scoped to phases, tiers
and a conversation's turns, with a weight and a key flag (a failed key objective fails the
run). Every mistake is
one ``InputError`` line: file, field, what was expected. ``load_spec`` also reads OpenSLO v1
``kind: SLO`` documents (see ``openslo.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aichaos.documents import read_document
from aichaos.rundir import InputError

from .fields import check_keys, number, parse_duration, ratio
from .slis import SLIS, of_kind

SPECS_DIR = Path(__file__).parent / "specs"

LATENCY_SLIS = of_kind("latency")
RATIO_SLIS = of_kind("ratio")
TIME_SLIS = of_kind("time")
OPS = ("<=", "<", ">=", ">")


def on_good_side(value: float, op: str, threshold: float) -> bool:
    """Whether ``value`` meets ``threshold`` for an objective's ``op``."""
    return {
        "<=": value <= threshold,
        "<": value < threshold,
        ">=": value >= threshold,
        ">": value > threshold,
    }[op]


DEGRADED_SOURCES = ("fallback", "cache", "flag")
# SRE workbook, chapter "Alerting on SLOs", for a 30-day period
DEFAULT_ALERTS = (
    {
        "name": "page-1h-5m",
        "severity": "page",
        "burn_rate": 14.4,
        "long_window": "1h",
        "short_window": "5m",
    },
    {
        "name": "page-6h-30m",
        "severity": "page",
        "burn_rate": 6.0,
        "long_window": "6h",
        "short_window": "30m",
    },
    {
        "name": "ticket-3d-6h",
        "severity": "ticket",
        "burn_rate": 1.0,
        "long_window": "3d",
        "short_window": "6h",
    },
)


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: str
    burn_rate: float
    long_window_s: float
    short_window_s: float


@dataclass(frozen=True)
class Objective:
    id: str
    sli: str
    threshold: float
    op: str = "<="
    warn: float | None = None  # a looser threshold: between the two the objective warns
    percentile: float | None = None
    phases: tuple[str, ...] = ("all",)
    tiers: tuple[str, ...] = ()  # empty: all tiers pooled; else one result per tier
    turns: str = ""  # a conversation's turns: "1", "5+" or "2-4"; empty: every request
    weight: float = 1.0
    key: bool = False
    clock: str = "sent"  # latency measured from t_sent, or from t_scheduled
    query: str | None = None  # promql; "$window" is replaced by the phase length
    metric: str | None = None  # metric: a series of metrics.parquet
    agg: str = "max"
    labels: dict[str, str] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)  # goodput's per-request limits
    description: str = ""

    @property
    def unit(self) -> str:
        return SLIS[self.sli].unit


TURNS_EXPECTED = "a turn (1), turns from one on (5+) or a range (2-4)"
_TURNS = re.compile(r"^(\d+)(?:(\+)|-(\d+))?$")


def parse_turns(value: Any, file: str, field_name: str) -> str:
    """An objective's ``turns``, written as its label: ``1``, ``5+`` or ``2-4``."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _TURNS.match(text.replace(" ", "")) if isinstance(text, str) else None
    if match is None or int(match.group(1)) < 1:
        raise InputError(file, field_name, TURNS_EXPECTED, value)
    first = int(match.group(1))
    if match.group(2):
        return f"{first}+"
    last = int(match.group(3) or first)
    if last < first:
        raise InputError(file, field_name, f"{TURNS_EXPECTED}, the range's end >= its start", value)
    return f"{first}" if last == first else f"{first}-{last}"


def turn_range(turns: str) -> tuple[int, float]:
    """The first and last turn (inclusive) a ``turns`` label covers."""
    match = _TURNS.match(turns)
    if match is None:
        raise ValueError(f"not a turns label: {turns!r}")
    first = int(match.group(1))
    if match.group(2):
        return first, math.inf
    return first, float(match.group(3) or first)


@dataclass
class SloSpec:
    name: str
    objectives: list[Objective]
    source: str = ""
    description: str = ""
    period_days: float = 30.0
    availability_objective: float = 0.999
    period_requests: float | None = None  # None: extrapolated from the baseline rate
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # per 1M tokens
    fallback_names: tuple[str, ...] = ("fallback",)
    degraded_sources: tuple[str, ...] = DEGRADED_SOURCES
    count_shed_as_errors: bool = True
    alerts: list[AlertRule] = field(default_factory=list)
    recovery_window_s: float = 10.0
    recovery_hold_s: float = 10.0
    min_tail_samples: int = 5
    # a burn-rate alert needs at least this many bad events in its long window to count as
    # a detection; fewer (a short game day's few requests) is shown as low traffic
    alert_min_events: int = 5
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    score_pass: float = 90.0
    score_warn: float = 75.0
    regression_alpha: float = 0.05
    regression_latency: float = 0.10  # relative increase of a percentile
    regression_error_ratio: float = 0.005  # absolute increase of the error ratio

    def to_dict(self) -> dict[str, Any]:
        """The spec in its YAML form: ``SloSpec.from_dict(spec.to_dict())`` gives it back."""
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "period_days": self.period_days,
            "availability_objective": self.availability_objective,
            "period_requests": self.period_requests,
            "prices": self.prices,
            "fallback_names": list(self.fallback_names),
            "degraded_sources": list(self.degraded_sources),
            "count_shed_as_errors": self.count_shed_as_errors,
            "alerts": [
                {
                    "name": a.name,
                    "severity": a.severity,
                    "burn_rate": a.burn_rate,
                    "long_window": a.long_window_s,
                    "short_window": a.short_window_s,
                }
                for a in self.alerts
            ],
            "recovery": {"window": self.recovery_window_s, "hold": self.recovery_hold_s},
            "min_tail_samples": self.min_tail_samples,
            "alert_min_events": self.alert_min_events,
            "bootstrap_resamples": self.bootstrap_resamples,
            "confidence": self.confidence,
            "score": {"pass": self.score_pass, "warning": self.score_warn},
            "regression": {
                "alpha": self.regression_alpha,
                "latency": self.regression_latency,
                "error_ratio": self.regression_error_ratio,
            },
            "objectives": [_objective_dict(o) for o in self.objectives],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<spec>") -> SloSpec:
        return _parse(d, source)

    def objective(self, objective_id: str) -> Objective:
        return next(o for o in self.objectives if o.id == objective_id)

    def check_tiers(self, tiers: list[str], whose: str) -> None:
        """Every tier an objective names is one of ``tiers`` (``whose``: the scenario or the
        run they come from): a misspelt tier would leave its objective with no sample and
        the verdict silently without it. ``InputError`` naming the objective otherwise."""
        for i, objective in enumerate(self.objectives):
            for tier in objective.tiers:
                if tier not in tiers:
                    known = ", ".join(tiers) or "none"
                    expected = f"a tier of {whose} ({known})"
                    raise InputError(self.source, f"objectives[{i}].tiers", expected, tier)


def _objective_dict(o: Objective) -> dict[str, Any]:
    d = asdict(o)
    d["phases"], d["tiers"] = list(o.phases), list(o.tiers)
    return {k: v for k, v in d.items() if v not in (None, {}, "") or k == "threshold"}


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(ref: str | Path) -> SloSpec:
    """A built-in spec by name (``default``, ``tiered``) or a YAML file (native or OpenSLO)."""
    path = Path(ref)
    if not path.exists() and str(ref) in builtin_names():
        path = SPECS_DIR / f"{ref}.yaml"
    if not path.is_file():
        expected = f"an SLO spec file or one of {builtin_names()}"
        raise InputError(ref, "slo", expected)
    docs = read_document(path, every=True)
    if not docs:
        raise InputError(path, "document", "a mapping with objectives")
    if any(
        isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("openslo/") for d in docs
    ):
        from .openslo import from_openslo

        return from_openslo(docs, str(path))
    if len(docs) > 1 or not isinstance(docs[0], dict):
        raise InputError(path, "document", "one mapping with objectives")
    return _parse(docs[0], str(path))


# --- parsing --------------------------------------------------------------------------------


def _names(value: Any, file: str, field_name: str, allowed: tuple[str, ...] | None = None):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(file, field_name, "a list of names", value)
    if allowed is not None:
        for v in value:
            if v not in allowed:
                raise InputError(file, field_name, f"names from {list(allowed)}", v)
    return tuple(value)


TOP_FIELDS = {
    "name",
    "description",
    "period",
    "period_days",
    "availability_objective",
    "period_requests",
    "prices",
    "fallback_names",
    "degraded_sources",
    "count_shed_as_errors",
    "alerts",
    "recovery",
    "min_tail_samples",
    "alert_min_events",
    "bootstrap_resamples",
    "confidence",
    "score",
    "regression",
    "phases",
    "objectives",
    "source",
}
OBJECTIVE_FIELDS = {
    "id",
    "sli",
    "threshold",
    "op",
    "warn",
    "percentile",
    "phases",
    "tiers",
    "turns",
    "weight",
    "key",
    "clock",
    "query",
    "metric",
    "agg",
    "labels",
    "latency",
    "description",
}


def _parse(d: Any, file: str) -> SloSpec:
    if not isinstance(d, dict):
        raise InputError(file, "document", "a mapping with objectives")
    check_keys(d, TOP_FIELDS, file, "")
    name = d.get("name") or Path(file).stem
    if not isinstance(name, str):
        raise InputError(file, "name", "a string", name)
    spec = SloSpec(name=name, objectives=[], source=str(d.get("source") or file))
    spec.description = str(d.get("description", ""))
    if "period" in d:
        spec.period_days = parse_duration(d["period"], file, "period") / 86400.0
    if "period_days" in d:
        spec.period_days = number(d["period_days"], file, "period_days")
    if spec.period_days <= 0:
        raise InputError(file, "period", "a period longer than zero")
    if "availability_objective" in d:
        spec.availability_objective = ratio(
            d["availability_objective"], file, "availability_objective"
        )
    if not 0 < spec.availability_objective < 1:
        raise InputError(file, "availability_objective", "a ratio strictly between 0 and 1")
    if d.get("period_requests") is not None:
        spec.period_requests = number(d["period_requests"], file, "period_requests")
    spec.prices = _prices(d.get("prices", {}), file)
    if "fallback_names" in d:
        spec.fallback_names = _names(d["fallback_names"], file, "fallback_names")
    if "degraded_sources" in d:
        spec.degraded_sources = (
            _names(d["degraded_sources"] or [], file, "degraded_sources", DEGRADED_SOURCES)
            if d["degraded_sources"]
            else ()
        )
    if "count_shed_as_errors" in d:
        spec.count_shed_as_errors = _bool(d["count_shed_as_errors"], file, "count_shed_as_errors")
    spec.alerts = _alerts(d.get("alerts", list(DEFAULT_ALERTS)), file)
    _recovery(spec, d.get("recovery", {}), file)
    if "min_tail_samples" in d:
        spec.min_tail_samples = int(number(d["min_tail_samples"], file, "min_tail_samples", 1))
    if "alert_min_events" in d:
        spec.alert_min_events = int(number(d["alert_min_events"], file, "alert_min_events", 1))
    if "bootstrap_resamples" in d:
        spec.bootstrap_resamples = int(
            number(d["bootstrap_resamples"], file, "bootstrap_resamples", 100)
        )
    if "confidence" in d:
        spec.confidence = ratio(d["confidence"], file, "confidence")
        if not 0.5 <= spec.confidence < 1:
            raise InputError(file, "confidence", "a level between 0.5 and 1", d["confidence"])
    _score(spec, d.get("score", {}), file)
    _regression(spec, d.get("regression", {}), file)
    default_phases = ("all",)
    if "phases" in d:
        default_phases = _phases(d["phases"], file, "phases")
    objectives = d.get("objectives")
    if not isinstance(objectives, list) or not objectives:
        raise InputError(file, "objectives", "a non-empty list of objectives")
    seen: set[str] = set()
    for i, item in enumerate(objectives):
        obj = _objective(item, file, f"objectives[{i}]", default_phases)
        if obj.id in seen:
            raise InputError(file, f"objectives[{i}].id", "an id not used by another objective")
        seen.add(obj.id)
        if obj.sli == "cost_per_request" and not spec.prices:
            raise InputError(
                file, "prices", "prices for the providers (cost_per_request needs them)"
            )
        spec.objectives.append(obj)
    return spec


def _bool(value: Any, file: str, field_name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(file, field_name, "true or false", value)
    return value


def _phases(value: Any, file: str, field_name: str) -> tuple[str, ...]:
    names = _names(value, file, field_name)
    for p in names:
        if p not in ("baseline", "fault", "recovery", "all") and not p.startswith("fault:"):
            raise InputError(file, field_name, "baseline, fault, fault:<name>, recovery or all", p)
    return names


def _prices(value: Any, file: str) -> dict[str, dict[str, float]]:
    if not isinstance(value, dict):
        raise InputError(file, "prices", "a mapping of provider to {input, output} per 1M tokens")
    out = {}
    for provider, price in value.items():
        where = f"prices.{provider}"
        if not isinstance(price, dict):
            raise InputError(file, where, "a mapping {input, output} per 1M tokens", price)
        check_keys(price, {"input", "output"}, file, where)
        out[str(provider)] = {
            k: number(price.get(k, 0.0), file, f"{where}.{k}") for k in ("input", "output")
        }
    return out


def _alerts(value: Any, file: str) -> list[AlertRule]:
    if not isinstance(value, list):
        raise InputError(file, "alerts", "a list of burn-rate alerts")
    rules = []
    for i, a in enumerate(value):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise InputError(file, where, "a mapping {name, burn_rate, long_window, short_window}")
        check_keys(a, {"name", "severity", "burn_rate", "long_window", "short_window"}, file, where)
        for k in ("burn_rate", "long_window", "short_window"):
            if k not in a:
                raise InputError(file, f"{where}.{k}", "a value (the field is required)")
        long_s = parse_duration(a["long_window"], file, f"{where}.long_window")
        short_s = parse_duration(a["short_window"], file, f"{where}.short_window")
        if not 0 < short_s <= long_s:
            raise InputError(file, f"{where}.short_window", "a window > 0 and <= long_window")
        burn = number(a["burn_rate"], file, f"{where}.burn_rate")
        name = str(a.get("name") or f"burn-{burn:g}x")
        rules.append(AlertRule(name, str(a.get("severity", "page")), burn, long_s, short_s))
    return rules


def _recovery(spec: SloSpec, value: Any, file: str) -> None:
    if not isinstance(value, dict):
        raise InputError(file, "recovery", "a mapping {window, hold}")
    check_keys(value, {"window", "hold"}, file, "recovery")
    if "window" in value:
        spec.recovery_window_s = parse_duration(value["window"], file, "recovery.window")
        if spec.recovery_window_s <= 0:
            raise InputError(file, "recovery.window", "a window longer than zero")
    if "hold" in value:
        spec.recovery_hold_s = parse_duration(value["hold"], file, "recovery.hold")


def _score(spec: SloSpec, value: Any, file: str) -> None:
    if not isinstance(value, dict):
        raise InputError(file, "score", "a mapping {pass, warning} of percentages")
    check_keys(value, {"pass", "warning"}, file, "score")
    spec.score_pass = number(value.get("pass", spec.score_pass), file, "score.pass")
    spec.score_warn = number(value.get("warning", spec.score_warn), file, "score.warning")
    if not 0 <= spec.score_warn <= spec.score_pass <= 100:
        raise InputError(file, "score", "0 <= warning <= pass <= 100")


def _regression(spec: SloSpec, value: Any, file: str) -> None:
    if not isinstance(value, dict):
        raise InputError(file, "regression", "a mapping {alpha, latency, error_ratio}")
    check_keys(value, {"alpha", "latency", "error_ratio"}, file, "regression")
    if "alpha" in value:
        spec.regression_alpha = ratio(value["alpha"], file, "regression.alpha")
    if "latency" in value:
        spec.regression_latency = ratio(value["latency"], file, "regression.latency")
    if "error_ratio" in value:
        spec.regression_error_ratio = ratio(value["error_ratio"], file, "regression.error_ratio")


def _objective(item: Any, file: str, where: str, default_phases: tuple[str, ...]) -> Objective:
    if not isinstance(item, dict):
        raise InputError(file, where, "a mapping {sli, threshold, ...}", item)
    check_keys(item, OBJECTIVE_FIELDS, file, where)
    name = item.get("sli")
    if not isinstance(name, str) or name not in SLIS:
        raise InputError(file, f"{where}.sli", f"one of {list(SLIS)}", name)
    sli = SLIS[name]
    kw: dict[str, Any] = {"sli": name, **sli.fields(item, file, where)}
    percentile = kw.get("percentile")
    if "threshold" not in item:
        raise InputError(file, f"{where}.threshold", "a value (the field is required)")
    kw["threshold"] = sli.threshold(item["threshold"], file, f"{where}.threshold")
    if item.get("warn") is not None:
        kw["warn"] = sli.threshold(item["warn"], file, f"{where}.warn")
    op = item.get("op", sli.op)
    if op not in OPS:
        raise InputError(file, f"{where}.op", f"one of {list(OPS)}", op)
    kw["op"] = op
    if "warn" in kw:
        looser = (
            kw["warn"] >= kw["threshold"] if op in ("<=", "<") else kw["warn"] <= kw["threshold"]
        )
        if not looser:
            raise InputError(file, f"{where}.warn", f"a threshold looser than threshold for {op}")
    kw["phases"] = _phases(item.get("phases", list(default_phases)), file, f"{where}.phases")
    if "tiers" in item:
        kw["tiers"] = _names(item["tiers"], file, f"{where}.tiers")
    if item.get("turns") is not None:
        if not sli.from_records:
            expected = f"no turns for sli {name} (only SLIs measured from request records)"
            raise InputError(file, f"{where}.turns", expected, item["turns"])
        kw["turns"] = parse_turns(item["turns"], file, f"{where}.turns")
    if "weight" in item:
        kw["weight"] = number(item["weight"], file, f"{where}.weight")
    if "key" in item:
        kw["key"] = _bool(item["key"], file, f"{where}.key")
    kw["description"] = str(item.get("description", ""))
    default_id = name if percentile is None else f"{name}-p{percentile:g}"
    if kw.get("tiers") and len(kw["tiers"]) == 1 and "id" not in item:
        default_id += f"-{kw['tiers'][0]}"
    if kw.get("turns"):
        default_id += f"-turn{kw['turns']}"
    kw["id"] = str(item.get("id") or default_id)
    return Objective(**kw)
