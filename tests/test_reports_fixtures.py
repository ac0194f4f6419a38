"""Run directories for the reports tests: a passing run, a failing run (compared with the
passing one as its baseline), an aborted run and a run without server metrics, each evaluated
by the real SLO evaluator (``aichaos.slo.evaluate.evaluate_run`` with the ``tiered`` spec).
``hand_run`` adds an slo.json written here in the agreed shape with figures the short synthetic
runs cannot produce (burn-rate alerts that fired, insufficient data in a fault phase). The
failing run has a planted ``<script>`` in an error detail and in the experiment title.

No test lives here; ``test_reports_*`` modules import these builders.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from synthetic_run import make_run_dir

from aichaos.rundir import (
    JOURNAL_JSON,
    METRICS_PARQUET,
    SLO_JSON,
    read_manifest,
    read_requests,
    write_json,
)

PLANTED = '</script><script>window.__planted = 1; console.error("planted ran")</script>'
PLANTED_TITLE = f'<script>window.__planted = 2</script>chaos "{PLANTED}" & more'
OUTAGE = {"name": "provider-outage", "start": 60, "end": 100, "served_by": "fallback"}
KILL = {"name": "replica-kill", "start": 130, "end": 150, "kill": "llm-2"}
TIERS = ("free", "pro", "enterprise")


def evaluate(run: Path, baseline: Path | None = None) -> dict[str, Any]:
    """slo.json for ``run`` from the SLO evaluator (written into the run directory)."""
    from aichaos.slo.compare import with_baseline
    from aichaos.slo.evaluate import evaluate_run, write_result
    from aichaos.slo.spec import load_spec

    evaluation = evaluate_run(run, load_spec("tiered"))
    if baseline is not None:
        evaluation = with_baseline(evaluation, baseline, load_spec("tiered"))
    write_result(run, evaluation)
    return json.loads((run / SLO_JSON).read_text(encoding="utf-8"))


# The evaluator lands in slo/ alongside the reports; until then the hand-written slo.json
# stands in for it.
EVALUATOR = importlib.util.find_spec("aichaos.slo.evaluate") is not None


def passing_run(path: Path) -> Path:
    faults = [{**OUTAGE, "error_ratio": 0.0, "ttft_shift_s": 0.02}, KILL]
    # 70 requests a second without an error: about 4,700 enterprise requests, enough to show
    # the tiered spec's enterprise errors <= 0.1% and its p99 at 95% confidence
    run = make_run_dir(path, seed=1, duration_s=200, rps=70, faults=faults, base_error_ratio=0)
    if EVALUATOR:
        evaluate(run)
    else:
        write_json(run / SLO_JSON, hand_slo(run, ttft_p95_s=0.4, error_ratio=0.05))
    return run


def failing_run(path: Path, baseline: Path | None = None) -> Path:
    faults = [{**OUTAGE, "error_ratio": 0.25, "ttft_shift_s": 0.35}, KILL]
    run = make_run_dir(path, seed=2, duration_s=200, rps=15, faults=faults)
    plant(run)
    if EVALUATOR:
        evaluate(run, baseline)
        return run
    slo = hand_slo(run, ttft_p95_s=0.3, error_ratio=0.01)
    slo["comparison"] = {
        "baseline": "runs/nightly-previous",
        "verdict": "fail",
        "changes": [
            {
                "sli": "ttft-p95",
                "phase": "all",
                "base": 0.21,
                "new": 0.34,
                "rel_change": 0.619,
                "p_value": 0.0001,
                "threshold": 0.1,
                "significant": True,
                "regression": True,
            },
            {
                "sli": "error-rate",
                "phase": "baseline",
                "base": 0.001,
                "new": 0.0011,
                "rel_change": 0.1,
                "p_value": 0.41,
                "threshold": 0.5,
                "significant": False,
                "regression": False,
            },
        ],
    }
    write_json(run / SLO_JSON, slo)
    return run


def aborted_run(path: Path) -> Path:
    """Stopped during the outage: no end time, the fault never ended, no journal."""
    faults = [{**OUTAGE, "error_ratio": 0.3, "end": 400}]
    run = make_run_dir(
        path, seed=3, duration_s=90, rps=15, faults=faults, with_journal=False, status="aborted"
    )
    events = (run / "events.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [e for e in events if json.loads(e)["t"] <= read_manifest(run).started_at + 90]
    # a run killed mid-write leaves a torn last line
    (run / "events.jsonl").write_text("\n".join(kept) + '\n{"t": 17950', encoding="utf-8")
    assert not (run / JOURNAL_JSON).exists()
    if EVALUATOR:
        evaluate(run)
        return run
    slo = hand_slo(run, ttft_p95_s=0.4, error_ratio=0.05)
    slo["incomplete"] = True
    slo["data_notes"] = ["run aborted: fault provider-outage has no end; phase cut at run end"]
    write_json(run / SLO_JSON, slo)
    return run


def no_metrics_run(path: Path) -> Path:
    run = make_run_dir(path, seed=4, duration_s=120, rps=10, faults=[], with_metrics=False)
    assert not (run / METRICS_PARQUET).exists()
    if EVALUATOR:
        evaluate(run)
    else:
        write_json(run / SLO_JSON, hand_slo(run, ttft_p95_s=0.4, error_ratio=0.05))
    return run


def hand_run(path: Path) -> Path:
    """A run whose slo.json is written here: objectives per phase and tier, a fired alert."""
    faults = [{**OUTAGE, "error_ratio": 0.25, "ttft_shift_s": 0.35}, KILL]
    run = make_run_dir(path, seed=5, duration_s=200, rps=15, faults=faults)
    write_json(run / SLO_JSON, hand_slo(run, ttft_p95_s=0.3, error_ratio=0.01))
    return run


def plant(run: Path) -> None:
    """A ``<script>`` in the experiment title (run.json and journal) and in error details."""
    manifest = read_manifest(run)
    manifest.experiment["title"] = PLANTED_TITLE
    manifest.write(run)
    journal = json.loads((run / JOURNAL_JSON).read_text(encoding="utf-8"))
    journal["experiment"]["title"] = PLANTED_TITLE
    journal["run"][0]["output"] = {"body": PLANTED}
    write_json(run / JOURNAL_JSON, journal)
    for chunk in sorted((run / "requests").glob("*.parquet")):
        table = pq.read_table(chunk)
        details = table.column("error_detail").to_pylist()
        if any(details):
            planted = [PLANTED if d else None for d in details]
            index = table.column_names.index("error_detail")
            table = table.set_column(index, "error_detail", pa.array(planted, pa.string()))
            pq.write_table(table, chunk)
            return


def hand_slo(run: Path, ttft_p95_s: float, error_ratio: float) -> dict[str, Any]:
    """slo.json for ``run`` in the agreed shape, its figures computed from the records with
    numpy (the evaluator's own statistics are tested in the slo tests)."""
    manifest = read_manifest(run)
    table, _ = read_requests(run)
    t = table.column("t_sent").to_numpy()
    ttft = table.column("ttft_s").to_numpy(zero_copy_only=False).astype(float)
    bad = np.array(table.column("status").to_pylist()) == "error"
    tier = np.array(table.column("tier").to_pylist())
    s = manifest.started_at
    end = manifest.ended_at or float(t.max())
    events = [
        json.loads(line)
        for line in (run / "events.jsonl").read_text().splitlines()
        if line.strip().endswith("}")
    ]
    faults = _windows(events, end)
    baseline_end = faults[0][1] if faults else end
    phases = [
        {
            "name": "baseline",
            "kind": "baseline",
            "start": s + manifest.warmup_s,
            "end": baseline_end,
            "fault": None,
        }
    ]
    for name, t0, t1 in faults:
        phases.append(
            {
                "name": f"fault:{name}",
                "kind": "fault",
                "start": t0,
                "end": t1,
                "fault": {"name": name, "activity": "disable_proxy"},
            }
        )
    if faults and faults[-1][2] < end:
        phases.append(
            {
                "name": "recovery",
                "kind": "recovery",
                "start": faults[-1][2],
                "end": end,
                "fault": None,
            }
        )
    phases.append({"name": "all", "kind": "all", "start": s, "end": end, "fault": None})
    objective, period = 0.999, 2.6e7
    objectives, by_phase, latency = [], [], {}
    spent_total = 0.0
    for phase in phases:
        inside = (t >= phase["start"]) & (t < phase["end"])
        phase["requests"] = int(inside.sum())
        n_bad = int((inside & bad).sum())
        ratio = n_bad / max(phase["requests"], 1)
        spent = n_bad / ((1 - objective) * period)
        spent_total += spent if phase["kind"] != "all" else 0.0
        by_phase.append(
            {
                "phase": phase["name"],
                "requests": phase["requests"],
                "bad": n_bad,
                "error_ratio": ratio,
                "burn_rate": ratio / (1 - objective),
                "budget_spent": spent,
            }
        )
        values = ttft[inside & np.isfinite(ttft)]
        latency[phase["name"]] = {"ttft": _stats(values)}
        objectives.append(
            _objective(
                "error-rate",
                "error_rate",
                phase["name"],
                None,
                None,
                "<=",
                error_ratio,
                "ratio",
                ratio,
                phase["requests"],
            )
        )
        for name in TIERS[1:]:
            mine = values[tier[inside & np.isfinite(ttft)] == name]
            value = float(np.percentile(mine, 95)) if len(mine) >= 20 else None
            objectives.append(
                _objective(
                    "ttft-p95",
                    "ttft",
                    phase["name"],
                    name,
                    95.0,
                    "<=",
                    ttft_p95_s,
                    "s",
                    value,
                    len(mine),
                )
            )
    failed = [o for o in objectives if o["status"] == "fail"]
    key_failed = sorted({o["id"] for o in failed if o["key"]})
    passed = [o for o in objectives if o["status"] == "pass"]
    verdict = "fail" if failed else "pass"
    fault_phases = [p for p in phases if p["kind"] == "fault"]
    return {
        "schema_version": 1,
        "run_id": manifest.id,
        "evaluated_at": end + 5,
        "spec": {
            "name": "tiered",
            "source": "slo/specs/tiered.yaml",
            "period_days": 30,
            "availability_objective": objective,
        },
        "verdict": verdict,
        "score": round(100.0 * len(passed) / len(objectives), 1),
        "key_failed": key_failed,
        "data_notes": [],
        "incomplete": manifest.status != "completed",
        "phases": phases,
        "objectives": objectives,
        "budget": {
            "objective": objective,
            "period_days": 30,
            "period_requests": period,
            "period_requests_source": "spec",
            "by_phase": by_phase,
            "spent_total": spent_total,
        },
        "alerts": [
            {
                "name": "page-1h-5m",
                "severity": "page",
                "burn_rate": 14.4,
                "long_window_s": 3600,
                "short_window_s": 300,
                "fault": p["name"],
                "fired_at": p["start"] + 4.0,
                "time_to_detect_s": 4.0,
            }
            for p in fault_phases
            if by_phase[phases.index(p)]["burn_rate"] > 14.4
        ],
        "recovery": [
            {"fault": p["name"], "sli": "error_rate", "time_to_recover_s": 3.5}
            for p in fault_phases
        ],
        "failover": [{"fault": p["name"], "time_to_failover_s": 1.0} for p in fault_phases],
        "latency": latency,
        "goodput": {
            p["name"]: {"rps": p["requests"] / max(p["end"] - p["start"], 1), "share": 0.97}
            for p in phases
        },
        "tiers": {
            name: {
                "requests": int((tier == name).sum()),
                "errors": int((bad & (tier == name)).sum()),
                "error_ratio": float((bad & (tier == name)).sum() / max((tier == name).sum(), 1)),
                "ttft": _stats(ttft[(tier == name) & np.isfinite(ttft)]),
            }
            for name in TIERS
        },
        "server": [
            {
                "name": "vllm ttft p95",
                "promql": "histogram_quantile(0.95, ...)",
                "phase": "all",
                "value": 0.21,
                "status": "pass",
            }
        ],
        "comparison": None,
    }


def _windows(events: list[dict], end: float) -> list[tuple[str, float, float]]:
    starts = {e["name"]: e["t"] for e in events if e["kind"] == "fault" and e["action"] == "start"}
    ends = {e["name"]: e["t"] for e in events if e["kind"] == "fault" and e["action"] == "end"}
    return sorted((n, t0, min(ends.get(n, end), end)) for n, t0 in starts.items())


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    if not len(values):
        return {"p50": None, "p90": None, "p95": None, "p99": None, "p99.9": None, "count": 0}
    qs = np.percentile(values, [50, 90, 95, 99, 99.9])
    return {
        **dict(zip(("p50", "p90", "p95", "p99", "p99.9"), map(float, qs), strict=True)),
        "count": len(values),
    }


def _objective(
    objective: str,
    sli: str,
    phase: str,
    tier: str | None,
    percentile: float | None,
    op: str,
    threshold: float,
    unit: str,
    value: float | None,
    samples: int,
) -> dict[str, Any]:
    if value is None:
        status = "insufficient_data"
    elif value <= threshold:
        status = "warn" if value > 0.9 * threshold else "pass"
    else:
        status = "fail"
    scope = f"{phase}/{tier}" if tier else phase
    return {
        "id": f"{objective}@{scope}",
        "objective": objective,
        "sli": sli,
        "phase": phase,
        "tier": tier,
        "percentile": percentile,
        "op": op,
        "threshold": threshold,
        "unit": unit,
        "value": value,
        "ci": None if value is None else [value * 0.95, value * 1.05],
        "samples": samples,
        "status": status,
        "weight": 1.0,
        "key": tier == "enterprise" or objective == "error-rate",
        "detail": f"{objective} {'n/a' if value is None else f'{value:.4g}'} {op} {threshold}"
        f" (n={samples})",
    }
