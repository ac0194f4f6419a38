"""Regression between two runs, beyond noise.

Per SLI and phase (phases both runs have: baseline, each common fault window, recovery, all):

- latency percentiles (p50/p95/p99 of TTFT, p95 of TPOT, ITL and E2E, plus every percentile the
  spec's objectives name): relative change, one-sided Mann-Whitney U p-value (is the new
  distribution slower?) and a bootstrap interval of the percentile difference. A regression
  is a change beyond the threshold (spec ``regression.latency``, default +10%) that is
  significant: p < alpha AND the interval's lower end above zero.
- error ratio: absolute change, one-sided pooled two-proportion z test; a regression is an
  increase beyond ``regression.error_ratio`` (default +0.5 percentage points) with p < alpha.

ITL gaps are pooled over requests and not independent; they are subsampled to at most
200 000 per side (fixed seed) so the test does not claim more evidence than it has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aichaos.rundir import InputError

from . import stats
from .baseline import latest
from .evaluate import Evaluator, Run
from .result import Change, Comparison, SloResult
from .spec import SloSpec, load_spec

DEFAULT_LATENCY = (
    ("ttft", 50.0),
    ("ttft", 95.0),
    ("ttft", 99.0),
    ("tpot", 95.0),
    ("itl", 95.0),
    ("e2e", 95.0),
)
MAX_SAMPLES = 200_000


def _latency_targets(spec: SloSpec) -> list[tuple[str, float]]:
    targets = list(DEFAULT_LATENCY)
    for o in spec.objectives:
        if o.percentile is not None and (o.sli, o.percentile) not in targets:
            targets.append((o.sli, o.percentile))
    return targets


def _subsample(values: np.ndarray, seed: int) -> np.ndarray:
    if values.size <= MAX_SAMPLES:
        return values
    rng = np.random.default_rng(seed)
    return values[rng.choice(values.size, MAX_SAMPLES, replace=False)]


def compare_runs(base_dir: Path, new_dir: Path, spec: SloSpec | None = None) -> Comparison:
    spec = spec or load_spec("default")
    base_run, new_run = Run(Path(base_dir)), Run(Path(new_dir))
    base, new = Evaluator(base_run, spec, None), Evaluator(new_run, spec, None)
    names = [p.name for p in new_run.phases if base_run.phase(p.name) is not None]
    changes: list[Change] = []
    alpha = spec.regression_alpha
    for name in names:
        b_phase, n_phase = base_run.phase(name), new_run.phase(name)
        b_rows, n_rows = base_run.rows(b_phase), new_run.rows(n_phase)
        for sli, pct in _latency_targets(spec):
            b_vals = base.latency_values(sli, base_run.rows(b_phase, sli))
            n_vals = new.latency_values(sli, new_run.rows(n_phase, sli))
            if sli == "itl":
                b_vals, n_vals = _subsample(b_vals, 1), _subsample(n_vals, 2)
            need = stats.required_samples(pct, spec.min_tail_samples)
            if b_vals.size < need or n_vals.size < need:
                continue
            diff, ci = stats.percentile_difference(
                b_vals, n_vals, pct, resamples=spec.bootstrap_resamples, confidence=spec.confidence
            )
            b_p = float(np.percentile(b_vals, pct))
            n_p = b_p + diff
            rel = diff / b_p if b_p > 0 else None
            p_value = stats.mann_whitney_greater(n_vals, b_vals)
            significant = bool(p_value < alpha and ci[0] > 0)
            regression = bool(significant and rel is not None and rel > spec.regression_latency)
            changes.append(
                Change(
                    sli=f"{sli}-p{pct:g}",
                    phase=name,
                    base=b_p,
                    new=n_p,
                    rel_change=rel,
                    abs_change=diff,
                    ci=ci,
                    p_value=p_value,
                    test="mann-whitney-u",
                    threshold=spec.regression_latency,
                    threshold_kind="relative",
                    significant=significant,
                    regression=regression,
                    samples=(int(b_vals.size), int(n_vals.size)),
                )
            )
        b_n, n_n = b_rows.stop - b_rows.start, n_rows.stop - n_rows.start
        if b_n and n_n:
            b_k, n_k = int(base.bad[b_rows].sum()), int(new.bad[n_rows].sum())
            b_ratio, n_ratio = b_k / b_n, n_k / n_n
            p_value = stats.two_proportion_greater(b_k, b_n, n_k, n_n)
            significant = bool(p_value < alpha)
            abs_change = n_ratio - b_ratio
            changes.append(
                Change(
                    sli="error_ratio",
                    phase=name,
                    base=b_ratio,
                    new=n_ratio,
                    rel_change=abs_change / b_ratio if b_ratio > 0 else None,
                    abs_change=abs_change,
                    ci=None,
                    p_value=p_value,
                    test="two-proportion-z",
                    threshold=spec.regression_error_ratio,
                    threshold_kind="absolute",
                    significant=significant,
                    regression=bool(significant and abs_change > spec.regression_error_ratio),
                    samples=(b_n, n_n),
                )
            )
    regressed = any(c.regression for c in changes)
    return Comparison(
        baseline=str(base_dir),
        new=str(new_dir),
        verdict="fail" if regressed else "pass",
        alpha=alpha,
        changes=changes,
    )


def with_baseline(result: SloResult, baseline_dir: Path, spec: SloSpec) -> SloResult:
    """``result`` (``evaluate_run``'s) with its run compared against the newest accepted run
    in ``baseline_dir``, as ``result.comparison``; a note when there is none yet."""
    base = latest(Path(baseline_dir))
    if base is None:
        result.data_notes.append(f"{baseline_dir}: no accepted baseline run yet; nothing compared")
        result.comparison = Comparison(baseline=None, verdict="no_baseline", changes=[])
    elif result.run_dir is None:
        raise InputError("slo.json", "run_dir", "the run directory the result was evaluated from")
    else:
        result.comparison = compare_runs(base, Path(result.run_dir), spec)
    return result
