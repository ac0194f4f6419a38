"""Reports rendered from recorded run directories: a passing run, a failing run (with a planted
``<script>``), an aborted run, a run without server metrics and a run never evaluated."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from test_reports_fixtures import (
    PLANTED,
    aborted_run,
    failing_run,
    hand_run,
    no_metrics_run,
    passing_run,
)
from typer.testing import CliRunner

from aichaos.harness.cli import app
from aichaos.reports.render import render_run
from aichaos.rundir import SLO_JSON, InputError

SECTIONS = (
    "summary",
    "phases",
    "objectives",
    "timeline",
    "latency",
    "tiers",
    "server",
    "errors",
    "journal",
    "comparison",
    "notes",
)
TIMELINE_PANELS = ("load", "ttft", "itl", "errors", "served", "breakers", "replicas")
SERVER_PANELS = (
    "server-running",
    "server-waiting",
    "server-kv_cache",
    "server-preemptions",
    "server-in_flight",
    "server-ttft",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reports")
    built = {"passing": passing_run(base / "passing")}
    built["failing"] = failing_run(base / "failing", baseline=built["passing"])
    built["aborted"] = aborted_run(base / "aborted")
    built["no_metrics"] = no_metrics_run(base / "no_metrics")
    built["hand"] = hand_run(base / "hand")
    unevaluated = base / "unevaluated"
    shutil.copytree(built["passing"], unevaluated)
    (unevaluated / SLO_JSON).unlink()
    built["unevaluated"] = unevaluated
    for run in built.values():
        paths = render_run(run)
        assert [p.name for p in paths] == ["report.html", "summary.md", "junit.xml", "summary.json"]
    return built


class Page(HTMLParser):
    """Ids, data attributes of each element, and the text of each element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.elements: list[dict[str, str]] = []
        self.scripts: list[dict[str, str]] = []
        self._stack: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"_tag": tag, "_text": "", **{k: v or "" for k, v in attrs}}
        if "id" in element:
            self.ids.add(element["id"])
        if tag == "script":
            self.scripts.append(element)
        self.elements.append(element)
        if tag not in ("br", "meta", "input", "img", "link"):
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()["_tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._stack:
            element["_text"] += data

    def find(self, **attrs: str) -> list[dict[str, str]]:
        return [e for e in self.elements if all(e.get(k) == v for k, v in attrs.items())]


def page(run: Path) -> Page:
    parser = Page()
    parser.feed((run / "report.html").read_text(encoding="utf-8"))
    return parser


def slo(run: Path) -> dict:
    return json.loads((run / SLO_JSON).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "name", ["passing", "failing", "aborted", "no_metrics", "hand", "unevaluated"]
)
def test_every_section_and_panel_is_present(runs: dict[str, Path], name: str) -> None:
    p = page(runs[name])
    for section in SECTIONS:
        assert section in p.ids, section
    for panel in (*TIMELINE_PANELS, *SERVER_PANELS, "cdf-ttft", "cdf-e2e"):
        assert f"panel-{panel}" in p.ids, panel
    # exactly the page's own three scripts: Plotly, the chart data, the page script
    assert len(p.scripts) == 3
    assert p.scripts[1].get("type") == "application/json"
    csp = p.find(_tag="meta", **{"http-equiv": "Content-Security-Policy"})[0]["content"]
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp


@pytest.mark.parametrize("name", ["passing", "failing", "aborted", "hand"])
def test_numbers_in_the_page_equal_slo_json(runs: dict[str, Path], name: str) -> None:
    run = runs[name]
    p, evaluation = page(run), slo(run)
    # an aborted run is never judged by its recorded objectives: no verdict of theirs, no score
    assert evaluation["verdict"] == {"passing": "pass", "aborted": "aborted"}.get(name, "fail")
    assert p.find(**{"data-verdict": evaluation["verdict"]})
    if name == "aborted":
        assert evaluation["score"] is None and not any("data-score" in e for e in p.elements)
    else:
        assert (
            float(p.find(**{"data-score": json.dumps(evaluation["score"])})[0]["data-score"])
            == (evaluation["score"])
        )
    for o in evaluation["objectives"]:
        rows = p.find(**{"data-objective-id": o["id"]})
        assert len(rows) == 1, o["id"]
        assert rows[0]["data-status"] == o["status"]
        cells = {
            e["data-field"]: e
            for e in p.elements
            if e.get("data-field") and e in _after(p, rows[0], 14)
        }
        if o["value"] is None:  # insufficient data: no number, a dash
            assert o["status"] == "insufficient_data"
            assert cells["value"]["data-value"] == "" and cells["value"]["_text"].strip() == "—"
            continue
        assert float(cells["value"]["data-value"]) == o["value"]
        assert float(cells["threshold"]["data-value"]) == o["threshold"]
        assert int(cells["samples"]["data-value"]) == o["samples"]
        assert cells["value"]["_text"].strip() == _expected_text(o["value"], o["unit"])
        assert cells["threshold"]["_text"].strip() == (
            f"{ {'<=': '≤', '>=': '≥'}[o['op']] } {_expected_text(o['threshold'], o['unit'])}"
        )
    for b in evaluation["budget"]["by_phase"]:
        row = p.find(**{"data-phase": b["phase"]})[0]
        cells = {e["data-field"]: e for e in _after(p, row, 12) if e.get("data-field")}
        for field in ("burn_rate", "budget_spent", "error_ratio"):
            assert _number(cells[field]["data-value"]) == b[field], (b["phase"], field)
    total = p.find(
        _tag="strong", **{"data-budget-total": json.dumps(evaluation["budget"]["spent_total"])}
    )
    assert total
    fired = [a for a in evaluation["alerts"] if a["time_to_detect_s"] is not None]
    assert fired or name != "hand"
    for alert in fired:
        row = p.find(**{"data-phase": alert["fault"]})[0]
        detect = next(e for e in _after(p, row, 12) if e.get("data-field") == "time_to_detect")
        assert float(detect["data-value"]) == alert["time_to_detect_s"]


def _number(attribute: str) -> float | None:
    """A ``data-value`` attribute back to the number (empty when slo.json held null)."""
    return None if attribute == "" else float(attribute)


def _after(p: Page, element: dict[str, str], n: int) -> list[dict[str, str]]:
    i = next(i for i, e in enumerate(p.elements) if e is element)
    return p.elements[i + 1 : i + 1 + n]


def _expected_text(value: float, unit: str) -> str:
    """Independently of reports.fmt: 3 significant digits, ms below a second, % for ratios."""
    if unit == "s":
        return f"{float(f'{value * 1000:.3g}'):g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "ratio":
        return f"{float(f'{value * 100:.3g}'):g} %"
    raise AssertionError(unit)


def test_planted_script_is_escaped(runs: dict[str, Path]) -> None:
    run = runs["failing"]
    html = (run / "report.html").read_text(encoding="utf-8")
    assert PLANTED not in html
    assert "window.__planted" in html  # it is shown, as text
    assert html.count("<script") == 3
    assert "&lt;/script&gt;&lt;script&gt;window.__planted = 1" in html
    p = page(run)
    data = p.scripts[1]["_text"]
    assert "</" not in data and "<" not in data
    assert json.loads(data)["figures"]  # still valid JSON
    # the error detail and the experiment title are shown as text
    details = [e["_text"] for e in p.elements if e.get("class") == "error-detail"]
    assert any(PLANTED in d for d in details)
    title = p.find(**{"data-fact": "Experiment"})[0]["_text"]
    assert "<script>window.__planted = 2</script>" in title
    assert "window.__planted" in p.find(**{"data-experiment-title": ""})[0]["_text"]
    markdown = (run / "summary.md").read_text(encoding="utf-8")
    assert "<script" not in markdown and "</script" not in markdown


def test_junit_has_one_case_per_objective_and_the_right_failures(runs: dict[str, Path]) -> None:
    run = runs["failing"]
    evaluation = slo(run)
    xml = JUnitXml.fromfile(str(run / "junit.xml"))
    cases = {}
    for suite in xml:
        for case in suite:
            cases[(suite.name, case.name)] = case
    expected_fail = set()
    for o in evaluation["objectives"]:
        name = o["objective"] + (f" [{o['tier']}]" if o["tier"] else "")
        case = cases.pop((o["phase"], name))
        kinds = {type(r) for r in case.result}
        if o["status"] == "fail":
            expected_fail.add((o["phase"], name))
            (failure,) = [r for r in case.result if isinstance(r, Failure)]
            assert f"value={o['value']}" in failure.message
            assert f"threshold={o['threshold']}" in failure.message
        elif o["status"] == "insufficient_data":
            assert kinds == {Skipped}
        else:
            assert not kinds
    assert expected_fail
    # what is left: the two run-level cases, passing for a completed evaluated run
    assert set(cases) == {("run", "run completed"), ("run", "run evaluated")}
    assert all(not c.result for c in cases.values())


def test_junit_marks_aborted_and_unevaluated_runs(runs: dict[str, Path]) -> None:
    aborted = JUnitXml.fromfile(str(runs["aborted"] / "junit.xml"))
    run_suite = next(s for s in aborted if s.name == "run")
    completed = next(c for c in run_suite if c.name == "run completed")
    assert any(isinstance(r, Failure) and "aborted" in r.message for r in completed.result)
    unevaluated = JUnitXml.fromfile(str(runs["unevaluated"] / "junit.xml"))
    (suite,) = list(unevaluated)
    evaluated = next(c for c in suite if c.name == "run evaluated")
    assert any(isinstance(r, Error) for r in evaluated.result)


def test_insufficient_data_is_skipped(tmp_path: Path, runs: dict[str, Path]) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["passing"], run)
    evaluation = slo(run)
    evaluation["objectives"][0].update({"status": "insufficient_data", "value": None, "ci": None})
    (run / SLO_JSON).write_text(json.dumps(evaluation), encoding="utf-8")
    render_run(run, ["junit", "html"])
    xml = JUnitXml.fromfile(str(run / "junit.xml"))
    skipped = [c for s in xml for c in s if any(isinstance(r, Skipped) for r in c.result)]
    assert len(skipped) == 1
    row = page(run).find(**{"data-objective-id": evaluation["objectives"][0]["id"]})[0]
    assert row["data-status"] == "insufficient_data"
    assert "insufficient data" in row["_text"]


