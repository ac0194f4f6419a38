"""Regression over the baseline history (``slo/history.py``): change points in each key
objective across the kept runs, this run the newest point; what fails the gate (a worse step
beyond the threshold at the newest run) and what does not (an earlier step, a better one, one
noisy night, a shift below the threshold); too few runs; the trend in the HTML report."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_run import STARTED_AT, make_run_dir
from test_slo_cli import aichaos, invoke
from test_slo_compare import _scale_ttft

from aichaos.reports.render import render_run
from aichaos.slo.baseline import promote
from aichaos.slo.evaluate import evaluate_run, write_result
from aichaos.slo.history import MIN_POINTS, history_of
from aichaos.slo.result import ObjectiveRow, SloResult, read_result
from aichaos.slo.spec import load_spec

DAY = 86_400.0
TTFT = 0.2  # the history's TTFT p95, seconds
# 4,800 requests without an error: enough to show errors <= 0.1% at 95% confidence
REAL_RUN = {"duration_s": 120, "rps": 40, "faults": [], "base_error_ratio": 0.0,
            "with_metrics": False, "with_journal": False}  # fmt: skip


def _row(objective: str, sli: str, unit: str, threshold: float, value: float) -> ObjectiveRow:
    return ObjectiveRow(id=f"{objective}@all", objective=objective, sli=sli, phase="all",
                        op="<=", threshold=threshold, unit=unit, value=value, samples=5000,
                        status="pass", key=True)  # fmt: skip


def evaluated(path: Path, ttft: float, error_ratio: float = 0.0, day: int = 0) -> Path:
    """A run directory evaluated against the default spec's key objectives (its records are
    not needed: the history reads slo.json only)."""
    (path / "requests").mkdir(parents=True)
    rows = [
        _row("ttft-p95", "ttft", "s", 0.5, ttft),
        _row("error-rate", "error_rate", "ratio", 0.001, error_ratio),
    ]
    result = SloResult(run_id=path.name, run_dir=str(path), evaluated_at=STARTED_AT + day * DAY,
                       verdict="pass", objectives=rows)  # fmt: skip
    write_result(path, result)
    return path


def history_store(root: Path, ttfts, error_ratios=None) -> Path:
    """A baseline directory of nightly runs promoted in order, one per value."""
    store = root / "baseline"
    error_ratios = error_ratios if error_ratios is not None else [0.0] * len(ttfts)
    for day, (ttft, errors) in enumerate(zip(ttfts, error_ratios, strict=True)):
        run = evaluated(root / "runs" / f"night-{day:02d}", float(ttft), float(errors), day)
        promote(run, store, keep=20)
    return store


def noisy(n: int, seed: int, spread: float = 0.03) -> np.ndarray:
    return TTFT * (1 + spread * np.random.default_rng(seed).standard_normal(n))


def series(history, objective: str):
    return next(s for s in history.series if s.objective == objective)


def test_a_step_change_is_flagged_at_the_run_it_starts(tmp_path):
    values = noisy(12, seed=3)
    values[8:] *= 1.2
    history = history_of(history_store(tmp_path, values), load_spec("default"))
    ttft = series(history, "ttft-p95")
    assert [(c.index, c.run_id) for c in ttft.change_points] == [(8, "night-08")]
    step = ttft.change_points[0]
    assert step.direction == "worse" and step.beyond_threshold and 0.12 < step.rel_change < 0.3
    assert step.p_value < 0.001 and step.before == pytest.approx(float(np.mean(values[:8])))
    # the step is four nights old: those nights were accepted, the gate does not fail on it
    assert not step.regression and ttft.verdict == "ok" and history.verdict == "ok"
    assert series(history, "error-rate").change_points == []
    assert [p.run_id for p in ttft.points][-1] == history.newest == "night-11"


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_flat_noisy_history_has_no_change_point(tmp_path, seed):
    history = history_of(history_store(tmp_path, noisy(12, seed)), load_spec("default"))
    assert [s.change_points for s in history.series] == [[], []]
    assert history.verdict == "ok"


def test_one_noisy_night_within_the_usual_spread_does_not_fail(tmp_path):
    """Nights that swing by 8%: tonight's +15% is beyond the 10% threshold against last night
    but within what the history does, so it is no change point."""
    values = noisy(10, seed=7, spread=0.08)
    values[-1] = float(np.mean(values[:-1])) * 1.15
    history = history_of(history_store(tmp_path, values), load_spec("default"))
    assert series(history, "ttft-p95").change_points == []
    assert history.verdict == "ok"


def test_a_shift_below_the_threshold_is_no_regression(tmp_path):
    """Nights without spread make any shift significant (p = 0): what decides is the spec's
    threshold, relative for latency (+5% < 10%), absolute for the error rate (+0.2 pp < 0.5)."""
    ttfts = [TTFT] * 7 + [TTFT * 1.05]
    errors = [0.0] * 7 + [0.002]
    history = history_of(history_store(tmp_path, ttfts, errors), load_spec("default"))
    assert series(history, "ttft-p95").change_points == []  # below min_magnitude
    (shift,) = series(history, "error-rate").change_points
    assert shift.index == 7 and shift.direction == "worse" and not shift.beyond_threshold
    assert not shift.regression and history.verdict == "ok"


def test_a_worse_step_at_the_newest_run_fails_and_a_better_one_does_not(tmp_path):
    store = history_store(tmp_path, noisy(8, seed=11))
    worse = evaluated(tmp_path / "tonight-worse", TTFT * 1.4, day=8)
    done = invoke("slo", "history", str(store), "--run", str(worse), "--json")
    assert done.returncode == 1, done.output
    found = json.loads(done.stdout)
    ttft = next(s for s in found["series"] if s["objective"] == "ttft-p95")
    assert found["verdict"] == "regression" and ttft["verdict"] == "regression"
    assert [(c["index"], c["run_id"], c["regression"]) for c in ttft["change_points"]] == [
        (8, "tonight-worse", True)
    ]
    done = invoke("slo", "history", str(store), "--run", str(worse))
    assert done.returncode == 1 and "REGRESSION" in done.stdout
    assert re.search(r"tonight-worse .* <- change point \+3\d\.\d % .*REGRESSION", done.stdout)
    better = evaluated(tmp_path / "tonight-better", TTFT * 0.7, day=8)
    done = invoke("slo", "history", str(store), "--run", str(better))
    assert done.returncode == 0, done.output
    assert "<- change point -3" in done.stdout and "better" in done.stdout
    # without --run, the newest accepted run is the newest point
    promote(worse, store, keep=20)
    assert invoke("slo", "history", str(store)).returncode == 1


def test_a_fall_is_worse_for_an_objective_held_from_below(tmp_path):
    """Availability >= 99%: a drop of 2 percentage points at the newest run regresses."""
    spec = tmp_path / "availability.yaml"
    spec.write_text(
        "name: availability\nobjectives:\n"
        "  - {id: availability, sli: availability, threshold: 99%, key: true}\n"
    )
    store = tmp_path / "baseline"
    nights = 0.999 - 0.0005 * np.random.default_rng(2).random(6)
    for day, value in enumerate([*nights, 0.979]):
        row = ObjectiveRow(id="availability@all", objective="availability", sli="availability",
                           phase="all", op=">=", threshold=0.99, unit="ratio", value=float(value),
                           samples=5000, status="pass", key=True)  # fmt: skip
        run = tmp_path / "runs" / f"night-{day}"
        (run / "requests").mkdir(parents=True)
        write_result(run, SloResult(run_id=run.name, verdict="pass", objectives=[row]))
        promote(run, store)
    history = history_of(store, load_spec(str(spec)))
    (drop,) = series(history, "availability").change_points
    assert drop.index == 6 and drop.direction == "worse" and drop.abs_change < -0.015
    assert drop.regression and history.verdict == "regression"


def test_without_otava_the_history_is_one_line(tmp_path, monkeypatch):
    store = history_store(tmp_path, noisy(MIN_POINTS, seed=1))
    monkeypatch.setitem(sys.modules, "otava.analysis", None)  # as if it were not installed
    done = invoke("slo", "history", str(store))
    assert done.returncode == 3, done.output
    assert "pip install --no-deps apache-otava==0.8.0" in done.output


def test_too_few_runs_is_one_line_and_exit_two(tmp_path):
    store = history_store(tmp_path, noisy(MIN_POINTS - 2, seed=1))
    done = aichaos("slo", "history", str(store))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith(f"error: {store}: ")
    assert f"expected at least {MIN_POINTS} accepted runs, got {MIN_POINTS - 2}" in done.stderr
    tonight = evaluated(tmp_path / "tonight", TTFT)
    done = aichaos("slo", "history", str(store), "--run", str(tonight))
    assert done.returncode == 2
    assert f"expected at least {MIN_POINTS - 1} accepted runs, got {MIN_POINTS - 2}" in done.stderr
    done = invoke("slo", "history", str(store), "--run", str(tmp_path / "runs"))
    assert done.returncode == 2 and "expected an evaluated run" in done.output


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Real run directories: four nights evaluated and promoted into ``fast/``, the same
    records made 40% slower in ``slow/``; tonight as a fast and as a slow run."""
    root = tmp_path_factory.mktemp("history")
    spec = load_spec("default")
    stores = {"fast": root / "fast", "slow": root / "slow"}
    for night in range(MIN_POINTS - 1):
        started = STARTED_AT + night * DAY
        run = make_run_dir(root / f"night-{night}", seed=night, started_at=started, **REAL_RUN)
        slow = make_run_dir(root / f"slow-night-{night}", seed=night, started_at=started,
                            **REAL_RUN)  # fmt: skip
        _scale_ttft(slow, 1.4)
        for path, store in ((run, stores["fast"]), (slow, stores["slow"])):
            write_result(path, evaluate_run(path, spec))
            promote(path, store)
    started = STARTED_AT + (MIN_POINTS - 1) * DAY
    fast = make_run_dir(root / "tonight", seed=99, started_at=started, **REAL_RUN)
    slow = make_run_dir(root / "tonight-slow", seed=99, started_at=started, **REAL_RUN)
    _scale_ttft(slow, 1.4)
    return {**stores, "tonight": fast, "tonight-slow": slow}


