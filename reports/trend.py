"""The baseline history in the report: each key objective's trend across the kept runs, this
run last, with the change points slo found marked on it (``slo.history``; nothing is computed
here). A panel per series has the shape of the page's other panels (``charts``), so the
page's script draws it; the table beside it says the same in words and data attributes."""

from __future__ import annotations

from typing import Any

from aichaos.reports import fmt
from aichaos.reports.charts import GRID, PALETTE, line_trace, plot_layout
from aichaos.slo.result import ChangePoint, History, HistorySeries

DIRECTION_COLORS = {"worse": "#dc2626", "better": "#16a34a"}
DIRECTION_SYMBOLS = {"worse": "triangle-up", "better": "triangle-down"}
Y_TITLES = {"s": "seconds", "ratio": "share of requests"}


def trend_panels(history: History) -> list[dict[str, Any]]:
    """One panel per key series: ``{id, series, title, note, figure | empty}``."""
    return [_panel(i, series) for i, series in enumerate(history.series)]


def trend_rows(history: History) -> list[dict[str, Any]]:
    """Per series: its newest value, the threshold, its change points in words, its verdict."""
    rows = []
    for series in history.series:
        newest = series.points[-1] if series.points else None
        rows.append(
            {
                "id": series.id,
                "runs": len(series.points),
                "newest": newest.value if newest is not None else None,
                "newest_run": newest.run_id if newest is not None else None,
                "unit": series.unit,
                "threshold": threshold_text(series),
                "change_points": [
                    {
                        "run_id": c.run_id,
                        "direction": c.direction,
                        "change": change_text(series, c),
                        "p_value": c.p_value,
                        "regression": c.regression,
                        "beyond_threshold": c.beyond_threshold,
                    }
                    for c in series.change_points
                ],
                "missing": series.missing,
                "verdict": series.verdict,
            }
        )
    return rows


def _panel(i: int, series: HistorySeries) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": f"trend-{i}",
        "series": series.id,
        "title": series.id,
        "note": f"a regression: {threshold_text(series)} at the newest run; "
        f"change points: {len(series.change_points) or 'none'}",
    }
    if not series.points:
        panel["empty"] = "no kept run has a value for this objective"
        return panel
    runs = [p.run_id for p in series.points]
    values = [p.value for p in series.points]
    line = line_trace(runs, values, "value", PALETTE[0])
    line.update(
        {
            "mode": "lines+markers",
            "customdata": [fmt.utc(p.started_at) for p in series.points],
            "hovertemplate": "%{x}<br>%{customdata}<br>%{y:.4g}<extra></extra>",
        }
    )
    traces = [line, _regimes(series, runs)]
    traces += [_marks(series, runs, direction) for direction in DIRECTION_COLORS]
    layout = plot_layout(y_title=Y_TITLES.get(series.unit, series.unit), x_title="accepted runs")
    layout["xaxis"].update({"type": "category", "gridcolor": GRID})
    if series.unit == "ratio":
        layout["yaxis"]["tickformat"] = ".2%"
    layout["hovermode"] = "closest"
    layout["shapes"] = [_boundary(c) for c in series.change_points]
    panel["figure"] = {"data": [t for t in traces if t["x"]], "layout": layout}
    return panel


def _regimes(series: HistorySeries, runs: list[str]) -> dict[str, Any]:
    """The mean of each regime between change points, as slo's change points give them: a
    dotted level from a regime's first run to its last, gaps between regimes."""
    cuts = [c.index for c in series.change_points]
    means = [c.before for c in series.change_points]
    means.append(series.change_points[-1].after if series.change_points else None)
    x: list[str | None] = []
    y: list[float | None] = []
    for start, end, mean in zip([0, *cuts], [*cuts, len(runs)], means, strict=True):
        if mean is None:
            continue
        x += [runs[start], runs[end - 1], None]
        y += [mean, mean, None]
    return line_trace(x, y, "regime mean", "#64748b", dash="dot")


def _marks(series: HistorySeries, runs: list[str], direction: str) -> dict[str, Any]:
    marked = [c for c in series.change_points if c.direction == direction]
    return {
        "type": "scatter",
        "mode": "markers",
        "name": f"change point ({direction})",
        "x": [runs[c.index] for c in marked],
        "y": [series.points[c.index].value for c in marked],
        "text": [change_text(series, c) + (" · regression" * c.regression) for c in marked],
        "marker": {
            "symbol": DIRECTION_SYMBOLS[direction],
            "size": 14,
            "color": DIRECTION_COLORS[direction],
            "line": {"width": 1, "color": "#ffffff"},
        },
        "hovertemplate": "change point at %{x}<br>%{text}<extra></extra>",
    }


def _boundary(c: ChangePoint) -> dict[str, Any]:
    """A dashed line just before the change point's run (category positions are indices)."""
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": c.index - 0.5,
        "x1": c.index - 0.5,
        "y0": 0,
        "y1": 1,
        "line": {"width": 1.5, "color": DIRECTION_COLORS[c.direction], "dash": "dash"},
        "layer": "below",
    }


def change_text(series: HistorySeries, c: ChangePoint) -> str:
    """The shift as the gate judges it, relative or in percentage points for a ratio, with its
    p-value: "+41.3 % (p < 0.0001)", "+0.2 pp (p = 0.0004)"."""
    if series.threshold_kind == "relative" and c.rel_change is not None:
        text = fmt.change(c.rel_change)
    else:
        text = ("+" if c.abs_change > 0 else "") + f"{fmt.sig(100 * c.abs_change)} pp"
    p_value = fmt.p_value(c.p_value)
    return f"{text} (p {p_value})" if p_value.startswith("<") else f"{text} (p = {p_value})"


def threshold_text(series: HistorySeries) -> str:
    """What a regression of the series is: "a rise beyond 10 %", "a fall beyond 0.5 pp"."""
    worse = "a rise" if series.op in ("<=", "<") else "a fall"
    if series.threshold_kind == "relative":
        return f"{worse} beyond {fmt.percent(series.threshold)}"
    return f"{worse} beyond {fmt.sig(100 * series.threshold)} pp"
