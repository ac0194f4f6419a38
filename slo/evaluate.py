"""Evaluate a run directory against an SLO spec: the ``slo.json`` result (``result.py``).

The records are read once into sorted numpy columns (``records.py``), in each order that
places them in phases (a request by when it ended, a TTFT sample by when its first token
came), so every phase is a slice and every objective a vectorised expression over it.
Objectives give one row per (objective × phase × tier); rows score Keptn-style (weight on
pass, half on warn, none on fail, rows without enough data left out) and a failed key
objective fails the run. A run that did not complete is judged by how it ended
(``completion.py``), never as a pass.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from aichaos import exits
from aichaos.rundir import (
    REQUESTS_DIR,
    SLO_JSON,
    InputError,
    RunManifest,
    read_events,
    read_manifest,
    write_json,
)

from . import budget as bm
from . import server, stats
from .completion import INCOMPLETE_VERDICTS, completion
from .lengths import prompt_lengths
from .phases import Phase, build_phases, select
from .records import Records, Views, load
from .result import (
    SLO_SCHEMA_VERSION,
    AlertResult,
    Budget,
    BudgetPhase,
    FailoverResult,
    GoodputPhase,
    LatencyStats,
    ObjectiveRow,
    PhaseLatency,
    PhaseResult,
    RecoveryResult,
    ServerCheck,
    SloResult,
    SpecRef,
    Status,
    TierResult,
    Verdict,
)
from .slis import SLIS
from .spec import LATENCY_SLIS, Objective, SloSpec, on_good_side, turn_range

CREDIT = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
UNDECIDED = ("inconclusive", "insufficient_data")  # row statuses that score nothing
UNIT_SCALE = {"s": (1000.0, "ms"), "ratio": (100.0, "%")}


def write_result(run_dir: Path, result: SloResult) -> Path:
    """Write slo.json; a non-finite number (never expected) is written as null, since
    ``NaN`` is not JSON and would break every reader."""
    path = Path(run_dir) / SLO_JSON
    write_json(path, _finite(result.model_dump(mode="json")))
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def exit_code(result: SloResult) -> int:
    """0 when the SLOs held (pass or warn); 1 when one failed, when nothing could be judged
    (``insufficient_data``: the run does not show the SLOs were met) or on a regression; 3
    when the run did not complete, whatever its recorded objectives say; 4 when a key
    objective was neither shown to hold nor to fail (``inconclusive``: more traffic needed)."""
    if result.verdict in INCOMPLETE_VERDICTS:
        return exits.NOT_COMPLETED
    if result.comparison is not None and result.comparison.verdict == "fail":
        return exits.SLO_FAILED
    if result.history is not None and result.history.verdict == "regression":
        return exits.SLO_FAILED  # a change point at the newest run, worse beyond the threshold
    if result.verdict == "inconclusive":
        return exits.INCONCLUSIVE
    return exits.OK if result.verdict in ("pass", "warn") else exits.SLO_FAILED


class Run:
    """One run directory loaded for evaluation."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise InputError(self.dir, "run directory", "an existing run directory")
        self.notes: list[str] = []
        self.manifest: RunManifest | None
        try:
            self.manifest = read_manifest(self.dir)
        except InputError:
            self.manifest = None
            self.notes.append("run.json: unreadable; run span taken from events and records")
        if self.manifest is None:
            self.notes.append("run.json: missing or empty")
        events, notes = read_events(self.dir)
        self.events = events
        self.notes += notes
        self.records, notes = load(self.dir)
        self.notes += notes
        r = self.records
        first = float(r.t_sent[0]) if r.n else None
        last = float(r.t_sent[-1]) if r.n else None
        self.phases, notes = build_phases(self.manifest, events, first, last)
        self.notes += notes
        self.views = Views(self.records, end=max(p.end for p in self.phases))
        self.records = self.views.sent  # the ITL gaps live in views.ended only
        for p in self.phases:
            p.requests = self.rows(p).stop - self.rows(p).start
            p.carried_in = self.views.carried_in(p.start, p.end, p.kind == "all")
        if r.n > 1:
            # a lost last chunk leaves no gap in the numbering: the records just stop early
            end = max(p.end for p in self.phases)
            silent = end - float(r.t_sent[-1])
            spacing = (float(r.t_sent[-1]) - float(r.t_sent[0])) / (r.n - 1)
            if silent > max(10.0, 50.0 * spacing):
                self.notes.append(
                    f"{REQUESTS_DIR}: no request records in the last "
                    f"{silent:.0f} s of the run (a lost chunk?)"
                )
        status = self.manifest.recorded_status if self.manifest is not None else None
        self.incomplete = status not in ("completed", None) or any(
            any(w in n for w in ("unreadable", "missing", "never ended", "no request records"))
            for n in self.notes
        )
        if status not in ("completed", None):
            self.notes.append(f"run.json: status is {status!r}")

    def tiers(self) -> list[str]:
        """The tiers of the run's scenario (run.json) and of its records."""
        scenario = self.manifest.scenario if self.manifest is not None else None
        declared = scenario.get("tiers") if scenario is not None else None
        names = [t["name"] for t in declared or [] if isinstance(t, dict) and "name" in t]
        return list(dict.fromkeys([*names, *self.records.tier.names]))

    def rows(self, phase: Phase, sli: str | None = None) -> slice:
        """The rows of ``phase`` in the order ``sli``'s samples are placed by (requests by
        when they ended when no SLI is named)."""
        return self.views.rows(sli or "requests", phase.start, phase.end, phase.kind == "all")

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


