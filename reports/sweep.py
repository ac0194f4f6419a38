"""``sweep.html``: what a sweep found, on one self-contained page.

Each key SLI against the offered rate, one line per condition (no fault, then each fault held
through the steps), the SLO's threshold drawn across and each condition's capacity (its knee)
marked; the completed rate against the offered one (where the stack saturates); the capacity
statements; every step with a link to its own game-day report. Same page machinery as
``report.html`` (``reports/html.py``): inline assets, chart data as escaped JSON, a CSP that
allows only the page's own scripts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aichaos
from aichaos.reports import charts, fmt
from aichaos.reports.html import _environment, json_for_script, page_assets
from aichaos.sweepfile import Condition, SweepResult

SWEEP_HTML = "sweep.html"


def render_sweep(directory: Path, result: SweepResult) -> Path:
    """Write ``sweep.html`` into the sweep's directory; its path."""
    path = directory / SWEEP_HTML
    path.write_text(sweep_html(result, directory), encoding="utf-8")
    return path


def sweep_html(result: SweepResult, directory: Path) -> str:
    panels = [*sli_panels(result), achieved_panel(result)]
    figures = {p["id"]: p["figure"] for p in panels if "figure" in p}
    conditions = [
        {
            "name": c.name,
            "capacity": c.capacity_text(),
            "headroom": result.headroom(c) if c is not result.conditions[0] else None,
            "stopped": c.stopped_because,
            "steps": [_step_row(s, directory) for s in c.by_rate()],
        }
        for c in result.conditions
    ]
    context = {
        "result": result,
        "statements": result.statements(),
        "conditions": conditions,
        "panels": panels,
        "chart_json": json_for_script({"figures": figures}),
        **page_assets(),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "aichaos_version": aichaos.__version__,
    }
    return _environment().get_template("sweep.html.j2").render(context)


def _step_row(step: Any, directory: Path) -> dict[str, Any]:
    run_dir = Path(step.run_dir)
    try:
        link = (run_dir / "report.html").relative_to(directory).as_posix()
    except ValueError:
        link = (run_dir / "report.html").as_posix()
    state = "holds" if not step.broken else ("saturated" if step.saturated else "broken")
    return {
        "offered": step.offered_rps,
        "achieved": step.achieved_rps,
        "requests": step.requests,
        "errors": step.errors,
        "verdict": step.verdict,
        "state": state,
        "slis": [(p.id, fmt.value(p.value, p.unit), p.status) for p in step.slis],
        "link": link,
    }


def sli_panels(result: SweepResult) -> list[dict[str, Any]]:
    """One chart per key objective: its value against the offered rate, per condition."""
    ids: list[str] = []
    for c in result.conditions:
        for s in c.steps:
            ids += [p.id for p in s.slis if p.id not in ids]
    return [_sli_panel(result, i, sli_id) for i, sli_id in enumerate(ids)]


def _sli_panel(result: SweepResult, index: int, sli_id: str) -> dict[str, Any]:
    traces, shapes, annotations = [], [], []
    threshold, unit = None, ""
    for n, c in enumerate(result.conditions):
        points = [(s.offered_rps, p) for s in c.by_rate() for p in s.slis if p.id == sli_id]
        if not points:
            continue
        threshold, unit = points[0][1].threshold, points[0][1].unit
        color = charts.PALETTE[n % len(charts.PALETTE)]
        values = [p.value for _, p in points]
        trace = charts.line_trace([x for x, _ in points], values, c.name, color)
        trace["mode"] = "lines+markers"
        traces.append(trace)
        shapes_, notes = _knee(c, color)
        shapes += shapes_
        annotations += notes
    panel: dict[str, Any] = {"id": f"sweep-{index}", "title": sli_id,
                             "note": "against the offered rate; dashed: each condition's "
                                     "capacity; grey: the objective's threshold"}  # fmt: skip
    if not traces:
        panel["empty"] = "no value"
        return panel
    layout = charts.plot_layout(y_title=unit, x_title="offered rate (requests/s)")
    layout["hovermode"] = "closest"
    if unit == "s":  # past the knee latencies grow by orders of magnitude
        ticks = charts.LATENCY_TICKS
        layout["yaxis"].update({"type": "log", "tickvals": ticks,
                                "ticktext": [charts._latency_label(v) for v in ticks]})  # fmt: skip
    if threshold is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y",
                       "y0": threshold, "y1": threshold,
                       "line": {"color": "#7b8794", "width": 1.2, "dash": "dot"}})  # fmt: skip
    layout["shapes"], layout["annotations"] = shapes, annotations
    panel["figure"] = {"data": traces, "layout": layout}
    return panel


def _knee(c: Condition, color: str) -> tuple[list[dict], list[dict]]:
    """A dashed vertical line at the condition's capacity, labelled."""
    if c.capacity_rps is None:
        return [], []
    x = c.capacity_rps
    line = {"type": "line", "xref": "x", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
            "line": {"color": color, "width": 1.4, "dash": "dash"}}  # fmt: skip
    note = {"xref": "x", "x": x, "yref": "paper", "y": 1, "yanchor": "bottom",
            "text": f"{c.name}: {x:g}/s", "showarrow": False,
            "font": {"size": 11, "color": color}}  # fmt: skip
    return [line], [note]


def achieved_panel(result: SweepResult) -> dict[str, Any]:
    """Completed against offered: on the diagonal the stack keeps up; below, it saturates."""
    traces = []
    top = 0.0
    for n, c in enumerate(result.conditions):
        steps = c.by_rate()
        if not steps:
            continue
        color = charts.PALETTE[n % len(charts.PALETTE)]
        x = [s.offered_rps for s in steps]
        trace = charts.line_trace(x, [s.achieved_rps for s in steps], c.name, color)
        trace["mode"] = "lines+markers"
        traces.append(trace)
        top = max(top, *x)
    panel: dict[str, Any] = {"id": "sweep-achieved", "title": "completed rate",
                             "note": "requests completed per second against the offered rate; "
                                     "dotted: keeping up"}  # fmt: skip
    if not traces:
        panel["empty"] = "no step ran"
        return panel
    traces.append(charts.line_trace([0, top], [0, top], "offered", "#9aa5b1", dash="dot"))
    layout = charts.plot_layout(y_title="requests/s", x_title="offered rate (requests/s)")
    layout["hovermode"] = "closest"
    panel["figure"] = {"data": traces, "layout": layout}
    return panel
