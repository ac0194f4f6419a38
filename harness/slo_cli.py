"""``aichaos slo check|list|show|validate|promote|history`` and ``aichaos compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from aichaos import exits
from aichaos.rundir import InputError, read_manifest

if TYPE_CHECKING:
    from aichaos.slo.result import Change, ChangePoint, History, HistorySeries, SloResult

app = typer.Typer(help="Evaluate runs against SLO specs; manage baselines.", no_args_is_help=True)


def _spec_for(run_dir: Path, ref: str | None):
    """The spec named on the command line, else the one the run resolved, else ``default``."""
    from aichaos.slo.spec import SloSpec, load_spec

    if ref:
        return load_spec(ref)
    try:
        manifest = read_manifest(run_dir)
    except InputError:
        manifest = None
    resolved = manifest.slo if manifest is not None else None
    if resolved is not None and resolved.get("objectives"):
        return SloSpec.from_dict(resolved, str(run_dir / "run.json") + ":slo")
    return load_spec("default")


def _value(value: float | None, unit: str) -> str:
    from aichaos.slo.evaluate import _fmt

    return _fmt(value, unit)


def print_table(result: SloResult) -> None:
    rows = result.objectives
    width = max([len(r.id) for r in rows] + [9])
    typer.echo(f"  {'objective':<{width}}  {'status':<17}  {'value':>10}  {'threshold':>10}")
    for r in rows:
        mark = "*" if r.key else " "
        value, threshold = _value(r.value, r.unit), _value(r.threshold, r.unit)
        line = f"{mark} {r.id:<{width}}  {r.status:<17}  {value:>10}  {threshold:>10}"
        typer.echo(line)
    spent = result.budget.spent_total if result.budget is not None else None
    budget = f"{100 * spent:.3g}%" if spent is not None else "-"
    score = f"{result.score:.1f}" if result.score is not None else "-"
    typer.echo(
        f"verdict: {result.verdict}  score: {score}  budget spent: {budget}"
        f"  requests: {result.requests}"
    )
    for a in result.alerts:
        if a.fault and a.time_to_detect_s is not None:
            typer.echo(f"alert {a.name} fired {a.time_to_detect_s:.0f} s into {a.fault}")
    comparison = result.comparison
    if comparison:
        worse = [c for c in comparison.changes if c.regression]
        typer.echo(
            f"regression vs {comparison.baseline}: {comparison.verdict}"
            + "".join(f"\n  {c.sli}@{c.phase}: {_change(c)}" for c in worse)
        )
    if result.history is not None:
        print_history_verdict(result.history)
    typer.echo("* key objective")
    for note in result.data_notes:
        typer.echo(f"note: {note}")


def _change(c: Change) -> str:
    if c.threshold_kind == "relative" and c.rel_change is not None:
        return f"{100 * c.rel_change:+.1f}% (p={c.p_value:.2g})"
    return f"{100 * (c.abs_change or 0.0):+.2f} pp (p={c.p_value:.2g})"


def print_history_verdict(history: History) -> None:
    """One line for the history, one more per series that regressed at the newest run."""
    typer.echo(
        f"history over {history.runs} runs of {history.baseline}: {history.verdict}"
        + "".join(
            f"\n  {s.id}: {_change_point(s, c)}"
            for s in history.series
            for c in s.change_points
            if c.regression
        )
    )


def print_history(history: History) -> None:
    """Each key series run by run, its change points marked, and the verdict."""
    for series in history.series:
        _print_series(series)
    typer.echo(
        f"history of {history.baseline}: {history.verdict} ({len(history.series)} key series over"
        f" {history.runs} runs; change points at p < {history.max_pvalue:g})"
    )
    for note in history.notes:
        typer.echo(f"note: {note}")


def _print_series(series: HistorySeries) -> None:
    from aichaos.reports.fmt import utc
    from aichaos.reports.trend import threshold_text

    typer.echo(f"{series.id}: a regression is {threshold_text(series)} at the newest run")
    width = max([len(p.run_id) for p in series.points] + [3])
    marks = {c.index: c for c in series.change_points}
    for i, point in enumerate(series.points):
        line = f"  {point.run_id:<{width}}  {utc(point.started_at):<23}  "
        line += f"{_value(point.value, series.unit):>10}"
        if i in marks:
            line += f"  <- change point {_change_point(series, marks[i])}"
        typer.echo(line)
    if series.missing:
        typer.echo(f"  no value in: {', '.join(series.missing)}")
    typer.echo(f"  verdict: {series.verdict.replace('_', ' ')}")


def _change_point(series: HistorySeries, c: ChangePoint) -> str:
    from aichaos.reports.trend import change_text

    shift = change_text(series, c)
    verdict = "REGRESSION" if c.regression else c.direction
    if c.direction == "worse" and not c.beyond_threshold:
        verdict += ", within the threshold"
    return f"{shift}, {verdict}"


@app.callback()
def _slo() -> None:
    """SLO specs, evaluation and baselines."""


@app.command()
def check(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to evaluate.")],
    slo: Annotated[str | None, typer.Option("--slo", help="Spec file or built-in name.")] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Baseline directory (or run) to compare against.")
    ] = None,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Prometheus for server-side (promql) objectives.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Write slo.json, print only the verdict.")] = False,
) -> None:
    """Evaluate RUN_DIR, write its slo.json; exit 0 pass/warn, 1 fail or regression (against the
    newest baseline run, or a change point at this run over the baseline history), 2 bad input,
    3 a run that did not complete (aborted, crashed or incomplete), 4 a key objective
    inconclusive."""
    from aichaos.slo.compare import with_baseline
    from aichaos.slo.evaluate import evaluate_run, exit_code, write_result
    from aichaos.slo.history import with_history

    spec = _spec_for(run_dir, slo)
    result = evaluate_run(run_dir, spec, prometheus_url=prometheus_url)
    if baseline is not None:
        result = with_baseline(result, baseline, spec)
        result = with_history(result, baseline, spec)
    path = write_result(run_dir, result)
    if quiet:
        typer.echo(result.verdict)
    else:
        print_table(result)
        typer.echo(f"wrote {path}")
    raise typer.Exit(exit_code(result))


@app.command("list")
def list_specs() -> None:
    """The built-in specs."""
    from aichaos.slo.spec import builtin_names, load_spec

    for name in builtin_names():
        spec = load_spec(name)
        typer.echo(f"{name:<12} {len(spec.objectives):>2} objectives  {spec.description}")


@app.command()
def show(ref: Annotated[str, typer.Argument(help="Spec file or built-in name.")]) -> None:
    """Print a spec as aichaos resolves it (defaults filled in)."""
    from aichaos.slo.spec import load_spec

    spec = load_spec(ref)
    typer.echo(yaml.safe_dump(spec.to_dict(), sort_keys=False).rstrip())


@app.command()
def validate(files: Annotated[list[str], typer.Argument(help="Spec files or names.")]) -> None:
    """Check specs; one line per bad file; exit 2 if any is bad."""
    from aichaos.slo.spec import load_spec

    bad = 0
    for ref in files:
        try:
            spec = load_spec(ref)
            typer.echo(f"{ref}: ok ({len(spec.objectives)} objectives)")
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            bad += 1
    raise typer.Exit(exits.BAD_INPUT if bad else exits.OK)


@app.command()
def promote(
    run_dir: Annotated[Path, typer.Argument(help="An evaluated run that passed.")],
    baseline: Annotated[Path, typer.Option(help="Baseline directory.")],
    keep: Annotated[int, typer.Option(help="Accepted runs to keep.")] = 10,
) -> None:
    """Accept RUN_DIR as the newest baseline run."""
    from aichaos.slo.baseline import promote as do_promote

    target = do_promote(run_dir, baseline, keep)
    typer.echo(f"promoted {run_dir} -> {target}")


@app.command()
def history(
    baseline: Annotated[Path, typer.Argument(help="Baseline directory (aichaos slo promote).")],
    run: Annotated[
        Path | None, typer.Option(help="An evaluated run, the newest point (else the newest kept).")
    ] = None,
    slo: Annotated[
        str | None, typer.Option("--slo", help="Spec (key objectives, regression thresholds).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the history as JSON.")] = False,
) -> None:
    """Change points of each key objective across BASELINE's kept runs (and RUN); exit 1 when
    one at the newest run makes it worse beyond the spec's regression threshold, 2 when there
    are too few runs."""
    from aichaos.slo.baseline import latest
    from aichaos.slo.history import history_of

    spec = _spec_for(run or latest(baseline) or baseline, slo)
    found = history_of(baseline, spec, run)
    if json_out:
        typer.echo(json.dumps(found.model_dump(mode="json"), indent=2))
    else:
        print_history(found)
    raise typer.Exit(exits.SLO_FAILED if found.verdict == "regression" else exits.OK)


def compare(
    base_run: Annotated[Path, typer.Argument(help="Baseline run directory.")],
    new_run: Annotated[Path, typer.Argument(help="New run directory.")],
    slo: Annotated[str | None, typer.Option("--slo", help="Spec (regression thresholds).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare NEW_RUN against BASE_RUN; exit 1 on a significant regression beyond its
    threshold."""
    from aichaos.slo.compare import compare_runs
    from aichaos.slo.spec import load_spec

    spec = load_spec(slo) if slo else _spec_for(new_run, None)
    result = compare_runs(base_run, new_run, spec)
    if json_out:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        for c in result.changes:
            flag = "REGRESSION" if c.regression else ("significant" if c.significant else "")
            typer.echo(
                f"{c.sli + '@' + c.phase:<40} {c.base:>10.4g} -> {c.new:<10.4g}"
                f" {_change(c):<24} {flag}"
            )
        typer.echo(f"verdict: {result.verdict}")
    raise typer.Exit(exits.SLO_FAILED if result.verdict == "fail" else exits.OK)


def register(root: typer.Typer) -> None:
    """Add ``slo`` and ``compare`` to the root command."""
    root.add_typer(app, name="slo")
    root.command("compare")(compare)