class Evaluator:
    def __init__(self, run: Run, spec: SloSpec, prometheus_url: str | None):
        # requests, errors and every ratio SLI by when the request ended (run.views.ended)
        self.run, self.spec, self.r = run, spec, run.views.ended
        self.prometheus_url = prometheus_url
        self.metrics: server.MetricsFile | None = None
        r = self.r
        self.bad = ~r.ok
        if not spec.count_shed_as_errors:
            self.bad &= ~self.shed_mask()
        self.fallback_ok = r.ok & r.served_by.mask(*spec.fallback_names)
        sent = run.views.sent
        self.fallback_sent = sent.ok & sent.served_by.mask(*spec.fallback_names)
        self.run_start = min(p.start for p in run.phases)
        self.run_end = max(p.end for p in run.phases)
        base = run.phase("baseline")
        use = base if base is not None and run.rows(base).stop > run.rows(base).start else None
        self.rate_phase = use or run.phase("all")
        rows = run.rows(self.rate_phase)
        n = rows.stop - rows.start
        self.base_rate = n / self.rate_phase.duration if self.rate_phase.duration > 0 else 0.0
        self.base_ratio = float(self.bad[rows].mean()) if n else 0.0
        self._values: dict[tuple, np.ndarray] = {}
        self._wanted: dict[tuple, set[float]] = {}
        self._summaries: dict[tuple, tuple[dict[str, Any], dict[float, stats.Estimate]]] = {}
        gaps = np.diff(r.itl_offsets)
        self.failed_have_itl = bool(gaps[~r.ok].sum() > 0) if r.n else False
        self.itl_has_nan = bool(np.isnan(r.itl_values).any())
        self._alerts: list[AlertResult] | None = None
        self._recovery: dict[str, dict[str, float | None]] | None = None

    # --- masks ----------------------------------------------------------------------------

    def shed_mask(self) -> np.ndarray:
        r = self.r
        return (r.http_status == 429) | r.error_kind.mask("http_429")

    def scope_mask(self, rows: slice, tier: str | None, turns: str = "",
                   view: Records | None = None) -> np.ndarray:  # fmt: skip
        """The requests in ``rows`` of ``view`` (by default the requests' order) that are of
        ``tier`` (None: any) and of a conversation's ``turns`` (``""``: any request)."""
        r = view or self.r
        if tier is None:
            mask = np.ones(rows.stop - rows.start, dtype=bool)
        else:
            mask = r.tier.mask(tier)[rows]
        if turns:
            first, last = turn_range(turns)
            turn = r.turn[rows]
            mask &= (turn >= first) & (turn <= last)
        return mask

    def latency_values(
        self, sli: str, rows: slice, tier: str | None = None, clock: str = "sent", turns: str = "",
        cache: bool = True,
    ) -> np.ndarray:  # fmt: skip
        """The SLI's samples from answered requests in ``rows`` (of ``tier`` and ``turns``) of
        the order the SLI is placed by (``Run.rows(phase, sli)``), NaN dropped; cached, since
        objectives, the latency table and the tiers ask for the same ones."""
        key = (sli, rows.start, rows.stop, tier, clock, turns)
        if cache and key in self._values:
            return self._values[key]
        r = self.run.views.of(sli)
        plain = tier is None and not turns
        ok = r.ok[rows] if plain else r.ok[rows] & self.scope_mask(rows, tier, turns, r)
        if sli == "itl":
            # failed requests usually carry no gaps: then the slice needs no mask at all
            plain = plain and not self.failed_have_itl
            values = r.itl(rows) if plain else r.itl(rows, ok)
            if self.itl_has_nan:
                values = values[~np.isnan(values)]
        else:
            values = {"ttft": r.ttft, "e2e": r.e2e, "tpot": r.tpot}[sli][rows]
            if clock == "scheduled" and sli in ("ttft", "e2e"):
                values = values + (r.t_sent[rows] - r.t_scheduled[rows])
            values = values[ok]
            values = values[~np.isnan(values)]
        if cache:
            self._values[key] = values
        return values

    def good_mask(self, rows: slice, limits: dict[str, float] | None = None) -> np.ndarray:
        """Answered requests within every latency limit: ``limits`` when given, else the
        limits of the spec's latency objectives that apply to each request's tier."""
        r = self.r
        if limits is not None:
            return r.ok[rows] & self._within(rows, limits)
        good = np.zeros(rows.stop - rows.start, dtype=bool)
        codes = r.tier.codes[rows]
        for code in np.unique(codes):
            tier = r.tier.names[code] if code >= 0 else None
            mine = codes == code
            good[mine] = (r.ok[rows] & self._within(rows, self.goodput_limits(tier)))[mine]
        return good

    def _within(self, rows: slice, limits: dict[str, float]) -> np.ndarray:
        r = self.r
        good = np.ones(rows.stop - rows.start, dtype=bool)
        for sli, limit in limits.items():
            values = {"ttft": r.ttft, "e2e": r.e2e, "tpot": r.tpot}[sli][rows]
            # a one-token answer has no TPOT: it does not miss a TPOT limit
            good &= (values <= limit) | (np.isnan(values) & (sli == "tpot"))
        return good

    def goodput_limits(self, tier: str | None) -> dict[str, float]:
        limits: dict[str, float] = {}
        for o in self.spec.objectives:
            # an objective on some turns only holds those turns' requests, not every request
            applies = (not o.tiers or tier in o.tiers) and not o.turns
            if o.sli in ("ttft", "tpot", "e2e") and applies and o.op in ("<=", "<"):
                limits[o.sli] = min(limits.get(o.sli, math.inf), o.threshold)
        return limits

    # --- objectives -----------------------------------------------------------------------

    def objective_rows(self, obj: Objective) -> list[ObjectiveRow]:
        return SLIS[obj.sli].rows(self, obj)

    def fault_scope(self, obj: Objective) -> list[Phase]:
        faults = [p for p in self.run.phases if p.kind == "fault"]
        named = [s for s in obj.phases if s.startswith("fault:")]
        return [p for p in faults if p.name in named] if named else faults

    def want(self, key: tuple, percentile: float) -> None:
        """Note that ``summary(key)`` will be asked for ``percentile``'s interval."""
        self._wanted.setdefault(key, set()).add(percentile)

    def metric_row(self, obj: Objective, phase: Phase, tier: str | None) -> ObjectiveRow:
        if self.metrics is None:
            self.metrics = server.MetricsFile(self.run.dir)
            if self.metrics.note:
                self.run.notes.append(self.metrics.note)
        values = self.metrics.values(obj.metric or "", obj.labels, phase.start, phase.end)
        value = server.aggregate(values, obj.agg)
        why = None if value is not None else f"no {obj.metric} samples in metrics.parquet"
        return self.row(obj, phase.name, tier, value, None, int(values.size), why)

    def wilson(self, k: int, n: int) -> tuple[float, float] | None:
        return _wilson(k, n, self.spec.confidence)

    def degraded(self, rows: slice) -> np.ndarray:
        r, sources = self.r, self.spec.degraded_sources
        out = np.zeros(rows.stop - rows.start, dtype=bool)
        if "fallback" in sources:
            out |= r.served_by.mask(*self.spec.fallback_names)[rows]
        if "cache" in sources:
            out |= r.cached[rows] | r.served_by.mask("cache")[rows]
        if "flag" in sources:
            out |= r.degraded[rows]
        return out

    def costs(self, rows: slice) -> np.ndarray:
        """Each request's price: prompt and output tokens at its provider's price per 1M
        tokens (``served_by``; ``default`` for a provider the spec does not price)."""
        r, prices = self.r, self.spec.prices
        default = prices.get("default", {"input": 0.0, "output": 0.0})
        codes = r.served_by.codes[rows]
        table_in = np.array(
            [prices.get(n, default)["input"] for n in r.served_by.names] + [default["input"]]
        )
        table_out = np.array(
            [prices.get(n, default)["output"] for n in r.served_by.names] + [default["output"]]
        )
        # code -1 (no provider) indexes the last entry, the default price
        return (
            r.prompt_tokens[rows] * table_in[codes] + r.output_tokens[rows] * table_out[codes]
        ) / 1e6

    def promql_row(self, obj: Objective, phase: Phase, tier: str | None) -> ObjectiveRow:
        if not self.prometheus_url:
            return self.row(obj, phase.name, tier, None, None, 0, "no Prometheus URL given")
        query = server.render_query(obj.query or "", phase.start, phase.end, tier)
        value, note = server.query_value(self.prometheus_url, query, phase.end)
        if note:
            self.run.notes.append(f"{obj.id}@{phase.name}: {note}")
        row = self.row(
            obj, phase.name, tier, value, None, 1 if value is not None else 0, note or None
        )
        row.promql = query
        return row

    def failover_time(self, fault: Phase) -> float | None:
        sent = self.run.views.sent
        return bm.time_to_failover(
            sent.t_sent, sent.ttft, self.fallback_sent, fault.start, fault.end
        )

    def detect_time(self, fault: Phase) -> float | None:
        hits = [
            a.time_to_detect_s
            for a in self.alerts()
            if a.fault == fault.name and a.time_to_detect_s is not None
        ]
        return min(hits) if hits else None

    def recover_time(self, fault: Phase) -> float | None:
        return self.recovery().get(fault.name, {}).get("all")

    def row(
        self,
        obj: Objective,
        phase: str,
        tier: str | None,
        value: float | None,
        ci: tuple[float | None, float | None] | None,
        samples: int,
        why: str | None,
    ) -> ObjectiveRow:
        status: Status = "insufficient_data" if why or value is None else _status(obj, value, ci)
        rid = f"{obj.id}@{phase}" + (f"/{tier}" if tier else "")
        return ObjectiveRow(
            id=rid,
            objective=obj.id,
            sli=obj.sli,
            phase=phase,
            tier=tier,
            percentile=obj.percentile,
            op=obj.op,
            threshold=obj.threshold,
            warn=obj.warn,
            unit=obj.unit,
            value=value,
            ci=ci or None,
            samples=samples,
            status=status,
            weight=obj.weight,
            key=obj.key,
            detail=why or _detail(obj, value, ci, samples, status, self.spec.confidence),
        )

    def plan(self) -> None:
        """Note every percentile with an interval the objectives will ask of each sample, so
        ``summary`` serves them all from one partial sort per sample."""
        for obj in self.spec.objectives:
            if obj.sli not in LATENCY_SLIS:
                continue
            for scope in obj.phases:
                for phase in select(self.run.phases, scope):
                    rows = self.run.rows(phase, obj.sli)
                    for tier in obj.tiers or (None,):
                        key = (obj.sli, rows.start, rows.stop, tier, obj.clock, obj.turns)
                        self.want(key, obj.percentile or 50.0)

    def summary(self, key: tuple) -> tuple[dict[str, Any], dict[float, stats.Estimate]]:
        """Percentile table and interval estimates of one sample (sli, rows, tier, clock,
        turns)."""
        wanted = self._wanted.get(key, set())
        done = self._summaries.get(key)
        if done is not None and wanted <= set(done[1]):
            return done
        sli, start, stop, tier, clock, turns = key
        values = self.latency_values(sli, slice(start, stop), tier, clock, turns, cache=False)
        done = stats.summarize(
            values, stats.PERCENTILES, tuple(sorted(wanted)), confidence=self.spec.confidence
        )
        self._summaries[key] = done
        return done

    # --- budget, alerts, recovery ---------------------------------------------------------

    def period_requests(self) -> tuple[float, str]:
        if self.spec.period_requests is not None:
            return self.spec.period_requests, "spec"
        return self.base_rate * self.spec.period_days * 86400.0, "extrapolated"

    def budget(self) -> Budget:
        objective = self.spec.availability_objective
        period_requests, source = self.period_requests()
        rows = []
        for p in self.run.phases:
            s = self.run.rows(p)
            n, k = s.stop - s.start, int(self.bad[s].sum())
            ratio = k / n if n else None
            rows.append(
                BudgetPhase(
                    phase=p.name,
                    requests=n,
                    carried_in=p.carried_in,  # sent before the phase, ended in it
                    bad=k,
                    error_ratio=ratio,
                    burn_rate=bm.burn_rate(ratio, objective) if ratio is not None else None,
                    budget_spent=bm.budget_spent(k, objective, period_requests)
                    if period_requests > 0
                    else None,
                )
            )
        total = next(r for r in rows if r.phase == "all")
        return Budget(
            objective=objective,
            period_days=self.spec.period_days,
            period_requests=period_requests,
            period_requests_source=source,
            baseline_rps=self.base_rate,
            baseline_error_ratio=self.base_ratio,
            by_phase=rows,
            spent_total=total.budget_spent,
        )

    def alerts(self) -> list[AlertResult]:
        if self._alerts is not None:
            return self._alerts
        seconds = max(1, math.ceil(self.run_end - self.run_start))
        total, bad = bm.per_second(self.r.t_at, self.bad, self.run_start, seconds)
        faults = [p for p in self.run.phases if p.kind == "fault"]
        out = []
        for rule in self.spec.alerts:
            holds, low = bm.alert_holds(
                rule, total, bad, self.spec.availability_objective, self.base_rate,
                self.base_ratio, self.spec.alert_min_events,
            )  # fmt: skip
            for p in faults or [None]:
                after = p.start if p else self.run_start
                fired = bm.first_firing(holds, self.run_start, after)
                out.append(
                    AlertResult(
                        name=rule.name,
                        severity=rule.severity,
                        burn_rate=rule.burn_rate,
                        long_window_s=rule.long_window_s,
                        short_window_s=rule.short_window_s,
                        fault=p.name if p else None,
                        fired_at=fired,
                        time_to_detect_s=(fired - p.start) if fired is not None and p else None,
                        seconds_firing=int(holds.sum()),
                        # burning on fewer bad events than alert_min_events: not a detection
                        low_traffic_seconds=int(low.sum()),
                    )
                )
        self._alerts = out
        return out

    def recovery_slis(self) -> list[tuple[str, float, float | None]]:
        """(sli, threshold, percentile) tracked after each fault: the error ratio against the
        pooled error_rate objective (else the availability objective's budget), and every
        pooled ttft / tpot / e2e percentile objective."""
        out: list[tuple[str, float, float | None]] = []
        pooled = [o for o in self.spec.objectives if not o.tiers and not o.turns]
        error = [o for o in pooled if o.sli == "error_rate"]
        out.append(
            (
                "error_rate",
                error[0].threshold if error else 1.0 - self.spec.availability_objective,
                None,
            )
        )
        for o in pooled:
            if o.sli in ("ttft", "tpot", "e2e") and o.op in ("<=", "<"):
                out.append((o.sli, o.threshold, o.percentile))
        return out

    def recovery(self) -> dict[str, dict[str, float | None]]:
        if self._recovery is not None:
            return self._recovery
        spec = self.spec
        c_bad = np.concatenate([[0], np.cumsum(self.bad)])
        result: dict[str, dict[str, float | None]] = {}
        for p in (p for p in self.run.phases if p.kind == "fault"):
            per: dict[str, float | None] = {}
            for sli, threshold, pct in self.recovery_slis():

                def within(a: float, b: float, sli=sli, threshold=threshold, pct=pct):
                    at = self.run.views.of(sli).t_at
                    i0, i1 = np.searchsorted(at, [a, b], side="right")
                    if i1 <= i0:
                        return None
                    if sli == "error_rate":
                        return (c_bad[i1] - c_bad[i0]) / (i1 - i0) <= threshold
                    v = self.latency_values(sli, slice(i0, i1), cache=False)
                    return bool(v.size) and float(np.percentile(v, pct)) <= threshold

                key = sli if pct is None else f"{sli}-p{pct:g}"
                per[key] = bm.time_to_recover(
                    p.end, self.run_end, spec.recovery_window_s, spec.recovery_hold_s, within
                )
            values = list(per.values())
            per["all"] = None if any(v is None for v in values) else max(values, default=0.0)
            result[p.name] = per
        self._recovery = result
        return result

    # --- summaries ------------------------------------------------------------------------

    def latency(self) -> dict[str, PhaseLatency]:
        out = {}
        for p in self.run.phases:
            samples = {}
            for s in ("ttft", "e2e", "tpot", "itl"):
                rows = self.run.rows(p, s)
                table = self.summary((s, rows.start, rows.stop, None, "sent", ""))[0]
                samples[s] = LatencyStats.model_validate(table)
            out[p.name] = PhaseLatency.model_validate(samples)
        return out

    def goodput(self) -> dict[str, GoodputPhase]:
        custom = [o.latency for o in self.spec.objectives if o.sli == "goodput" and o.latency]
        limits = custom[0] if custom else None
        criteria = limits or self.goodput_limits(None)
        by_tier = {} if limits else {t: self.goodput_limits(t) for t in self.r.tier.names}
        out = {}
        for p in self.run.phases:
            rows = self.run.rows(p)
            n = rows.stop - rows.start
            good = int(self.good_mask(rows, limits).sum())
            out[p.name] = GoodputPhase(
                rps=good / p.duration if p.duration > 0 else None,
                share=good / n if n else None,
                requests=n,
                good=good,
                criteria=criteria,
                criteria_by_tier=by_tier,
            )
        return out

    def tiers(self) -> dict[str, TierResult]:
        p = self.run.phase("all")
        rows = self.run.rows(p)
        out = {}
        first = self.run.rows(p, "ttft")
        for tier in self.r.tier.names:
            mask = self.scope_mask(rows, tier)
            n, k = int(mask.sum()), int((self.bad[rows] & mask).sum())
            ttft = self.summary(("ttft", first.start, first.stop, tier, "sent", ""))[0]
            out[tier] = TierResult(
                requests=n,
                errors=k,
                error_ratio=k / n if n else None,
                ttft=LatencyStats.model_validate(ttft),
            )
        return out

    def failover(self) -> list[FailoverResult]:
        out = []
        for p in (p for p in self.run.phases if p.kind == "fault"):
            out.append(FailoverResult(fault=p.name, time_to_failover_s=self.failover_time(p)))
        return out


