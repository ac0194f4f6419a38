"""``junit.xml``: one test case per objective and phase (and tier when scoped), one test suite
per phase, so CI systems list SLOs as tests. A failed objective is a ``<failure>`` whose message
carries the measured value and the threshold; an inconclusive objective or one without data
is ``<skipped>``; a warning passes with the warning in ``system-out``. A run that was not
evaluated, or did not finish, gets a test case saying so (a run that did not finish fails "run
completed" with the report's headline: ABORTED / CRASHED / INCOMPLETE and the phases that
ran), so a CI gate cannot pass on it by accident. A run checked against a baseline history
gets a ``history`` suite: a test case per key series, failing when it regressed at this run."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from aichaos.reports import fmt
from aichaos.reports.rundata import RunData
from aichaos.reports.trend import change_text, threshold_text
from aichaos.slo.result import History, HistorySeries, ObjectiveRow

# XML 1.0 forbids most control characters; error details from a server may hold any.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    return _XML_INVALID.sub("\ufffd", str(value))


def failure_message(o: ObjectiveRow) -> str:
    unit = o.unit
    where = o.phase + (f"/{o.tier}" if o.tier else "")
    return (
        f"{o.objective} @ {where}: measured {fmt.value(o.value, unit)}"
        f" (value={o.value}), threshold {fmt.op(o.op)}"
        f" {fmt.value(o.threshold, unit)}"
        f" (threshold={o.threshold}), 95% CI {fmt.interval(o.ci, unit)},"
        f" n={o.samples}"
    )


def render_junit(run: RunData) -> str:
    root = ET.Element("testsuites", name=_text(f"aichaos {run.run_id}"))
    run_suite = ET.SubElement(root, "testsuite", name="run")
    _case(
        run_suite,
        "run completed",
        "aichaos.run",
        failure=_not_completed(run),
    )
    _case(
        run_suite,
        "run evaluated",
        "aichaos.run",
        error=None if run.evaluated else "not evaluated: no slo.json in the run directory",
    )
    suites: dict[str, ET.Element] = {}
    for o in run.objectives:
        phase = o.phase
        if phase not in suites:
            suites[phase] = ET.SubElement(root, "testsuite", name=_text(phase))
        name = o.objective + (f" [{o.tier}]" if o.tier else "")
        status = o.status
        case = _case(
            suites[phase],
            name,
            f"aichaos.slo.{phase}",
            failure=failure_message(o) if status == "fail" else None,
            skipped=f"{status.replace('_', ' ')}: " + failure_message(o)
            if status in ("inconclusive", "insufficient_data")
            else None,
        )
        out = ET.SubElement(case, "system-out")
        prefix = "warn: " if status == "warn" else ""
        out.text = _text(prefix + (o.detail or failure_message(o)))
    if run.slo is not None and run.slo.history is not None:
        _history_suite(root, run.slo.history)
    for suite in root.iter("testsuite"):
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            suite.set(attr, str(sum(1 for c in cases if c.find(tag) is not None)))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def history_message(series: HistorySeries) -> str | None:
    """One line for a series that regressed at the newest run; None when it did not."""
    c = next((c for c in series.change_points if c.regression), None)
    if c is None:
        return None
    means = f"{fmt.value(c.before, series.unit)} → {fmt.value(c.after, series.unit)}"
    return (
        f"{series.id} regressed at run {c.run_id}: mean {means}, {change_text(series, c)};"
        f" a regression is {threshold_text(series)}"
    )


def _history_suite(root: ET.Element, history: History) -> None:
    """A test case per key series of the baseline history; one with too few runs is skipped."""
    suite = ET.SubElement(root, "testsuite", name="history")
    for series in history.series:
        _case(
            suite,
            series.id,
            "aichaos.history",
            failure=history_message(series),
            skipped=f"too few runs: {len(series.points)} of {history.min_points}"
            if series.verdict == "too_few_runs"
            else None,
        )


def _not_completed(run: RunData) -> str | None:
    if run.completion is not None:
        return f"{run.headline} (run {run.status}: results incomplete)"
    return None if run.status == "completed" else f"run {run.status}: results incomplete"


def _case(
    suite: ET.Element,
    name: str,
    classname: str,
    failure: str | None = None,
    error: str | None = None,
    skipped: str | None = None,
) -> ET.Element:
    case = ET.SubElement(suite, "testcase", name=_text(name), classname=_text(classname))
    case.set("time", "0")
    if failure:
        element = ET.SubElement(case, "failure", message=_text(failure), type="slo")
        element.text = _text(failure)
    if error:
        ET.SubElement(case, "error", message=_text(error), type="run")
    if skipped:
        ET.SubElement(case, "skipped", message=_text(skipped))
    return case
