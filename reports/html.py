"""``report.html``: one self-contained page (styles, Plotly and chart data inline).

Safety: every string from the run goes through jinja2's autoescape; chart data is embedded as
JSON inside ``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as
``\\u003c``..., so a planted ``</script>`` cannot close the element. A Content-Security-Policy
allows only the page's own two scripts (by hash) and no network at all, so even a mistake in
escaping could neither run code nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jinja2

import aichaos
from aichaos.reports import charts, fmt, tables, trend
from aichaos.reports.journal import journal_view
from aichaos.reports.rundata import RunData
from aichaos.rundir import FaultProxy
from aichaos.slo.result import SloResult

PLOTLY_JS = "plotly-basic.min.js"


@cache
def _asset(name: str) -> str:
    return resources.files("aichaos.reports").joinpath("assets", name).read_text("utf-8")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("aichaos.reports", "templates"),
        autoescape=True,
        # a run may lack optional figures (no slo.json, no budget): they render as a dash
        undefined=jinja2.ChainableUndefined,
        # a null from slo.json reads as a dash, never as "None"
        finalize=lambda value: fmt.DASH if value is None else value,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        {
            "seconds": fmt.seconds,
            "duration": fmt.duration,
            "percent": fmt.percent,
            "value": fmt.value,
            "interval": fmt.interval,
            "number": fmt.number,
            "rate": fmt.rate,
            "change": fmt.change,
            "p_value": fmt.p_value,
            "op": fmt.op,
            "utc": fmt.utc,
            "status_label": fmt.status_label,
            "status_class": fmt.status_class,
            "raw_number": _raw_number,
        }
    )
    return env


def _raw_number(value: Any) -> str:
    """The exact number slo.json holds, for ``data-value`` attributes (tests and copy-paste)."""
    return json.dumps(value) if fmt.is_number(value) else ""


def json_for_script(data: Any) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>``, ``&`` or JS line separators."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _csp_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def page_assets() -> dict[str, str]:
    """What every aichaos page inlines: Plotly, the chart script, the styles, and the CSP that
    allows those two scripts (by hash) and nothing else."""
    app_js = _asset("report.js")
    plotly_js = _asset(PLOTLY_JS)
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(plotly_js)} {_csp_hash(app_js)}; "
        "style-src 'unsafe-inline'; img-src data: blob:; "
        "connect-src 'none'; font-src 'none'; form-action 'none'; base-uri 'none'"
    )
    return {"plotly_js": plotly_js, "app_js": app_js, "css": _asset("report.css"), "csp": csp}


def render_html(run: RunData) -> str:
    series = run.series
    slo = run.slo
    timeline = charts.timeline_figures(series)
    server = charts.server_figures(series)
    cdfs = charts.cdf_figures(series)
    history = slo.history if slo else None
    trends = trend.trend_panels(history) if history else []
    figures = {
        p["id"]: {**p["figure"], "timeline": bool(p.get("timeline"))}
        for p in (*timeline, *server, *cdfs, *trends)
        if "figure" in p
    }
    for p in server:
        if "figure" in p:
            figures[p["id"]]["timeline"] = True
    context = {
        "run": run,
        "m": run.manifest,
        "slo": slo,
        "facts": _facts(run),
        "kpis": _kpis(slo) if slo else [],
        "counts": tables.status_counts(slo),
        "phases": tables.phase_rows(slo, series["t0"]) if slo else [],
        "objective_groups": tables.objectives_by_phase(slo) if slo else [],
        "latency": tables.latency_rows(slo) if slo else [],
        "tiers": tables.tier_rows(slo) if slo else [],
        "tier_objectives": [o for o in run.objectives if o.tier],
        "budget": slo.budget if slo else None,
        "alerts": slo.alerts if slo else [],
        "server_checks": slo.server if slo else [],
        "comparison": slo.comparison if slo else None,
        "comparison_rows": tables.comparison_rows(slo.comparison) if slo and slo.comparison else [],
        "history": history,
        "trend_panels": trends,
        "trend_rows": trend.trend_rows(history) if history else [],
        "timeline": timeline,
        "server_panels": server,
        "cdf_panels": cdfs,
        "series": series,
        "journal": journal_view(run.journal),
        "faults": series.get("faults", []),
        "error_samples": series.get("error_samples", []),
        "notes": run.notes,
        "prompt_lengths": tables.prompt_length_lines(slo.prompt_lengths if slo else None),
        "chart_json": json_for_script({"figures": figures}),
        **page_assets(),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "aichaos_version": aichaos.__version__,
    }
    return _environment().get_template("report.html.j2").render(context)


def _facts(run: RunData) -> list[tuple[str, str]]:
    """The header's run facts, as (label, text) pairs, in the order a reviewer asks them."""
    m = run.manifest
    scenario = (m.scenario if m is not None else None) or {}
    experiment = (m.experiment if m is not None else None) or {}
    stack = (m.stack if m is not None else None) or {}
    versions = m.versions if m is not None else {}
    seed = m.seed if m is not None else None
    spec = run.slo.spec if run.slo else None
    started, ended = (m.started_at, m.ended_at) if m is not None else (None, None)
    length = ended - started if fmt.is_number(started) and fmt.is_number(ended) else None
    if length is None:
        length = run.series.get("duration_s")
    topology = stack.get("topology")
    return [
        ("Scenario", _name(scenario)),
        ("Experiment", _name(experiment, key="title") or "none"),
        ("Topology", str(topology) if topology else "none (external target)"),
        ("Target", str((m.target if m is not None else None) or fmt.DASH)),
        *_fault_proxy(m.fault_proxy if m is not None else None),
        ("SLO spec", (spec.name if spec else fmt.DASH) if run.slo else "not evaluated"),
        ("Seed", str(seed) if seed is not None else fmt.DASH),
        ("Start", fmt.utc(started)),
        ("Duration", fmt.duration(length) + ("" if fmt.is_number(ended) else " (recorded)")),
        ("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or fmt.DASH),
    ]


def _fault_proxy(proxy: FaultProxy | None) -> list[tuple[str, str]]:
    """With ``--target``, the load went through a fault proxy in front of it: say so."""
    if proxy is None or not proxy.url:
        return []
    return [("Fault proxy", f"{proxy.url} in front of the target; the load went through it")]


def _kpis(slo: SloResult) -> list[tuple[str, str, str]]:
    """Headline figures of the whole run, as slo.json gives them: (label, text, raw value)."""
    by_phase = {b.phase: b for b in slo.budget.by_phase} if slo.budget else {}
    whole = by_phase.get("all")
    requests = whole.requests if whole else None
    error_ratio = whole.error_ratio if whole else None
    latency = slo.latency.get("all")
    ttft = latency.ttft if latency else None
    p95, p99 = (ttft.p95, ttft.p99) if ttft else (None, None)
    burns = [b.burn_rate for b in by_phase.values() if fmt.is_number(b.burn_rate)]
    worst = max(burns, default=None)
    spent = slo.budget.spent_total if slo.budget else None
    return [
        ("Requests", fmt.number(requests), _raw_number(requests)),
        ("Error ratio", fmt.percent(error_ratio), _raw_number(error_ratio)),
        ("TTFT p95", fmt.seconds(p95), _raw_number(p95)),
        ("TTFT p99", fmt.seconds(p99), _raw_number(p99)),
        ("Worst burn rate", fmt.rate(worst), _raw_number(worst)),
        ("Budget spent", fmt.percent(spent), _raw_number(spent)),
    ]


def _name(resolved: dict[str, Any], key: str = "name") -> str:
    """``name (source)`` of a resolved scenario or experiment; empty when the run has none."""
    if not resolved:
        return ""
    name = resolved.get(key) or resolved.get("name") or resolved.get("title")
    source = resolved.get("source")
    if name and source:
        return f"{name} ({source})"
    return str(name or source or fmt.DASH)