def evaluate_run(
    run_dir: Path,
    spec: SloSpec,
    *,
    prometheus_url: str | None = None,
) -> SloResult:
    """The slo.json result for a run directory (nothing is written; ``compare.with_baseline``
    adds the comparison); ``InputError`` when the spec names a tier the run does not have."""
    run = Run(Path(run_dir))
    if run.tiers():  # a run that knows no tier (no records, no scenario) cannot be checked
        spec.check_tiers(run.tiers(), f"run {run.dir.name}")
    ev = Evaluator(run, spec, prometheus_url)
    ev.plan()
    rows = [row for obj in spec.objectives for row in ev.objective_rows(obj)]
    verdict, score, key_failed = _verdict(rows, spec)
    recovery = [
        RecoveryResult(fault=fault, sli=sli, time_to_recover_s=value)
        for fault, per in ev.recovery().items()
        for sli, value in per.items()
    ]
    result = SloResult(
        schema_version=SLO_SCHEMA_VERSION,
        run_id=(run.manifest.id if run.manifest is not None else None) or run.dir.name,
        run_dir=str(run.dir),
        evaluated_at=time.time(),
        spec=SpecRef(
            name=spec.name,
            source=spec.source,
            period_days=spec.period_days,
            availability_objective=spec.availability_objective,
        ),
        verdict=verdict,
        score=score,
        key_failed=key_failed,
        key_undecided=key_undecided(rows),
        data_notes=run.notes,
        incomplete=run.incomplete,
        requests=run.records.n,
        phases=[PhaseResult.model_validate(p.to_dict()) for p in run.phases],
        objectives=rows,
        budget=ev.budget(),
        alerts=ev.alerts(),
        recovery=recovery,
        recovery_window_s=spec.recovery_window_s,
        recovery_hold_s=spec.recovery_hold_s,
        failover=ev.failover(),
        latency=ev.latency(),
        goodput=ev.goodput(),
        tiers=ev.tiers(),
        prompt_lengths=prompt_lengths(run.records),
        server=[
            ServerCheck(
                name=r.objective, promql=r.promql, phase=r.phase, value=r.value, status=r.status
            )
            for r in rows
            if r.sli == "promql"
        ],
        comparison=None,
    )
    return judge_completion(result, run.manifest, run.events)


