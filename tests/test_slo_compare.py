"""Regression gate: catches a 20% TTFT shift, stays quiet on two seeds of one distribution;
the baseline directory keeps the last N accepted runs."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from synthetic_run import make_run_dir

from aichaos.rundir import InputError
from aichaos.slo import baseline
from aichaos.slo.compare import compare_runs, with_baseline
from aichaos.slo.evaluate import evaluate_run, exit_code, write_result
from aichaos.slo.spec import load_spec

RUN = {"duration_s": 200, "rps": 15, "faults": [], "with_metrics": False, "with_journal": False}


def _scale_ttft(run, factor):
    """Make every answer's first token ``factor`` times later (E2E moves with it)."""
    for path in (run / "requests").glob("*.parquet"):
        t = pq.read_table(path)
        for name in ("ttft_s", "e2e_s"):
            col = t.column(name)
            shift = pc.multiply(t.column("ttft_s"), factor - 1.0)
            t = t.set_column(t.schema.get_field_index(name), name, pc.add(col, shift))
        pq.write_table(t, path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    a = make_run_dir(root / "a", seed=10, **RUN)
    b = make_run_dir(root / "b", seed=11, **RUN)
    slow = make_run_dir(root / "slow", seed=12, **RUN)
    _scale_ttft(slow, 1.2)
    return a, b, slow


def test_quiet_on_two_seeds_of_one_distribution(runs):
    a, b, _ = runs
    result = compare_runs(a, b, load_spec("default"))
    assert result.verdict == "pass"
    assert not any(c.regression for c in result.changes)
    slis = {c.sli for c in result.changes}
    assert {"ttft-p95", "ttft-p50", "tpot-p95", "itl-p95", "error_ratio"} <= slis


def test_catches_a_twenty_percent_ttft_shift(runs):
    a, _, slow = runs
    result = compare_runs(a, slow, load_spec("default"))
    assert result.verdict == "fail"
    worse = {(c.sli, c.phase): c for c in result.changes if c.regression}
    ttft = worse[("ttft-p95", "all")]
    assert 0.1 < ttft.rel_change < 0.35 and ttft.p_value < 1e-6 and ttft.ci[0] > 0
    assert ("ttft-p50", "baseline") in worse
    # TPOT and ITL did not change: no regression claimed there
    assert not any(s.startswith(("tpot", "itl")) for s, _ in worse)


def test_error_ratio_regression_needs_size_and_significance(tmp_path):
    base = make_run_dir(tmp_path / "base", seed=1, base_error_ratio=0.001, **RUN)
    worse = make_run_dir(tmp_path / "worse", seed=2, base_error_ratio=0.03, **RUN)
    result = compare_runs(base, worse)
    row = next(c for c in result.changes if c.sli == "error_ratio" and c.phase == "all")
    assert row.regression and row.p_value < 1e-6 and row.threshold_kind == "absolute"
    small = make_run_dir(tmp_path / "small", seed=3, base_error_ratio=0.003, **RUN)
    row = next(
        c for c in compare_runs(base, small).changes if c.sli == "error_ratio" and c.phase == "all"
    )
    assert not row.regression  # +0.2 pp is below the 0.5 pp threshold


def test_baseline_directory_keeps_the_last_n_and_check_uses_the_newest(runs, tmp_path):
    a, b, slow = runs
    spec = load_spec("default")
    store = tmp_path / "baselines"
    assert baseline.latest(store) is None
    for run in (a, b):
        write_result(run, evaluate_run(run, spec))
        baseline.promote(run, store, keep=1)
    assert baseline.latest(store).name == "b" and not (store / "a").exists()
    assert [p.name for p in baseline.runs(store)] == ["b"]
    index = json.loads((store / "baselines.json").read_text())
    assert [e["dir"] for e in index["runs"]] == ["b"]
    res = with_baseline(evaluate_run(slow, spec), store, spec)
    assert res.comparison.verdict == "fail" and exit_code(res) == 1
    assert res.comparison.baseline.endswith("b")
    res = with_baseline(evaluate_run(a, spec), tmp_path / "empty", spec)
    assert res.comparison.verdict == "no_baseline"
    # a failed run is no baseline
    failing = {"verdict": "fail"}
    (slow / "slo.json").write_text(json.dumps(failing))
    with pytest.raises(InputError, match="verdict: expected a run that passed"):
        baseline.promote(slow, store)


def test_compare_on_different_phase_sets_uses_the_common_ones(tmp_path):
    a = make_run_dir(
        tmp_path / "a",
        seed=1,
        duration_s=200,
        rps=15,
        with_metrics=False,
        faults=[{"name": "outage", "start": 100, "end": 130, "error_ratio": 0.2}],
    )
    b = make_run_dir(tmp_path / "b", seed=2, **RUN)
    phases = {c.phase for c in compare_runs(a, b).changes}
    assert phases == {"baseline", "all"}
