"""Plotly figures (plain dicts: ``data`` and ``layout``) for the report, from the chart series of
``aichaos.slo.series``. Every timeline shares one x axis (seconds since the run started), shades
each fault window in red with its name, and the warm-up in grey, so a reviewer sees at once which
fault a spike belongs to. The page's script links their zoom."""

from __future__ import annotations

from typing import Any

FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
GRID = "#e8ebef"
INK = "#1f2933"
FAULT_FILL = "rgba(214, 40, 40, 0.10)"
FAULT_LINE = "rgba(214, 40, 40, 0.55)"
WARMUP_FILL = "rgba(120, 130, 140, 0.10)"
PALETTE = (
    "#2563eb",
    "#f59e0b",
    "#10b981",
    "#8b5cf6",
    "#ef4444",
    "#0ea5e9",
    "#d946ef",
    "#84cc16",
    "#64748b",
    "#f97316",
)
SERVED_COLORS = {
    "fallback": "#f59e0b",
    "cache": "#10b981",
    "gateway": "#64748b",
    "unknown": "#cbd2d9",
}
# replicas in cool colours, so the warm fallback and green cache stand out beside them
REPLICA_COLORS = ("#2563eb", "#7c3aed", "#0891b2", "#4f46e5", "#0d9488", "#1e40af", "#6d28d9")
# CDF axis ticks: latencies read as 1 ms, 20 ms, 500 ms, 2 s
LATENCY_TICKS = [m * 10.0**e for e in range(-3, 3) for m in (1, 2, 5)]
ERROR_COLORS = {
    "http_5xx": "#dc2626",
    "http_429": "#f59e0b",
    "http_4xx": "#a855f7",
    "timeout": "#7c2d12",
    "connect": "#0f766e",
    "reset": "#db2777",
    "stream_error": "#2563eb",
    "incomplete_stream": "#64748b",
}
MARK_STYLE = {
    "exit": ("x", "#dc2626"),
    "kill": ("x-thin", "#7f1d1d"),
    "restart": ("triangle-up", "#16a34a"),
}
BREAKER_TICKS = {"tickvals": [0, 1, 2], "ticktext": ["closed", "half-open", "open"]}
NO_SERVER_METRICS = "no server metrics"


def timeline_figures(series: dict[str, Any]) -> list[dict[str, Any]]:
    """The timeline panels in page order; each is ``{id, title, note, figure | empty}``."""
    x = series["x"]
    ttft, itl = series["ttft"], series["itl"]
    server = series.get("server")
    panels = [
        _panel(
            "load",
            "Requests sent vs scheduled",
            "per second; a gap between them is client-side queueing (coordinated omission)",
            [
                # scheduled drawn last, dashed, so it shows where it parts from sent
                line_trace(x, series["requests"]["sent"], "sent", PALETTE[0]),
                line_trace(x, series["requests"]["scheduled"], "scheduled", INK, dash="dot"),
            ],
            series,
            y_title="requests/s",
            empty_text="no requests recorded",
        )
        if any(series["requests"]["scheduled"]) or any(series["requests"]["sent"])
        else _empty("load", "Requests sent vs scheduled", "no requests recorded"),
        _panel(
            "ttft",
            "Time to first token",
            "client-side percentiles per interval",
            [
                line_trace(x, ttft["p50"], "p50", PALETTE[2]),
                line_trace(x, ttft["p95"], "p95", PALETTE[1]),
                line_trace(x, ttft["p99"], "p99", PALETTE[4]),
            ],
            series,
            y_title="seconds",
            empty_text="no TTFT samples",
        ),
        _panel(
            "itl",
            "Inter-token latency",
            "pooled gaps per interval"
            + (
                f"; every {itl['sampled_every']}th request sampled"
                if itl.get("sampled_every", 1) > 1
                else ""
            ),
            [
                line_trace(x, itl["p50"], "p50", PALETTE[2]),
                line_trace(x, itl["p99"], "p99", PALETTE[4]),
            ],
            series,
            y_title="seconds",
            empty_text="no inter-token gaps recorded",
        ),
        _errors_panel(series),
        _served_panel(series),
    ]
    if server is None:
        panels.append(_empty("breakers", "Circuit breakers", NO_SERVER_METRICS))
    else:
        traces = [
            line_trace(s["x"], s["y"], name, PALETTE[i % len(PALETTE)], shape="hv")
            for i, (name, s) in enumerate(server.get("breakers", {}).items())
        ]
        panels.append(
            _panel(
                "breakers",
                "Circuit breakers",
                "gateway breaker state per dependency (worst state in each interval)",
                traces,
                series,
                y_extra={**BREAKER_TICKS, "range": [-0.2, 2.2]},
                empty_text="no breaker series in metrics.parquet",
            )
        )
    panels.append(_marks_panel(series))
    return panels


