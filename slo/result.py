"""The evaluation of a run, as ``slo.json`` holds it: one typed result every writer and reader
shares.

``evaluate.evaluate_run`` builds a ``SloResult``, ``evaluate.write_result`` writes it
(``model_dump(mode="json")``, non-finite numbers as null), ``read_result`` parses a run
directory's slo.json back into it, and every renderer and caller reads its attributes. Field
names and their order are the file's keys: a run directory written before this module existed
reads the same, and a result written now is byte for byte what the dict it replaces wrote.

A field the evaluator always writes but an older (or hand-written) slo.json may lack has a
default standing for "not recorded"; a few keys the evaluator writes only when they apply
(``recorded_verdict`` / ``recorded_score``, an objective's ``promql``, the percentiles of an
empty sample, a comparison's ``new`` and ``alpha``, the baseline ``history``) are left out of
the file when absent, as they always were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
)

from aichaos.rundir import SLO_JSON
from aichaos.validation import read_json_model, validate_model

from .completion import Completion

SLO_SCHEMA_VERSION = 1

# an objective row's status; the rows without one of the first three score nothing
Status = Literal["pass", "warn", "fail", "inconclusive", "insufficient_data"]
# the run's verdict: a row status, or how a run that did not complete ended
Verdict = Literal[
    "pass", "warn", "fail", "inconclusive", "insufficient_data", "aborted", "crashed", "incomplete"
]
Op = Literal["<=", "<", ">=", ">"]
PhaseKind = Literal["baseline", "fault", "recovery", "all"]
LatencyLimit = Literal["ttft", "tpot", "e2e"]  # the per-request limits goodput counts by
Interval = tuple[float | None, float | None]  # a side None: the samples cannot bound it


def _absent(value: Any) -> bool:
    return value is None


class _Part(BaseModel):
    # a newer writer's extra keys are ignored, not refused: reports render what they know
    model_config = ConfigDict(extra="ignore")


class SpecRef(_Part):
    """The SLO spec the run was evaluated against."""

    name: str
    source: str = ""
    period_days: float
    availability_objective: float


class FaultRef(_Part):
    """The fault a fault phase is the window of (``events.jsonl``'s fault events)."""

    name: str
    activity: str | None = None
    experiment: str | None = None

    @field_validator("activity", "experiment", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str | None:
        # an event's detail is free-form JSON; the phase names what the experiment said
        return None if value is None else str(value)


class PhaseResult(_Part):
    """One phase of the run (``phases.py``); epoch seconds."""

    name: str
    kind: PhaseKind
    start: float
    end: float
    duration_s: float | None = None
    requests: int = 0  # requests that ended in the phase
    carried_in: int = 0  # of them, sent before it (they straddle its opening boundary)
    fault: FaultRef | None = None


class ObjectiveRow(_Part):
    """One objective in one phase (and tier): the value, its interval and its status."""

    id: str  # objective@phase[/tier]
    objective: str
    sli: str
    phase: str
    tier: str | None = None
    percentile: float | None = None
    op: Op
    threshold: float
    warn: float | None = None
    unit: str
    value: float | None
    ci: Interval | None = None
    samples: int
    status: Status
    weight: float = 1.0
    key: bool = False
    detail: str = ""
    promql: str | None = Field(None, exclude_if=_absent)  # the query a promql row ran


class BudgetPhase(_Part):
    phase: str
    requests: int
    carried_in: int = 0
    bad: int
    error_ratio: float | None
    burn_rate: float | None
    budget_spent: float | None  # share of the period's error budget


class Budget(_Part):
    objective: float
    period_days: float
    period_requests: float
    period_requests_source: Literal["spec", "extrapolated"]
    baseline_rps: float | None = None
    baseline_error_ratio: float | None = None
    by_phase: list[BudgetPhase] = []
    spent_total: float | None = None


class AlertResult(_Part):
    """One multi-window burn-rate alert rule against one fault window (or the whole run)."""

    name: str
    severity: str
    burn_rate: float
    long_window_s: float
    short_window_s: float
    fault: str | None
    fired_at: float | None
    time_to_detect_s: float | None
    seconds_firing: int = 0
    # burning on fewer bad events than alert_min_events: not a detection
    low_traffic_seconds: int = 0


class RecoveryResult(_Part):
    fault: str
    sli: str  # error_rate, ttft-p95, ..., or all (the slowest)
    time_to_recover_s: float | None


class FailoverResult(_Part):
    fault: str
    time_to_failover_s: float | None


class LatencyStats(_Part):
    """Exact percentiles of one sample and its size; an empty sample has only the count."""

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    count: int
    p50: float | None = Field(None, exclude_if=_absent)
    p90: float | None = Field(None, exclude_if=_absent)
    p95: float | None = Field(None, exclude_if=_absent)
    p99: float | None = Field(None, exclude_if=_absent)
    p99_9: float | None = Field(None, alias="p99.9", exclude_if=_absent)
    mean: float | None = Field(None, exclude_if=_absent)

    def by_label(self) -> dict[str, float | int | None]:
        """``{"p50": ..., "p99.9": ..., "count": ...}``: the table's columns by their labels."""
        return {
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "p99.9": self.p99_9,
            "count": self.count,
            "mean": self.mean,
        }


class PhaseLatency(_Part):
    """The latency samples of one phase, in the order slo.json lists them."""

    ttft: LatencyStats | None = Field(None, exclude_if=_absent)
    e2e: LatencyStats | None = Field(None, exclude_if=_absent)
    tpot: LatencyStats | None = Field(None, exclude_if=_absent)
    itl: LatencyStats | None = Field(None, exclude_if=_absent)

    def metrics(self) -> list[tuple[str, LatencyStats]]:
        found = ((name, getattr(self, name)) for name in type(self).model_fields)
        return [(name, stats) for name, stats in found if stats is not None]


class GoodputPhase(_Part):
    rps: float | None
    share: float | None
    requests: int | None = None
    good: int | None = None
    # the goodput objective's latency limits, else the latency objectives' pooled ones
    criteria: dict[LatencyLimit, float] = {}
    # without a goodput objective's limits, each tier is held to its own objectives'
    criteria_by_tier: dict[str, dict[LatencyLimit, float]] = {}


class TierResult(_Part):
    requests: int
    errors: int
    error_ratio: float | None
    ttft: LatencyStats | None = None


class ServerCheck(_Part):
    """A promql objective's row, as the report's server-side table lists it."""

    name: str
    promql: str | None = None
    phase: str
    value: float | None
    status: Status


class LengthDiff(_Part):
    intended: int
    served: int
    difference: int
    relative: float


class PromptLengths(_Part):
    """Intended against server-reported prompt lengths (``lengths.py``)."""

    sources: dict[str, int] = {}  # tokenize | tokenizer | estimate -> requests
    approximate: int = 0
    capped: int = 0
    compared: int = 0
    within_tolerance: int = 0
    share_within: float | None = None
    tolerance: float
    mean_relative: float | None = None
    worst: list[LengthDiff] = []


class Change(_Part):
    """One SLI in one phase against the baseline run (``compare.py``)."""

    sli: str  # ttft-p95, ..., error_ratio
    phase: str
    base: float
    new: float
    rel_change: float | None
    abs_change: float | None = None
    ci: tuple[float, float] | None = None  # bootstrap interval of the difference
    p_value: float | None
    test: Literal["mann-whitney-u", "two-proportion-z"] | None = None
    threshold: float
    threshold_kind: Literal["relative", "absolute"] | None = None
    significant: bool
    regression: bool
    samples: tuple[int, int] | None = None  # baseline, new


class Comparison(_Part):
    baseline: str | None  # None: no accepted baseline yet
    new: str | None = Field(None, exclude_if=_absent)
    verdict: Literal["pass", "fail", "no_baseline"]
    alpha: float | None = Field(None, exclude_if=_absent)
    changes: list[Change] = []


class HistoryPoint(_Part):
    """One run's value of a key objective in a baseline history (``history.py``)."""

    run_id: str
    started_at: float | None = None  # epoch seconds, from the run's run.json
    value: float


class ChangePoint(_Part):
    """Where a series' mean shifted, as Apache Otava's E-Divisive test found it."""

    index: int  # the first point of the new regime, in the series' points
    run_id: str
    p_value: float
    before: float  # mean of the regime before the change
    after: float  # mean of the regime from the change on
    rel_change: float | None  # after / before - 1; None when before is 0
    abs_change: float
    direction: Literal["worse", "better"]
    beyond_threshold: bool  # beyond the spec's regression threshold
    regression: bool  # worse, beyond the threshold and at the newest run


class HistorySeries(_Part):
    """One key objective in one phase (and tier) across the kept runs and the newest one."""

    id: str  # the objective row's id: objective@phase[/tier]
    objective: str
    sli: str
    phase: str
    tier: str | None = None
    unit: str
    op: Op  # the good side: for <= and < a rise is worse, for >= and > a fall
    threshold: float  # the spec's regression threshold
    threshold_kind: Literal["relative", "absolute"]
    points: list[HistoryPoint] = []  # oldest to newest, runs without a value left out
    missing: list[str] = []  # runs with no value for this objective
    change_points: list[ChangePoint] = []
    verdict: Literal["ok", "regression", "too_few_runs"]


class History(_Part):
    """Change points over a baseline directory's kept runs, the newest run last."""

    baseline: str
    newest: str  # the run id of the newest point
    runs: int  # points in the history, the newest included
    min_points: int
    max_pvalue: float
    verdict: Literal["ok", "regression"]
    series: list[HistorySeries] = []
    notes: list[str] = []


class SloResult(_Part):
    """slo.json. ``score`` is None when nothing could be judged or the run did not complete;
    then ``recorded_verdict`` and ``recorded_score`` keep what its recorded objectives said."""

    schema_version: int = SLO_SCHEMA_VERSION
    run_id: str | None = None
    run_dir: str | None = None
    evaluated_at: float | None = None
    spec: SpecRef | None = None
    verdict: Verdict
    score: float | None = None
    key_failed: list[str] = []  # key objectives that failed: they fail the run
    key_undecided: list[str] = []  # key objectives their samples could not decide
    data_notes: list[str] = []
    incomplete: bool = False
    requests: int | None = None
    phases: list[PhaseResult] = []
    objectives: list[ObjectiveRow] = []
    budget: Budget | None = None
    alerts: list[AlertResult] = []
    recovery: list[RecoveryResult] = []
    recovery_window_s: float | None = None
    recovery_hold_s: float | None = None
    failover: list[FailoverResult] = []
    latency: dict[str, PhaseLatency] = {}  # phase -> samples
    goodput: dict[str, GoodputPhase] = {}  # phase -> goodput
    tiers: dict[str, TierResult] = {}  # tier -> figures over the whole run
    prompt_lengths: PromptLengths | None = None
    server: list[ServerCheck] = []
    comparison: Comparison | None = None
    # the change points over the baseline history (``history.py``); absent when not analysed
    history: History | None = Field(None, exclude_if=_absent)
    completion: Completion | None = None  # how a run that did not complete ended
    recorded_verdict: Verdict | None = None
    recorded_score: float | None = None

    @model_serializer(mode="wrap")
    def _recorded_only_when_judged(self, handler: Any) -> dict[str, Any]:
        # the recorded pair exists only once a run that did not complete was judged
        data = handler(self)
        if self.recorded_verdict is None:
            data.pop("recorded_verdict", None)
            data.pop("recorded_score", None)
        return data


def parse_result(data: Any, source: str | Path) -> SloResult:
    """``data`` (slo.json's content) as a ``SloResult``; ``InputError`` naming the field."""
    return validate_model(data, SloResult, source)


def read_result(run_dir: Path) -> SloResult | None:
    """The run's slo.json, or None when the run was not evaluated; ``InputError`` (exit 2) for
    a file that is not JSON or not an evaluation."""
    return read_json_model(Path(run_dir) / SLO_JSON, SloResult)
