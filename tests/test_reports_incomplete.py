"""A run that did not finish is never headlined as a pass: report.html, summary.md, junit.xml
and summary.json all open with ABORTED / CRASHED / INCOMPLETE and the phases that ran, from
run directories evaluated by the real SLO evaluator whose recorded objectives all pass."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml
from synthetic_run import STARTED_AT, make_run_dir
from test_reports_render import page

from aichaos.processes import ProcessRef
from aichaos.reports.render import render_run
from aichaos.rundir import OWNER_GONE, RUN_JSON, SLO_JSON, read_manifest, write_json
from aichaos.slo.evaluate import evaluate_run, exit_code, write_result
from aichaos.slo.spec import load_spec

OUTAGE = "provider-outage"
# stopped 7 s into a fault window planned for 40 s, at 60 s of a 120 s game day
PLANNED = {"type": "action", "name": OUTAGE, "x-aichaos": {"at": 60, "duration": 40}}
STOP_S = 67.0
CUT = f"baseline ran, fault:{OUTAGE} ran 7 s of 40 s, recovery did not run"
# (status, the stop event it leaves, headline word)
STATUSES = [
    ("aborted", "interrupt", "ABORTED"),
    ("crashed", OWNER_GONE, "CRASHED"),
    ("failed", None, "INCOMPLETE"),
    ("running", None, "INCOMPLETE"),
]


def stopped_run(path: Path, status: str, stop_kind: str | None) -> Path:
    """A clean run (every objective passes) stopped 7 s into its only fault window; the
    rollback closed the window half a second later and the load drained for 3 s more."""
    fault = {"name": OUTAGE, "start": 60, "end": STOP_S + 0.5, "error_ratio": 0.0}
    # 60 requests a second without an error: enough to show errors <= 0.1% (default spec)
    run = make_run_dir(path, seed=11, duration_s=STOP_S + 3, rps=60, faults=[fault],
                       base_error_ratio=0, status=status)  # fmt: skip
    manifest = read_manifest(run)
    plan = {
        "t0": STARTED_AT,
        "duration_s": 120.0,
        "experiment": {"title": "t", "method": [PLANNED]},
    }
    manifest.model_copy(update=plan).write(run)
    if stop_kind is not None:
        event = {"t": STARTED_AT + STOP_S, "source": "harness", "kind": stop_kind,
                 "name": "SIGINT", "action": "instant", "detail": {"during": "load"}}  # fmt: skip
        with open(run / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
    return run


def views(run: Path) -> dict[str, str]:
    """What each view opens with."""
    html = (run / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    p = page(run)
    word = next(e for e in p.elements if e.get("class") == "word")["_text"].strip()
    phases = [e["_text"].strip() for e in p.elements if "data-phases-ran" in e]
    (summary_section,) = p.find(_tag="section", id="summary")
    junit = JUnitXml.fromfile(str(run / "junit.xml"))
    suite = next(s for s in junit if s.name == "run")
    case = next(c for c in suite if c.name == "run completed")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return {
        "html title": title.split(" · ")[0],
        "html verdict": word.upper() + " — " + " ".join(phases),
        "html headline": summary_section["data-headline"],
        "markdown": (run / "summary.md").read_text(encoding="utf-8").splitlines()[0],
        "junit": " ".join(r.message for r in case.result if isinstance(r, Failure)),
        "summary.json": summary["headline"],
    }


@pytest.mark.parametrize("status, stop_kind, word", STATUSES)
def test_every_view_headlines_how_the_run_ended(tmp_path, status, stop_kind, word):
    run = stopped_run(tmp_path / status, status, stop_kind)
    result = evaluate_run(run, load_spec("default"))
    write_result(run, result)
    # what was recorded would pass: the old headline was "PASS — score 100/100"
    assert result.recorded_verdict == "pass" and result.recorded_score == 100.0
    assert result.verdict == word.lower() and result.score is None
    assert exit_code(result) == 3
    render_run(run)
    seen = views(run)
    assert seen["html title"] == word, seen
    for view, text in seen.items():
        assert word in text and "PASS" not in text.upper() and "100" not in text, (view, text)
        if stop_kind is not None and view != "html title":  # stopped at 67 s: 7 s of 40 s
            assert CUT in text, (view, text)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == word.lower() and summary["score"] is None
    assert summary["incomplete"] is True and summary["status"] == status
    assert [p["state"] for p in summary["completion"]["phases"]][:2] == ["ran", "cut"]


def test_stopped_without_a_stop_event_is_cut_at_the_recorded_end(tmp_path):
    """A run that failed (no signal, no dead owner) stops where its records and events stop:
    the fault window closed at 67.5 s, the records end at 70 s."""
    run = stopped_run(tmp_path / "failed", "failed", None)
    render_run(run)
    headline = json.loads((run / "summary.json").read_text(encoding="utf-8"))["headline"]
    assert headline == (
        f"INCOMPLETE — baseline ran, fault:{OUTAGE} ran 7.5 s of 40 s, recovery ran 2.5 s of 20 s"
    )


def test_a_crash_after_the_evaluation_is_still_headlined_crashed(tmp_path):
    """slo.json written while the run looked complete (verdict pass), then the run's owner died
    while rendering: every view follows run.json's status, not slo.json's old verdict."""
    run = stopped_run(tmp_path / "late", "completed", None)
    evaluation = evaluate_run(run, load_spec("default"))
    assert evaluation.verdict == "pass" and exit_code(evaluation) == 0
    write_result(run, evaluation)
    read_manifest(run).model_copy(update={"status": "crashed"}).write(run)
    render_run(run)
    for view, text in views(run).items():
        assert "CRASHED" in text and "PASS" not in text.upper(), (view, text)
    assert json.loads((run / SLO_JSON).read_text())["verdict"] == "pass"  # as it was written


def test_a_run_stopped_before_the_load_says_so(tmp_path):
    run = tmp_path / "early"
    run.mkdir()
    manifest = {"id": "early", "status": "aborted", "started_at": STARTED_AT, "ended_at": None,
                "t0": None, "experiment": {"title": "t", "method": [PLANNED]}}  # fmt: skip
    write_json(run / RUN_JSON, manifest)
    (run / "events.jsonl").write_text("", encoding="utf-8")
    render_run(run)
    for view, text in views(run).items():
        if view != "html title":
            assert "ABORTED — the load never started" in text, (view, text)


def test_a_running_run_whose_owner_died_is_crashed_in_slo_json_and_every_view(tmp_path):
    """run.json still says running, but the process that owned the run is gone (kill -9):
    slo.json and every report call it crashed, not one ``incomplete`` and the other CRASHED."""
    run = stopped_run(tmp_path / "dead-owner", "running", None)
    owner = subprocess.Popen(["sleep", "30"])
    ref = ProcessRef.of(owner.pid)
    owner.kill()
    owner.wait(timeout=10)
    read_manifest(run).model_copy(update={"owner": ref}).write(run)
    result = evaluate_run(run, load_spec("default"))
    write_result(run, result)
    assert result.verdict == "crashed" and result.completion.status == "crashed"
    render_run(run)
    for view, text in views(run).items():
        assert "CRASHED" in text and "INCOMPLETE" not in text, (view, text)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "crashed" and summary["verdict"] == "crashed"
    assert summary["completion"] == result.completion.model_dump()