def server_figures(series: dict[str, Any]) -> list[dict[str, Any]]:
    """Server-side panels from metrics.parquet; each says so when the run has none."""
    specs = (
        ("running", "Running requests", "vllm:num_requests_running", "per replica", "requests"),
        ("waiting", "Waiting requests", "vllm:num_requests_waiting", "per replica", "requests"),
        ("kv_cache", "KV-cache usage", "vllm:kv_cache_usage_perc", "per replica", "share"),
        (
            "preemptions",
            "Preemptions",
            "vllm:num_preemptions_total",
            "increase per second",
            "per second",
        ),
        (
            "in_flight",
            "Gateway in flight",
            "gateway_in_flight",
            "requests in the gateway",
            "requests",
        ),
    )
    server = series.get("server")
    panels = []
    for key, title, metric, how, y_title in specs:
        note = f"{metric}, {how}"
        if server is None:
            panels.append(_empty(f"server-{key}", title, NO_SERVER_METRICS))
            continue
        traces = [
            line_trace(s["x"], s["y"], name, PALETTE[i % len(PALETTE)])
            for i, (name, s) in enumerate(server.get(key, {}).items())
        ]
        y_extra = {"tickformat": ".0%"} if key == "kv_cache" else {}
        panels.append(
            _panel(
                f"server-{key}",
                title,
                note,
                traces,
                series,
                y_title=y_title,
                y_extra=y_extra,
                empty_text=f"no {metric} series in metrics.parquet",
            )
        )
    if server is None:
        panels.append(_empty("server-ttft", "TTFT p95: server vs client", NO_SERVER_METRICS))
    else:
        traces = [
            line_trace(s["x"], s["y"], f"server {name}", PALETTE[i % len(PALETTE)])
            for i, (name, s) in enumerate(server.get("ttft_p95", {}).items())
        ]
        if traces:
            traces.append(line_trace(series["x"], series["ttft"]["p95"], "client", INK, dash="dot"))
        panels.append(
            _panel(
                "server-ttft",
                "TTFT p95: server vs client",
                "Prometheus histogram quantile beside the client's measurement; the gap is time "
                "spent in the gateway, retrieval and the network",
                traces,
                series,
                y_title="seconds",
                empty_text="no vllm:time_to_first_token_seconds series in metrics.parquet",
            )
        )
    return panels