def test_aborted_run_is_marked_incomplete(runs: dict[str, Path]) -> None:
    run = runs["aborted"]
    p = page(run)
    assert p.find(**{"data-banner": "incomplete"})
    assert p.find(**{"data-run-status": "aborted"})
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "still on at abort" in html  # the fault never ended
    assert "No journal.json" in html
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["incomplete"] is True and summary["status"] == "aborted"
    assert summary["faults"][0]["open"] is True
    assert "incomplete" in (run / "summary.md").read_text(encoding="utf-8")


def test_run_without_server_metrics_says_so_in_each_server_panel(runs: dict[str, Path]) -> None:
    p = page(runs["no_metrics"])
    for panel in (*SERVER_PANELS, "breakers"):
        (empty,) = p.find(**{"data-empty": panel})
        assert empty["_text"].strip() == "no server metrics"
    # the client-side timelines are still drawn
    assert "chart-ttft" in p.ids and "chart-load" in p.ids
    assert not p.find(**{"data-empty": "ttft"})


def test_unevaluated_run_renders_what_is_there(runs: dict[str, Path]) -> None:
    run = runs["unevaluated"]
    p = page(run)
    assert p.find(**{"data-banner": "not-evaluated"})
    assert p.find(**{"data-verdict": "not_evaluated"})
    assert "chart-ttft" in p.ids  # timelines from the records
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["evaluated"] is False and summary["verdict"] == "not_evaluated"
    assert "Not evaluated" in (run / "summary.md").read_text(encoding="utf-8")


