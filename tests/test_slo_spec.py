"""SLO specs: the built-in specs load and round-trip; every malformed spec is one clear line."""

from __future__ import annotations

import pytest
from conftest import REPO

from aichaos.rundir import InputError
from aichaos.slo.spec import SloSpec, load_spec


@pytest.mark.parametrize("name", ["default", "tiered", "quick"])
def test_builtin_specs_load_and_round_trip(name):
    spec = load_spec(name)
    again = SloSpec.from_dict(spec.to_dict(), "copy")
    assert again.to_dict() == spec.to_dict() and spec.name == name


def test_tiered_spec_says_what_the_product_requires():
    spec = load_spec("tiered")
    got = {(o.tiers, o.sli, o.percentile, o.threshold) for o in spec.objectives}
    assert (("free",), "ttft", 90.0, 2.0) in got
    assert (("free",), "error_rate", None, 0.01) in got
    assert (("pro",), "ttft", 95.0, 0.8) in got and (("pro",), "availability", None, 0.995) in got
    assert (("enterprise",), "ttft", 99.0, 0.5) in got
    assert (("enterprise",), "availability", None, 0.999) in got
    default = {(o.sli, o.percentile, o.threshold) for o in load_spec("default").objectives}
    assert default == {("ttft", 95.0, 0.5), ("tpot", 95.0, 0.05), ("error_rate", None, 0.001)}
    assert spec.period_days == 30 and [a.burn_rate for a in spec.alerts] == [14.4, 6.0, 1.0]


GOOD = "name: t\nobjectives:\n  - sli: ttft\n    percentile: 95\n    threshold: 500ms\n"
BAD = [
    ("objectives: []\n", "objectives: expected a non-empty list"),
    ("objectives:\n  - sli: latency\n    threshold: 1\n", "objectives[0].sli: expected one of"),
    ("objectives:\n  - sli: ttft\n    threshold: 1s\n", "objectives[0].percentile: expected"),
    (
        "objectives:\n  - sli: ttft\n    percentile: 100\n    threshold: 1s\n",
        "objectives[0].percentile: expected a number between 0 and 100",
    ),
    (
        "objectives:\n  - sli: ttft\n    percentile: 95\n    threshold: fast\n",
        "objectives[0].threshold: expected a duration",
    ),
    (
        "objectives:\n  - sli: error_rate\n    threshold: 2\n",
        "objectives[0].threshold: expected a ratio between 0 and 1",
    ),
    (
        "objectives:\n  - sli: error_rate\n    threshold: 1%\n    phases: [warmup]\n",
        "objectives[0].phases: expected baseline, fault",
    ),
    (
        "objectives:\n  - sli: error_rate\n    threshold: 1%\n    weight: heavy\n",
        "objectives[0].weight: expected a number",
    ),
    (
        "objectives:\n  - sli: error_rate\n    threshold: 1%\n    treshold: 2%\n",
        "objectives[0].treshold: expected one of the known fields",
    ),
    (
        "objectives:\n  - sli: error_rate\n    threshold: 1%\n    warn: 0.5%\n",
        "objectives[0].warn: expected a threshold looser",
    ),
    ("objectives:\n  - sli: promql\n    threshold: 1\n", "objectives[0].query: expected a PromQL"),
    (
        "objectives:\n  - sli: cost_per_request\n    threshold: 0.01\n",
        "prices: expected prices for the providers",
    ),
    (
        "availability_objective: 1.5\n" + GOOD.split("\n", 1)[1],
        "availability_objective: expected a ratio between 0 and 1",
    ),
    (
        "alerts:\n  - burn_rate: 14.4\n    long_window: 5m\n    short_window: 1h\n"
        + GOOD.split("\n", 1)[1],
        "alerts[0].short_window: expected a window > 0 and <= long_window",
    ),
    ("period: forever\n" + GOOD.split("\n", 1)[1], "period: expected a duration"),
    ("objectives:\n  - sli: ttft\n  percentile: [\n", "expected valid YAML"),
    ("- just\n- a list\n", "document: expected one mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_malformed_spec_is_one_line_naming_file_field_and_expectation(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_spec(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line


def test_unknown_spec_name():
    with pytest.raises(InputError, match="nonesuch: slo: expected an SLO spec file or one of"):
        load_spec("nonesuch")


def test_durations_percentages_and_defaults(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "period: 7d\navailability_objective: 99.5%\nphases: [baseline, fault]\n"
        "recovery: {window: 30s, hold: 1m}\nprices: {fallback: {input: 3, output: 15}}\n"
        "objectives:\n"
        "  - {sli: e2e, percentile: 99.9, threshold: 4s, tiers: [pro]}\n"
        "  - {sli: availability, threshold: 99%}\n"
        "  - {sli: cost_per_request, threshold: 0.002, phases: [all]}\n"
    )
    spec = load_spec(path)
    assert spec.period_days == 7 and spec.availability_objective == 0.995
    assert (spec.recovery_window_s, spec.recovery_hold_s) == (30, 60)
    e2e, avail, cost = spec.objectives
    assert e2e.id == "e2e-p99.9-pro" and e2e.phases == ("baseline", "fault")
    assert avail.op == ">=" and avail.threshold == 0.99
    assert cost.phases == ("all",) and spec.prices["fallback"] == {"input": 3.0, "output": 15.0}


def test_openslo_documents_become_objectives():
    spec = load_spec(REPO / "tests" / "data" / "slo" / "openslo.yaml")
    assert spec.name == "rag-chat" and spec.period_days == 28
    assert spec.availability_objective == 0.995
    by_id = {o.id: o for o in spec.objectives}
    assert by_id["chat-availability"].sli == "availability"
    assert by_id["chat-availability"].threshold == 0.995
    ttft = by_id["chat-ttft"]
    assert (ttft.sli, ttft.percentile, ttft.threshold) == ("ttft", 95.0, 0.5)
    server = by_id["server-ttft"]
    assert server.sli == "promql" and "$window" in server.query and server.op == "<="
    gw = by_id["gateway-success"]
    assert gw.query.startswith("1 - (sum(increase(gateway_requests_total{status")
    assert gw.op == ">=" and gw.threshold == 0.999


def test_openslo_timeslices_is_refused_in_one_line(tmp_path):
    path = tmp_path / "ts.yaml"
    path.write_text(
        "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\n"
        "spec:\n  budgetingMethod: Timeslices\n  indicator: {spec: {}}\n  objectives: []\n"
    )
    with pytest.raises(
        InputError, match=r"document\[0\].spec.budgetingMethod: expected Occurrences"
    ):
        load_spec(path)


def test_a_latency_threshold_written_without_its_unit_is_refused():
    """``threshold: "500"`` used to mean 500 seconds; a YAML number stays seconds."""

    item = {"id": "t", "sli": "ttft", "percentile": 95}
    with pytest.raises(InputError, match=r"objectives\[0\]\.threshold: expected a duration with"):
        SloSpec.from_dict({"objectives": [{**item, "threshold": "500"}]}, "s.yaml")
    spec = SloSpec.from_dict({"objectives": [{**item, "threshold": 0.5}]}, "s.yaml")
    assert spec.objectives[0].threshold == 0.5
    spec = SloSpec.from_dict({"objectives": [{**item, "threshold": "500ms"}]}, "s.yaml")
    assert spec.objectives[0].threshold == 0.5