def cdf_figures(series: dict[str, Any]) -> list[dict[str, Any]]:
    """Latency CDFs, one line per phase, on a log axis so the tail stays readable."""
    panels = []
    for metric, title in (("ttft", "TTFT distribution"), ("e2e", "End-to-end latency")):
        traces = []
        for i, (phase, cdfs) in enumerate(series.get("cdf", {}).items()):
            cdf = cdfs.get(metric) or {}
            pairs = [
                (x, y)
                for x, y in zip(cdf.get("x", []), cdf.get("y", []), strict=False)
                if x and x > 0
            ]
            if not pairs:
                continue
            xs, ys = zip(*pairs, strict=True)
            trace = line_trace(list(xs), list(ys), f"{phase} (n={cdf['count']})", _phase_color(i))
            trace["hovertemplate"] = "%{x:.3s}s at p%{customdata}<extra>%{fullData.name}</extra>"
            trace["customdata"] = [f"{y * 100:.4g}" for y in ys]
            traces.append(trace)
        layout = plot_layout(y_title="share of requests", x_title="latency (log scale)")
        layout["xaxis"].update(
            {
                "type": "log",
                "tickvals": LATENCY_TICKS,
                "ticktext": [_latency_label(v) for v in LATENCY_TICKS],
            }
        )
        layout["legend"] = {
            "x": 0.01,
            "y": 0.99,
            "xanchor": "left",
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.85)",
            "bordercolor": GRID,
            "borderwidth": 1,
        }
        layout["height"] = 320
        layout["yaxis"].update({"tickformat": ".0%", "range": [0, 1.02]})
        layout["hovermode"] = "closest"
        panel = {"id": f"cdf-{metric}", "title": title, "note": "CDF per phase"}
        if traces:
            panel["figure"] = {"data": traces, "layout": layout}
        else:
            panel["empty"] = "no latency samples"
        panels.append(panel)
    return panels


def _latency_label(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _phase_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _errors_panel(series: dict[str, Any]) -> dict[str, Any]:
    traces = []
    for i, (kind, values) in enumerate(series["errors"].items()):
        trace = {
            "type": "bar",
            "x": series["x"],
            "y": values,
            "name": kind,
            "marker": {"color": ERROR_COLORS.get(kind, PALETTE[i % len(PALETTE)])},
            "hovertemplate": "%{y:.3g}/s",
        }
        traces.append(trace)
    panel = _panel(
        "errors",
        "Errors by kind",
        "per second, by the client's error kind",
        traces,
        series,
        y_title="errors/s",
        empty_text="no errors in this run",
    )
    if "figure" in panel:
        panel["figure"]["layout"].update({"barmode": "stack", "bargap": 0})
    return panel


def _served_panel(series: dict[str, Any]) -> dict[str, Any]:
    traces = []
    replicas = 0
    for who, values in series["served"].items():
        color = SERVED_COLORS.get(who)
        if color is None:
            color = REPLICA_COLORS[replicas % len(REPLICA_COLORS)]
            replicas += 1
        trace = line_trace(series["x"], values, who, color)
        trace.update({"stackgroup": "served", "line": {"width": 0.5, "color": color}})
        traces.append(trace)
    if traces and any(v for v in series["degraded"]):
        traces.append(line_trace(series["x"], series["degraded"], "degraded", INK, dash="dot"))
    panel = _panel(
        "served",
        "Who served",
        "successful requests per second by who answered (replicas, fallback, cache); "
        "dotted: answers marked degraded",
        traces,
        series,
        y_title="requests/s",
        empty_text="no successful requests",
    )
    if "figure" in panel:
        panel["figure"]["layout"]["legend"]["traceorder"] = "normal"
    return panel


def _marks_panel(series: dict[str, Any]) -> dict[str, Any]:
    traces = []
    for kind, (symbol, color) in MARK_STYLE.items():
        marks = [m for m in series.get("marks", []) if m["kind"] == kind]
        if not marks:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": kind,
                "x": [m["t"] for m in marks],
                "y": [m["name"] for m in marks],
                "text": [m["detail"] for m in marks],
                "marker": {"symbol": symbol, "size": 12, "color": color, "line": {"width": 2}},
                "hovertemplate": f"{kind} %{{y}} at %{{x:.1f}} s<br>%{{text}}<extra></extra>",
            }
        )
    panel = _panel(
        "replicas",
        "Replica exits and restarts",
        "supervisor events: exits, kills and restarts of each service",
        traces,
        series,
        empty_text="no replica exits or restarts",
    )
    if "figure" in panel:
        layout = panel["figure"]["layout"]
        layout["yaxis"] = {"type": "category", "gridcolor": GRID, "automargin": True}
        layout["hovermode"] = "closest"
        layout["height"] = 180 + 18 * len({m["name"] for m in series.get("marks", [])})
    return panel


