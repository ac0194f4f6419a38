"""The synthetic run builder writes what rundir.py promises (the SLO and reports tests rely
on it)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from synthetic_run import make_run_dir

from aichaos.rundir import METRICS_SCHEMA, REQUEST_SCHEMA, read_events, read_manifest, read_requests


def test_synthetic_run_matches_the_contract(tmp_path):
    run = make_run_dir(
        tmp_path / "run",
        seed=3,
        duration_s=120,
        rps=10,
        warmup_s=5,
        faults=[
            {
                "name": "outage",
                "start": 40,
                "end": 70,
                "error_ratio": 0.5,
                "served_by": "fallback",
                "kill": "llm-2",
            }
        ],
    )
    table, notes = read_requests(run)
    assert notes == [] and table.schema == REQUEST_SCHEMA
    assert 900 < table.num_rows < 1500
    manifest = read_manifest(run)
    assert manifest.warmup_s == 5 and manifest.status == "completed"
    rel = table.column("t_sent").to_numpy() - manifest.started_at
    failed = np.array(table.column("status").to_pylist()) == "error"
    in_fault = (rel >= 40) & (rel < 70)
    assert 0.35 < failed[in_fault].mean() < 0.65 and failed[~in_fault].mean() < 0.01
    served = np.array(table.column("served_by").to_pylist(), dtype=object)
    assert set(served[in_fault & ~failed & (rel >= 41)]) == {"fallback"}
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    itl = ok.column("itl_s").to_pylist()
    tokens = ok.column("output_tokens").to_pylist()
    assert all(len(gaps) == n - 1 for gaps, n in zip(itl, tokens, strict=True))
    e2e, ttft = ok.column("e2e_s").to_numpy(), ok.column("ttft_s").to_numpy()
    assert np.allclose(e2e - ttft, [sum(g) for g in itl])
    events, notes = read_events(run)
    faults = [(e["action"], e["name"]) for e in events if e["kind"] == "fault"]
    assert faults == [("start", "outage"), ("end", "outage")]
    assert {e["kind"] for e in events if e["source"] == "supervisor"} >= {"exit", "restart"}
    metrics = pq.read_table(run / "metrics.parquet")
    assert metrics.schema == METRICS_SCHEMA
    assert "gateway_breaker_state" in set(metrics.column("metric").to_pylist())
    assert (run / "journal.json").exists()
