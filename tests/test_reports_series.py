"""Chart series of a run directory (``aichaos.slo.series``): counts add up to the records,
fault windows and supervisor marks come from events.jsonl, long runs are downsampled (and a
one-hour report stays under 5 MB), counters become rates across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_run import make_run_dir
from test_reports_fixtures import EVALUATOR, KILL, OUTAGE, aborted_run, evaluate

from aichaos.reports.render import render_run
from aichaos.rundir import METRICS_PARQUET, METRICS_SCHEMA, read_manifest, read_requests
from aichaos.slo import series as series_module
from aichaos.slo.series import MAX_POINTS, build_series

FAULTS = [
    {**OUTAGE, "error_ratio": 0.3, "ttft_shift_s": 0.4},
    {**KILL, "error_ratio": 0.1, "error_kind": "reset"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(
        tmp_path_factory.mktemp("series") / "run", seed=7, duration_s=200, rps=20, faults=FAULTS
    )


def _column(run: Path, name: str) -> np.ndarray:
    table, _ = read_requests(run)
    return np.array(table.column(name).to_pylist(), dtype=object)


def test_rates_add_up_to_the_records(run: Path) -> None:
    s = build_series(run)
    assert s["bin_s"] == 1 and s["points"] == 200 and len(s["x"]) == 200
    status = _column(run, "status")
    kinds = _column(run, "error_kind")
    total = len(status)
    assert round(sum(s["requests"]["sent"]) * s["bin_s"]) == total
    assert round(sum(s["requests"]["scheduled"]) * s["bin_s"]) == total
    for kind in ("http_5xx", "reset"):
        assert round(sum(s["errors"][kind]) * s["bin_s"]) == int((kinds == kind).sum())
    served = sum(round(sum(v) * s["bin_s"]) for v in s["served"].values())
    assert served == int((status == "ok").sum())
    assert set(s["served"]) == {"llm-1", "llm-2", "fallback", "cache"}
    # the fallback answered only during the outage (after the failover delay)
    fallback = np.array(s["served"]["fallback"])
    x = np.array(s["x"])
    assert fallback[(x < OUTAGE["start"]) | (x > OUTAGE["end"] + 1)].sum() == 0
    assert fallback[(x > OUTAGE["start"] + 2) & (x < OUTAGE["end"] - 1)].min() > 0


def test_latency_percentiles_follow_the_fault(run: Path) -> None:
    s = build_series(run)
    x = np.array(s["x"])
    p95 = np.array([np.nan if v is None else v for v in s["ttft"]["p95"]], dtype=float)
    during = np.nanmedian(p95[(x > OUTAGE["start"] + 1) & (x < OUTAGE["end"] - 1)])
    before = np.nanmedian(p95[(x > 15) & (x < OUTAGE["start"] - 1)])
    assert during > before + 0.3  # the fault added 0.4 s to every TTFT
    p50, p99 = (np.array(s["ttft"][k], dtype=float) for k in ("p50", "p99"))
    both = np.isfinite(p50) & np.isfinite(p99)
    assert (p50[both] <= p99[both]).all()
    itl50 = np.array(s["itl"]["p50"], dtype=float)
    assert 0.01 < np.nanmedian(itl50) < 0.03  # synthetic ITL median ~18 ms
    assert s["itl"]["sampled_every"] == 1


def test_fault_windows_marks_and_warmup_come_from_events(run: Path) -> None:
    s = build_series(run)
    assert [(f["name"], f["start"], f["end"], f["open"]) for f in s["faults"]] == [
        ("provider-outage", 60.0, 100.0, False),
        ("replica-kill", 130.0, 150.0, False),
    ]
    assert [(m["kind"], m["name"], m["t"]) for m in s["marks"]] == [
        ("exit", "llm-2", 130.1),
        ("restart", "llm-2", 135.0),
    ]
    assert s["warmup"] == [0.0, 10.0]


def test_aborted_run_keeps_an_open_fault_to_the_end(tmp_path: Path) -> None:
    s = build_series(aborted_run(tmp_path / "aborted"))
    (fault,) = s["faults"]
    assert fault["open"] is True and fault["end"] == s["duration_s"] == 90.0
    assert any("unreadable line" in n for n in s["notes"])


def test_cdf_per_phase_counts_the_phase_requests(run: Path) -> None:
    t0 = read_manifest(run).started_at
    phases = [
        {"name": "baseline", "start": t0 + 10, "end": t0 + 60},
        {"name": "outage", "start": t0 + 60, "end": t0 + 100},
    ]
    s = build_series(run, phases)
    sent = _column(run, "t_sent").astype(float)
    ttft = _column(run, "ttft_s")
    has = np.array([v is not None for v in ttft])
    # a TTFT sample belongs to the phase its first token came in
    first = sent + np.array([v if v is not None else np.nan for v in ttft], dtype=float)
    for phase in phases:
        inside = (first >= phase["start"]) & (first < phase["end"]) & has
        cdf = s["cdf"][phase["name"]]["ttft"]
        assert cdf["count"] == int(inside.sum())
        assert cdf["y"][0] == 0 and cdf["y"][-1] == 1
        assert cdf["x"] == sorted(cdf["x"])
        assert cdf["x"][-1] == pytest.approx(max(ttft[inside]), rel=1e-4)
    assert (
        s["cdf"]["outage"]["ttft"]["x"][len(s["cdf"]["outage"]["ttft"]["x"]) // 2]
        > s["cdf"]["baseline"]["ttft"]["x"][len(s["cdf"]["baseline"]["ttft"]["x"]) // 2] + 0.3
    )


def test_server_series_breakers_by_dependency_and_none_without_metrics(
    run: Path, tmp_path: Path
) -> None:
    s = build_series(run)
    assert set(s["server"]["breakers"]) == {"llm-1", "llm-2", "fallback", "retriever"}
    opened = s["server"]["breakers"]["llm-1"]
    assert max(opened["y"]) == 2 and min(opened["y"]) == 0
    assert set(s["server"]["running"]) == {"llm-1", "llm-2"}
    bare = make_run_dir(tmp_path / "bare", duration_s=30, rps=5, faults=[], with_metrics=False)
    assert build_series(bare)["server"] is None


def test_counter_becomes_a_rate_and_a_restart_is_not_negative(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", duration_s=10, rps=5, faults=[], with_metrics=False)
    t0 = read_manifest(run).started_at
    counts = [0, 5, 10, 2, 4, 4, 10]  # the replica restarted after the third sample
    rows = [
        (t0 + i + 0.5, "llm-1", "vllm:num_preemptions_total", "{}", float(c))
        for i, c in enumerate(counts)
    ]
    arrays = [
        pa.array(list(c), type=f.type)
        for c, f in zip(zip(*rows, strict=True), METRICS_SCHEMA, strict=True)
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA), run / METRICS_PARQUET)
    rate = build_series(run)["server"]["preemptions"]["llm-1"]
    assert rate["y"] == [5, 5, 0, 2, 0, 6]
    assert rate["x"] == [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]


def test_itl_is_sampled_above_the_cap(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = build_series(run)["itl"]
    monkeypatch.setattr(series_module, "ITL_SAMPLE_CAP", 20_000)
    sampled = build_series(run)["itl"]
    assert sampled["sampled_every"] > 1
    a = np.array(full["p50"], dtype=float)
    b = np.array(sampled["p50"], dtype=float)
    both = np.isfinite(a) & np.isfinite(b)
    assert abs(np.median(a[both]) - np.median(b[both])) < 0.003


def test_one_hour_run_is_downsampled_and_its_report_stays_small(tmp_path: Path) -> None:
    faults = [
        {**OUTAGE, "start": 1200, "end": 1500, "error_ratio": 0.3, "ttft_shift_s": 0.3},
        {**KILL, "start": 2400, "end": 2460},
    ]
    run = make_run_dir(tmp_path / "hour", seed=11, duration_s=3600, rps=20, faults=faults)
    if EVALUATOR:
        evaluate(run)
    s = build_series(run)
    assert s["bin_s"] == 5 and s["points"] == 720 <= MAX_POINTS
    total = len(_column(run, "status"))
    assert round(sum(s["requests"]["sent"]) * s["bin_s"]) == total
    (html,) = render_run(run, ["html"])
    size = html.stat().st_size
    assert size < 5 * 1024 * 1024, size
    data = html.read_text(encoding="utf-8").split('id="chart-data">')[1].split("</script>")[0]
    figures = json.loads(data)["figures"]
    assert len(figures["ttft"]["data"][0]["x"]) == 720


def test_the_charts_and_the_verdict_agree_on_every_number_they_share(tmp_path: Path) -> None:
    """Streams cut by a fault after their first token carry a TTFT: the verdict leaves failed
    requests out of latency, and so must every chart beside it."""
    run = make_run_dir(tmp_path / "run", seed=11, duration_s=120, rps=15, faults=FAULTS)
    chunks = sorted((run / "requests").glob("*.parquet"))
    for path in chunks:  # give every failed request a (huge) TTFT and ITL, as a cut stream has
        table = pq.read_table(path)
        failed = pa.compute.equal(table.column("status"), "error")
        ttft = pa.compute.if_else(failed, 30.0, table.column("ttft_s"))
        table = table.set_column(table.schema.get_field_index("ttft_s"), "ttft_s", ttft)
        gaps = table.column("itl_s").to_pylist()
        itl = [[5.0] if f else v for f, v in zip(failed.to_pylist(), gaps, strict=True)]
        index = table.schema.get_field_index("itl_s")
        table = table.set_column(index, "itl_s", pa.array(itl, table.schema.field("itl_s").type))
        pq.write_table(table, path)
    evaluation = evaluate(run)
    s = build_series(run, evaluation["phases"])
    checked = 0
    for phase in evaluation["phases"]:
        table = evaluation["latency"][phase["name"]]["ttft"]
        cdf = s["cdf"][phase["name"]]["ttft"]
        assert cdf["count"] == table["count"], (phase, cdf["count"], table["count"])
        for q in (0.5, 0.95, 0.99):
            if table["count"]:
                x = cdf["x"][cdf["y"].index(q)]
                assert x == pytest.approx(table[f"p{q * 100:g}"], rel=1e-3), (phase["name"], q)
                checked += 1
    assert checked >= 9
    ttft = np.array([np.nan if v is None else v for v in s["ttft"]["p99"]], dtype=float)
    assert np.nanmax(ttft) < 30.0  # no failed stream's TTFT in the TTFT chart
    itl = np.array([np.nan if v is None else v for v in s["itl"]["p99"]], dtype=float)
    assert np.nanmax(itl) < 5.0