def _panel(
    key: str,
    title: str,
    note: str,
    traces: list[dict[str, Any]],
    series: dict[str, Any],
    y_title: str = "",
    y_extra: dict[str, Any] | None = None,
    empty_text: str = "no data",
) -> dict[str, Any]:
    panel: dict[str, Any] = {"id": key, "title": title, "note": note, "timeline": True}
    if not traces or not any(any(v is not None for v in t.get("y", [])) for t in traces):
        panel["empty"] = empty_text
        return panel
    layout = plot_layout(y_title=y_title, x_title="seconds since start")
    layout["xaxis"]["range"] = [0, series["duration_s"]]
    layout["yaxis"].update(y_extra or {})
    shapes, annotations = _windows(series)
    layout["shapes"], layout["annotations"] = shapes, annotations
    panel["figure"] = {"data": traces, "layout": layout}
    return panel


def _empty(key: str, title: str, text: str) -> dict[str, Any]:
    return {"id": key, "title": title, "note": "", "empty": text}


def plot_layout(y_title: str, x_title: str) -> dict[str, Any]:
    return {
        "height": 260,
        "margin": {"l": 64, "r": 24, "t": 30, "b": 42},
        "font": {"family": FONT, "size": 12, "color": INK},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hovermode": "x unified",
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": {
            "title": {"text": x_title, "standoff": 6},
            "gridcolor": GRID,
            "zeroline": False,
            "linecolor": "#cbd2d9",
        },
        "yaxis": {
            "title": {"text": y_title},
            "gridcolor": GRID,
            "zeroline": False,
            "rangemode": "tozero",
            "linecolor": "#cbd2d9",
        },
    }


def _windows(series: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    shapes, annotations = [], []
    warmup = series.get("warmup")
    if warmup:
        shapes.append(_rect(warmup[0], warmup[1], WARMUP_FILL, "rgba(0,0,0,0)"))
    for i, fault in enumerate(series.get("faults", [])):
        shapes.append(_rect(fault["start"], fault["end"], FAULT_FILL, FAULT_LINE))
        label = fault["name"] + (" (still on at abort)" if fault.get("open") else "")
        annotations.append(
            {
                "x": fault["start"],
                "xref": "x",
                "y": 0.98 - 0.12 * (i % 3),  # stagger labels of neighbouring faults
                "yref": "paper",
                "text": label,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": "#b91c1c"},
                "bgcolor": "rgba(255,255,255,0.7)",
            }
        )
    # replica exits and restarts as thin lines on every timeline, to line them up with spikes
    for mark in series.get("marks", []):
        color = MARK_STYLE.get(mark["kind"], ("", "#64748b"))[1]
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": mark["t"],
                "x1": mark["t"],
                "y0": 0,
                "y1": 1,
                "line": {"width": 1, "color": color, "dash": "dot"},
                "layer": "below",
            }
        )
    return shapes, annotations


def _rect(x0: float, x1: float, fill: str, line: str) -> dict[str, Any]:
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": fill,
        "line": {"width": 1, "color": line},
        "layer": "below",
    }


def line_trace(
    x: list,
    y: list,
    name: str,
    color: str,
    dash: str | None = None,
    shape: str = "linear",
) -> dict[str, Any]:
    line: dict[str, Any] = {"color": color, "width": 1.6, "shape": shape}
    if dash:
        line["dash"] = dash
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": x,
        "y": y,
        "line": line,
        "connectgaps": False,
        "hovertemplate": "%{y:.4g}",
    }
