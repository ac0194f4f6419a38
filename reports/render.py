"""Render a run directory's reports: ``render_run(run_dir, formats)`` writes ``report.html``,
``summary.md``, ``junit.xml`` and ``summary.json`` next to the run's data and returns their
paths. It renders what is there: an aborted run is marked incomplete, a run without slo.json
says it was not evaluated."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from aichaos.reports.html import render_html
from aichaos.reports.junit import render_junit
from aichaos.reports.markdown import render_markdown
from aichaos.reports.rundata import RunData, load_run
from aichaos.reports.summary_json import build_summary
from aichaos.rundir import JUNIT_XML, REPORT_HTML, SUMMARY_JSON, SUMMARY_MD, InputError


def _summary(run: RunData) -> str:
    return json.dumps(build_summary(run), indent=2, default=str) + "\n"


# format name -> (file name, renderer)
RENDERERS: dict[str, tuple[str, Callable[[RunData], str]]] = {
    "html": (REPORT_HTML, render_html),
    "md": (SUMMARY_MD, render_markdown),
    "junit": (JUNIT_XML, render_junit),
    "json": (SUMMARY_JSON, _summary),
}
FORMATS = tuple(RENDERERS)


def check_formats(formats: Sequence[str]) -> list[str]:
    chosen = [f.strip() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in RENDERERS]
    if unknown or not chosen:
        raise InputError("--format", "format", f"some of {','.join(FORMATS)}", ",".join(unknown))
    return list(dict.fromkeys(chosen))


def render_run(run_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the chosen reports into ``run_dir``; returns their paths in the order asked."""
    chosen = check_formats(formats)
    run = load_run(Path(run_dir))
    paths = []
    for name in chosen:
        file_name, renderer = RENDERERS[name]
        path = run.run_dir / file_name
        text = renderer(run)
        # through a temporary file, so a reader never sees half a report
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths
