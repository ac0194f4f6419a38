"""Regression over a baseline directory's history: for each key objective per phase (and
tier), the series of its values across the kept runs, oldest to newest, with the run being
checked as the newest point, and the change points in it.

The newest-run comparison (``compare.py``) asks whether tonight differs from last night; this
asks whether the series' mean shifted, against the spread of every kept night, so one noisy
night in the history's normal variation is not a change and a regime that moved is.

- **Detector**: Apache Otava's E-Divisive means with Student's t-test (Fleming et al., "Hunter:
  Using Change Point Detection to Hunt for Performance Regressions", 2023) at
  ``MAX_PVALUE`` = 0.001, Otava's own default: of 1,000 flat 12-night series with 3% noise it
  finds a change in 14 (1 with the 10% ``min_magnitude`` below), and a last night three
  standard deviations off is a change a few times in a hundred. Deterministic: the same
  history gives the same change points.
- **Threshold and direction**: those of the newest-run comparison. A ratio SLI (error rate,
  availability, goodput share...) changes by an absolute amount, judged against the spec's
  ``regression.error_ratio``; every other SLI by a relative one, against
  ``regression.latency`` (also Otava's ``min_magnitude``, so smaller shifts are not change
  points at all). Worse is a rise for an objective held ``<=`` / ``<``, a fall for ``>=`` /
  ``>``.
- **Verdict**: a series regresses when it has a change point at the newest run that makes it
  worse beyond the threshold; a change earlier in the history is shown, not failed on (the
  nights after it were accepted).
- **Minimum**: ``MIN_POINTS`` = 5 points (4 accepted runs and the run checked). A change at
  the newest run is one point against the rest, so power grows with the history: for a +30%
  step on nights with 3% spread, Otava finds it about 1 time in 8 with 4 points, 2 in 5 with 5
  and 19 in 20 with 8 (the default ``--keep`` 10 gives 11). Below 5 it is not worth a verdict;
  the newest-run comparison covers those first nights.
- **Otava** is not a dependency of the package (its metadata pins numpy 2.2 and pulls its CLI's
  cloud clients); ``make setup`` installs it with ``--no-deps``: its analysis needs only numpy
  and scipy. Without it the analysis stops with one line saying how to install it.

Values are read from each kept run's slo.json (``read_result``), never recomputed; a run
without one, or without a value for an objective, is left out of that series with a note.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aichaos.errors import NotCompleted
from aichaos.rundir import SLO_JSON, InputError, read_manifest

from .baseline import runs
from .completion import INCOMPLETE_VERDICTS
from .result import (
    ChangePoint,
    History,
    HistoryPoint,
    HistorySeries,
    ObjectiveRow,
    SloResult,
    read_result,
)
from .spec import SloSpec

if TYPE_CHECKING:
    from otava.analysis import TTestStats

MAX_PVALUE = 0.001
MIN_POINTS = 5


@dataclass(frozen=True)
class _Evaluated:
    """One point's run: its id, when it started (run.json, else when it was evaluated) and
    its evaluation."""

    run_id: str
    started_at: float | None
    result: SloResult


def with_history(result: SloResult, baseline_dir: Path, spec: SloSpec) -> SloResult:
    """``result`` with the change points of ``baseline_dir``'s history, its run the newest
    point, as ``result.history``; too few accepted runs, or a run that did not complete, is a
    note in ``data_notes`` and no history."""
    if result.verdict in INCOMPLETE_VERDICTS:
        result.data_notes.append("baseline history not analysed: the run did not complete")
        return result
    newest = _point(result)
    kept, notes = _kept(Path(baseline_dir), newest.run_id)
    if len(kept) + 1 < MIN_POINTS:
        result.data_notes.append(
            f"{baseline_dir}: {len(kept)} accepted runs; the change points over the history need"
            f" at least {MIN_POINTS - 1}: the history was not analysed"
        )
        return result
    result.history = _analyse(Path(baseline_dir), [*kept, newest], spec, notes)
    return result


def history_of(baseline_dir: Path, spec: SloSpec, run_dir: Path | None = None) -> History:
    """The change points of ``baseline_dir``'s history, the evaluated run in ``run_dir`` as its
    newest point (else the newest accepted run); ``InputError`` (exit 2) when it holds too few
    accepted runs, or ``run_dir`` has no slo.json."""
    baseline_dir = Path(baseline_dir)
    newest = []
    if run_dir is not None:
        result = read_result(Path(run_dir))
        if result is None:
            expected = "an evaluated run (aichaos slo check it first)"
            raise InputError(Path(run_dir) / SLO_JSON, "verdict", expected)
        newest.append(_point(result, run_dir))
    kept, notes = _kept(baseline_dir, newest[0].run_id if newest else None)
    if len(kept) + len(newest) < MIN_POINTS:
        need = MIN_POINTS - len(newest)
        raise InputError(baseline_dir, "runs", f"at least {need} accepted runs", len(kept))
    return _analyse(baseline_dir, [*kept, *newest], spec, notes)


def _point(result: SloResult, run_dir: Path | str | None = None) -> _Evaluated:
    """The point of an evaluated run; ``run_dir`` where it is kept (else where it was
    evaluated)."""
    where = run_dir if run_dir is not None else result.run_dir
    run_id = result.run_id or Path(where or "run").name
    manifest = read_manifest(Path(where)) if where is not None else None
    started = manifest.started_at if manifest is not None else None
    return _Evaluated(run_id, started if started is not None else result.evaluated_at, result)


def _kept(baseline_dir: Path, newest_id: str | None) -> tuple[list[_Evaluated], list[str]]:
    """The accepted runs with an evaluation, oldest first, without the newest run itself (a
    run checked after it was promoted is one point, not two); and a note per run left out."""
    kept, notes = [], []
    for run_dir in runs(baseline_dir):
        result = read_result(run_dir)
        if result is None:
            notes.append(f"{run_dir}: no slo.json; left out of the history")
            continue
        point = _point(result, run_dir)
        if point.run_id != newest_id:
            kept.append(point)
    return kept, notes


def _analyse(
    baseline_dir: Path, points: list[_Evaluated], spec: SloSpec, notes: list[str]
) -> History:
    newest = points[-1]
    key = {o.id for o in spec.objectives if o.key}
    rows = [r for r in newest.result.objectives if r.objective in key]
    if not rows:
        notes.append(f"run {newest.run_id} has no key objective of spec {spec.name}")
    series = [_series(row, points, spec) for row in rows]
    regressed = any(s.verdict == "regression" for s in series)
    return History(
        baseline=str(baseline_dir),
        newest=newest.run_id,
        runs=len(points),
        min_points=MIN_POINTS,
        max_pvalue=MAX_PVALUE,
        verdict="regression" if regressed else "ok",
        series=series,
        notes=notes,
    )


def _series(row: ObjectiveRow, points: list[_Evaluated], spec: SloSpec) -> HistorySeries:
    kind = "absolute" if row.unit == "ratio" else "relative"
    threshold = spec.regression_error_ratio if kind == "absolute" else spec.regression_latency
    found, missing = [], []
    for p in points:
        value = _value(p.result, row.id)
        if value is None:
            missing.append(p.run_id)
        else:
            found.append(HistoryPoint(run_id=p.run_id, started_at=p.started_at, value=value))
    series = HistorySeries(
        id=row.id,
        objective=row.objective,
        sli=row.sli,
        phase=row.phase,
        tier=row.tier,
        unit=row.unit,
        op=row.op,
        threshold=threshold,
        threshold_kind=kind,
        points=found,
        missing=missing,
        verdict="too_few_runs",
    )
    if len(found) < MIN_POINTS:
        return series
    series.change_points = _change_points(series, newest=points[-1].run_id)
    regressed = any(c.regression for c in series.change_points)
    series.verdict = "regression" if regressed else "ok"
    return series


def _value(result: SloResult, row_id: str) -> float | None:
    return next((r.value for r in result.objectives if r.id == row_id), None)


def _change_points(series: HistorySeries, newest: str) -> list[ChangePoint]:
    try:
        from otava.analysis import compute_change_points
    except ModuleNotFoundError:  # not a dependency of the package: `make setup` installs it
        install = "pip install --no-deps apache-otava==0.8.0"
        raise NotCompleted(f"the history's change points need Apache Otava: {install}") from None
    values = [p.value for p in series.points]
    # a ratio's threshold is absolute: Otava's magnitude is relative, so it decides nothing
    min_magnitude = series.threshold if series.threshold_kind == "relative" else 0.0
    with warnings.catch_warnings():
        # a regime without spread (an error rate of 0 every night) makes scipy warn
        warnings.simplefilter("ignore", RuntimeWarning)
        found, _weak = compute_change_points(
            values, max_pvalue=MAX_PVALUE, min_magnitude=min_magnitude
        )
    return [_change_point(series, int(c.index), c.stats, newest) for c in found]


def _change_point(series: HistorySeries, index: int, stats: TTestStats, newest: str) -> ChangePoint:
    before, after = float(stats.mean_1), float(stats.mean_2)
    abs_change = after - before
    rel_change = after / before - 1.0 if before != 0 else None
    higher_is_worse = series.op in ("<=", "<")
    worse = abs_change > 0 if higher_is_worse else abs_change < 0
    if series.threshold_kind == "absolute":
        beyond = abs(abs_change) > series.threshold
    else:  # from 0, any change is beyond a relative threshold
        beyond = abs(rel_change) > series.threshold if rel_change is not None else abs_change != 0
    run_id = series.points[index].run_id
    return ChangePoint(
        index=index,
        run_id=run_id,
        p_value=float(stats.pvalue),
        before=before,
        after=after,
        rel_change=rel_change,
        abs_change=abs_change,
        direction="worse" if worse else "better",
        beyond_threshold=bool(beyond),
        regression=bool(worse and beyond and run_id == newest),
    )