def test_run_with_only_a_manifest_and_broken_events_renders(tmp_path: Path) -> None:
    """Aborted before the first request: what there is, and notes on what could not be read."""
    run = tmp_path / "early"
    run.mkdir()
    manifest = {"id": "early", "status": "aborted", "started_at": 1795000000.0, "ended_at": None}
    (run / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    lines = [
        json.dumps(
            {
                "t": 1795000001.0,
                "source": "experiments",
                "kind": "fault",
                "name": "outage",
                "action": "start",
                "detail": {},
            }
        ),
        json.dumps({"kind": "exit", "name": "llm-1"}),  # no time
        json.dumps([1, 2]),  # not an event
        '{"t": 17950',  # torn last line
    ]
    (run / "events.jsonl").write_text("\n".join(lines), encoding="utf-8")
    render_run(run)
    p = page(run)
    assert p.find(**{"data-banner": "incomplete"}) and p.find(**{"data-banner": "not-evaluated"})
    assert p.find(**{"data-empty": "load"})[0]["_text"].strip() == "no requests recorded"
    notes = " ".join(e["_text"] for e in p.elements if e["_tag"] == "li")
    assert "events without a time skipped" in notes
    assert notes.count("unreadable line skipped") == 2
    assert "still on at abort" in (run / "report.html").read_text(encoding="utf-8")
    junit = JUnitXml.fromfile(str(run / "junit.xml"))
    assert sum(1 for s in junit for c in s for r in c.result if isinstance(r, Failure | Error)) == 2


def test_summary_files_agree_with_slo_json(runs: dict[str, Path]) -> None:
    run = runs["failing"]
    evaluation = slo(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == evaluation["verdict"] == "fail"
    assert summary["score"] == evaluation["score"]
    assert summary["key_failed"] == evaluation["key_failed"]
    failed = {o["id"] for o in evaluation["objectives"] if o["status"] == "fail"}
    assert {o["id"] for o in summary["not_passing"] if o["status"] == "fail"} == failed
    markdown = (run / "summary.md").read_text(encoding="utf-8")
    assert markdown.startswith("## ❌ Game day: FAIL")
    at_risk = markdown.split("### Failed and at-risk objectives")[1].split("###")[0]
    assert len(re.findall(r"^\| ❌ fail", at_risk, re.M)) == len(failed)
    assert len(markdown.encode()) < 1024 * 1024  # GitHub's step summary limit


def test_report_cli_renders_and_rejects_bad_run_dirs(tmp_path: Path, runs: dict[str, Path]) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    shutil.copytree(runs["passing"], run)
    for name in ("report.html", "summary.md", "junit.xml", "summary.json"):
        (run / name).unlink()
    result = runner.invoke(app, ["report", str(run), "--format", "md,junit"])
    assert result.exit_code == 0, result.output
    assert (run / "summary.md").exists() and (run / "junit.xml").exists()
    assert not (run / "report.html").exists()
    (tmp_path / "empty").mkdir()
    for bad, args in (
        ("missing", [str(tmp_path / "nope")]),
        ("empty", [str(tmp_path / "empty")]),
        ("format", [str(run), "--format", "pdf"]),
    ):
        result = runner.invoke(app, ["report", *args])
        assert result.exit_code == 2, (bad, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "Traceback" not in result.output
    evaluation = slo(runs["passing"])
    evaluation["objectives"] = {"not": "a list"}
    (run / SLO_JSON).write_text(json.dumps(evaluation), encoding="utf-8")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "objectives" in result.output, result.output
    (run / SLO_JSON).write_text("{not json", encoding="utf-8")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "slo.json" in result.output
    with pytest.raises(InputError):
        render_run(run)


def test_an_interval_the_samples_could_not_bound_reads_unbounded() -> None:
    from aichaos.reports import fmt

    assert fmt.interval([0.23, None], "s") == "230 ms – unbounded"
    assert fmt.interval([0.001, 0.0124], "ratio") == "0.1 % – 1.24 %"
    assert fmt.interval(None, "s") == fmt.interval([None, None], "s") == fmt.DASH
