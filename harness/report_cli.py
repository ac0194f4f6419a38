"""``aichaos report RUN_DIR [--format html,md,junit,json]``: (re-)render a run's reports.

Exit codes (DESIGN): 0 rendered; 2 bad input (not a run directory, unreadable run.json or
slo.json, unknown format), with one line on stderr and no traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .orphans import orphan_in


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (./runs/<run-id>).")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Comma-separated: html (report.html), md (summary.md), junit (junit.xml), "
            "json (summary.json).",
        ),
    ] = "html,md,junit,json",
) -> None:
    """Render report.html, summary.md, junit.xml and summary.json from a run directory,
    including an aborted or unevaluated one (marked as such)."""
    from aichaos.reports.render import render_run

    paths = render_run(run_dir, format.split(","))
    for path in paths:
        typer.echo(str(path))
    orphan = orphan_in(run_dir)
    if orphan is not None:  # the report says crashed; the stack it left still runs
        typer.echo(f"aichaos report: {orphan.describe()}; {orphan.remedy()}", err=True)
