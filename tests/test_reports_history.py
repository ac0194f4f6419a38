"""The baseline history in the CI views (``reports/markdown.py``, ``junit.py``,
``summary_json.py``): its verdict, a row or a test case per key series, a failure for a series
that regressed at the newest run; nothing of it when the run has no history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml
from test_history import TTFT, evaluated, history_store, noisy

from aichaos.reports.render import render_run
from aichaos.slo.evaluate import write_result
from aichaos.slo.history import with_history
from aichaos.slo.result import read_result
from aichaos.slo.spec import load_spec

SECTION = "### Trend over the baseline history"
KEY_SERIES = ["ttft-p95@all", "error-rate@all"]
# tonight's TTFT against eight nights around TTFT: 40% slower, 30% faster, as usual
TONIGHT = {"regression": TTFT * 1.4, "better": TTFT * 0.7, "flat": TTFT}


def reports(run: Path) -> dict[str, str]:
    render_run(run, ["md", "junit", "json"])
    names = {"md": "summary.md", "junit": "junit.xml", "json": "summary.json"}
    return {k: (run / name).read_text(encoding="utf-8") for k, name in names.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tonight's run three ways, each with the same history of eight nights as slo.json's
    ``history``, and the slower one again without a history."""
    root = tmp_path_factory.mktemp("reports-history")
    store = history_store(root, noisy(8, seed=11))
    spec = load_spec("default")
    built = {}
    for name, ttft in TONIGHT.items():
        run = evaluated(root / name, ttft, day=8)
        write_result(run, with_history(read_result(run), store, spec))
        built[name] = run
    # the same run id as the slower run's, so its reports can be compared line by line
    built["none"] = evaluated(root / "none" / "regression", TONIGHT["regression"], day=8)
    return built


def split_section(md: str) -> tuple[str, str]:
    """summary.md's history section (its facts line and its table or line), and the page
    without it."""
    before, after = md.split(SECTION)
    _, facts, body, rest = after.split("\n\n", 3)
    return f"{facts}\n\n{body}", before + rest


def history_cases(junit: str) -> dict[str, list]:
    suites = [s for s in JUnitXml.fromstring(junit) if s.name == "history"]
    return {c.name: list(c.result) for s in suites for c in s}


def test_a_regression_at_the_newest_run_in_each_ci_view(runs):
    out = reports(runs["regression"])
    section, _ = split_section(out["md"])
    assert "**Runs** 9" in section and "❌ regression" in section
    (row,) = [line for line in section.splitlines() if line.startswith("| `")]
    assert row.startswith("| `ttft-p95@all` | ❌ regression |") and "a rise beyond 10 %" in row
    cases = history_cases(out["junit"])
    assert list(cases) == KEY_SERIES and cases["error-rate@all"] == []
    (failure,) = cases["ttft-p95@all"]
    assert isinstance(failure, Failure) and "\n" not in failure.message
    assert failure.message.startswith("ttft-p95@all regressed at run regression: mean ")
    history = json.loads(out["json"])["history"]
    assert history["verdict"] == "regression" and history["runs"] == 9
    assert history["baseline"].endswith("baseline") and history["newest"] == "regression"
    assert history["series"] == [
        {"id": "ttft-p95@all", "verdict": "regression"},
        {"id": "error-rate@all", "verdict": "ok"},
    ]


@pytest.mark.parametrize("name", ["better", "flat"])
def test_no_regression_passes_in_each_ci_view(runs, name):
    out = reports(runs[name])
    section, _ = split_section(out["md"])
    assert "✅ ok" in section and "regression |" not in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    if name == "better":  # a change point at the newest run, for the better: shown, not failed
        assert [r.split(" | ")[:2] for r in rows] == [["| `ttft-p95@all`", "better"]]
    else:
        assert not rows and "No key series changed at the newest run." in section
    cases = history_cases(out["junit"])
    assert list(cases) == KEY_SERIES and all(r == [] for r in cases.values())
    history = json.loads(out["json"])["history"]
    assert history["verdict"] == "ok" and {s["verdict"] for s in history["series"]} == {"ok"}


def test_without_a_history_the_ci_views_are_as_before(runs):
    out = reports(runs["none"])
    assert SECTION not in out["md"] and history_cases(out["junit"]) == {}
    assert json.loads(out["json"])["history"] is None
    # the same run with a history: only the history's section and test suite are added
    _, rest = split_section(reports(runs["regression"])["md"])
    assert rest == out["md"].replace(str(runs["none"]), str(runs["regression"]))