def judge_completion(
    result: SloResult, manifest: RunManifest | None, events: list[dict[str, Any]]
) -> SloResult:
    """``result`` with the verdict of how the run ended when it did not complete: the score
    of what was recorded is kept as ``recorded_score``, never as the run's score. The harness
    calls it again when the run is stopped after its evaluation."""
    phases = [p.model_dump(mode="json") for p in result.phases]
    done = completion(manifest, phases, events)
    result.completion = done
    if done is None:
        return result
    if result.verdict not in INCOMPLETE_VERDICTS:
        result.recorded_verdict, result.recorded_score = result.verdict, result.score
    result.verdict, result.score, result.incomplete = done.verdict, None, True
    return result


def _verdict(rows: list[ObjectiveRow], spec: SloSpec) -> tuple[Verdict, float | None, list[str]]:
    """The run's verdict and score from its rows. A failed key objective fails the run; a key
    objective its samples could not decide (inconclusive, or nothing to measure) makes it
    ``inconclusive`` — never a pass on what was not shown; else the score decides."""
    judged = [r for r in rows if r.status in CREDIT]
    key_failed = sorted({r.objective for r in judged if r.key and r.status == "fail"})
    weight = sum(r.weight for r in judged)
    score = None
    if judged and weight > 0:
        score = 100.0 * sum(r.weight * CREDIT[r.status] for r in judged) / weight
    if key_failed:
        return "fail", score, key_failed
    if score is None:
        return "insufficient_data", None, key_failed
    if key_undecided(rows):
        return "inconclusive", score, key_failed
    if score >= spec.score_pass:
        return "pass", score, key_failed
    return ("warn" if score >= spec.score_warn else "fail"), score, key_failed