def test_slo_check_with_a_baseline_history(real):
    done = invoke("slo", "check", str(real["tonight-slow"]), "--baseline", str(real["fast"]))
    assert done.returncode == 1, done.output
    assert "history over 5 runs" in done.stdout and "ttft-p95@all: +" in done.stdout
    history = read_result(real["tonight-slow"]).history
    assert history is not None and history.verdict == "regression"
    ttft = series(history, "ttft-p95")
    assert [p.run_id for p in ttft.points][-1] == "tonight-slow"
    assert ttft.change_points[-1].run_id == "tonight-slow" and ttft.change_points[-1].regression
    # 40% faster than a slow history: a change point, a better one, and the check passes
    done = invoke("slo", "check", str(real["tonight"]), "--baseline", str(real["slow"]))
    assert done.returncode == 0, done.output
    history = read_result(real["tonight"]).history
    assert history.verdict == "ok" and series(history, "ttft-p95").change_points[-1].direction == (
        "better"
    )


def test_slo_check_with_too_few_runs_for_a_history_still_compares(real, tmp_path):
    store = tmp_path / "short"
    promote(real["fast"] / "night-0", store)
    done = invoke("slo", "check", str(real["tonight"]), "--baseline", str(store))
    assert done.returncode == 0, done.output
    written = json.loads((real["tonight"] / "slo.json").read_text())
    assert "history" not in written and written["comparison"]["verdict"] == "pass"
    assert any("the history was not analysed" in n for n in written["data_notes"])


def test_the_report_shows_each_key_objective_s_trend_with_its_change_points(real):
    run = real["tonight-slow"]
    assert invoke("slo", "check", str(run), "--baseline", str(real["fast"])).returncode == 1
    (path,) = render_run(run, ["html"])
    page = path.read_text()
    assert 'data-history-verdict="regression"' in page
    assert 'data-trend="ttft-p95@all" data-verdict="regression"' in page
    assert 'data-change-point="worse" data-run="tonight-slow"' in page
    assert 'id="chart-trend-0"' in page and 'id="chart-trend-1"' in page
    data = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    figures = json.loads(data.group(1))["figures"]
    trend = figures["trend-0"]
    assert trend["timeline"] is False
    traces = {t["name"]: t for t in trend["data"]}
    nights = [f"night-{n}" for n in range(MIN_POINTS - 1)]
    assert traces["value"]["x"] == [*nights, "tonight-slow"]
    assert traces["change point (worse)"]["x"] == ["tonight-slow"]
    assert [s["x0"] for s in trend["layout"]["shapes"]] == [MIN_POINTS - 1.5]