def key_undecided(rows: list[ObjectiveRow]) -> list[str]:
    """Key objectives with a row their samples could not decide."""
    return sorted({r.objective for r in rows if r.key and r.status in UNDECIDED})


def _point_status(obj: Objective, value: float) -> Status:
    if on_good_side(value, obj.op, obj.threshold):
        return "pass"
    if obj.warn is not None and on_good_side(value, obj.op, obj.warn):
        return "warn"
    return "fail"


def _status(obj: Objective, value: float, ci: tuple | list | None) -> Status:
    """From the confidence interval where the SLI has one: ``pass`` when all of it meets the
    threshold, ``fail`` when none of it meets even the warn threshold, ``warn`` when all of it
    meets the warn threshold but not all the threshold, ``inconclusive`` otherwise (it
    straddles the line between failing and not). A side the sample cannot bound reaches to
    infinity. Without an interval (costs, server metrics, times), from the value."""
    if ci is None:
        return _point_status(obj, value)
    low = -math.inf if ci[0] is None else ci[0]
    high = math.inf if ci[1] is None else ci[1]
    best, worst = (low, high) if obj.op in ("<=", "<") else (high, low)
    if _point_status(obj, best) == "fail":
        return "fail"
    at_worst = _point_status(obj, worst)
    return "inconclusive" if at_worst == "fail" else at_worst


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s" and abs(value) >= 1.0:
        return f"{value:.3g} s"  # 2 s, not 2,000 ms
    scale, label = UNIT_SCALE.get(unit, (1.0, unit))
    v = value * scale
    return f"{v:.3g} {label}".strip() if abs(v) < 1000 else f"{v:,.0f} {label}".strip()


def _detail(obj: Objective, value, ci, samples: int, status: str, confidence: float) -> str:
    name = f"p{obj.percentile:g}" if obj.percentile is not None else obj.sli.replace("_", " ")
    op = {"pass": obj.op, "inconclusive": f"vs {obj.op}"}.get(status, f"not {obj.op}")
    text = f"{name} {_fmt(value, obj.unit)} {op} {_fmt(obj.threshold, obj.unit)}"
    if ci:
        pct = f"{100 * confidence:g}"
        low, high = (_fmt(v, obj.unit) if v is not None else "unbounded" for v in ci)
        text += f" ({pct}% CI {low} to {high}, n={samples})"
    elif samples:
        text += f" (n={samples})"
    if status == "inconclusive":
        text += ": inconclusive, the interval straddles the threshold"
        if obj.percentile is not None and ci and ci[1] is None:
            need = math.ceil(math.log((1 - confidence) / 2) / math.log(obj.percentile / 100))
            text += f"; bounding p{obj.percentile:g} from above takes >= {need} samples"
    return text


def _wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion."""
    if n == 0:
        return None
    z = float(NormalDist().inv_cdf(0.5 + confidence / 2.0))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
