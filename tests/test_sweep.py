"""``aichaos sweep``: the capacity where the SLOs break, with no fault and under a fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import interrupt, wait_for

from aichaos.harness.sweep import SweepOptions, _bounds
from aichaos.sweepfile import NO_FAULT, Condition, SliPoint, Step, SweepResult, read_sweep

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "sweep"
AICHAOS = str(Path(sys.executable).parent / "aichaos")


def step(rate: float, holds: bool = True, saturated: bool = False) -> Step:
    point = SliPoint(id="ttft-p95@all", value=0.2 if holds else 2.0, threshold=1.0, unit="s",
                     status="pass" if holds else "fail", meets=holds)  # fmt: skip
    return Step(offered_rps=rate, achieved_rps=rate, requests=100, errors=0,
                verdict="pass" if holds else "fail", holds=holds, beyond_doubt=not holds,
                saturated=saturated, slis=[point], run_dir="x", exit_code=0)  # fmt: skip


def test_the_grid_climbs_by_the_factor_up_to_the_top():
    assert SweepOptions(start_rps=2, factor=2, max_rps=16).grid() == [2, 4, 8, 16]
    assert SweepOptions(start_rps=3, factor=1.5, max_rps=7).grid() == [3, 4.5, 6.75]
    assert SweepOptions(rates=[8, 2, 4]).grid() == [2, 4, 8]


def test_capacity_is_the_highest_hold_below_the_lowest_break():
    steps = [step(2), step(4), step(8, holds=False), step(6), step(7, saturated=True)]
    assert _bounds(steps) == (6, 7)
    assert _bounds([step(2), step(4)]) == (4, None)  # nothing broke: at least the top
    assert _bounds([step(2, holds=False)]) == (None, 2)  # broke at once
    # a noisy hold above a break does not count
    assert _bounds([step(2), step(4, holds=False), step(8)]) == (2, 4)


def test_headroom_is_capacity_over_capacity_under_the_fault():
    def cond(name, capacity, broken):
        return Condition(name=name, experiment=None, steps=[], capacity_rps=capacity,
                         broken_rps=broken, stopped_because="")  # fmt: skip

    conditions = [cond(NO_FAULT, 38, 40), cond("replica-down", 21, 24)]
    result = SweepResult(scenario="s", slo="d", step_s=60, target="t", conditions=conditions)
    assert result.headroom(result.conditions[1]) == pytest.approx(38 / 21)
    assert result.conditions[0].capacity_text() == "holds 38 req/s (broke at 40)"


def test_steps_too_short_for_the_percentiles_are_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [AICHAOS, "sweep", "--scenario", str(DATA / "scenario.yaml"), "--slo",
         str(DATA / "slo.yaml"), "--rates", "2,4", "--step", "5s", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --step: step length: expected at least")
    assert "ttft-p95" in lines[0] and not list(tmp_path.iterdir())  # nothing started


def test_bad_options_are_one_line_and_exit_2(tmp_path):
    done = subprocess.run([AICHAOS, "sweep", "--factor", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: command line: factor: expected a number > 1.0, got 1.0"
    ]


def slow_topology(tmp_path: Path) -> Path:
    """The embedded topology with replicas that saturate at a few requests a second and the
    gateway's rate limits out of the way."""
    data = yaml.safe_load((REPO / "fixtures" / "topology" / "default.yaml").read_text())
    for service in data["services"]:
        command = service["command"]
        if service["kind"] == "llm":
            command[command.index("--profile") + 1] = str(DATA / "slow-replica.yaml")
        if service["kind"] == "gateway":
            tiers = ("free", "pro", "enterprise")
            command += [f"--set=rate_limits_per_min.{t}=1000000" for t in tiers]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_sweep_finds_the_knee_and_one_replica_down_lowers_it(tmp_path):
    out = tmp_path / "runs"
    done = subprocess.run(
        [AICHAOS, "sweep", "--scenario", str(DATA / "scenario.yaml"), "--slo",
         str(DATA / "slo.yaml"), "--topology", str(slow_topology(tmp_path)), "--rates", "2,4,8",
         "--step", "16s", "--narrow", "0", "--under", "replica-down", "--require-rps", "50",
         "--out", str(out), "--ci"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # the capacity is far below 50 req/s
    (sweep_dir,) = out.iterdir()
    result = read_sweep(sweep_dir)
    base, under = result.conditions
    assert result.status == "completed" and base.name == NO_FAULT and under.name == "replica-down"
    assert base.capacity_rps is not None and base.broken_rps is not None  # a knee was found
    assert base.capacity_rps < base.broken_rps <= 8
    # with one replica down the stack breaks lower
    assert under.broken_rps is not None and under.broken_rps < base.broken_rps
    assert under.capacity_rps is None or under.capacity_rps < base.capacity_rps
    assert all(s.offered_rps <= base.broken_rps for s in under.steps)  # climbs no higher
    for s in base.steps + under.steps:  # every step is a whole game day with its report
        assert (Path(s.run_dir) / "report.html").exists()
        manifest = json.loads((Path(s.run_dir) / "run.json").read_text())
        assert manifest["status"] == "completed"
    faulted = json.loads((Path(under.steps[0].run_dir) / "run.json").read_text())
    held = faulted["experiment"]["method"][0]["x-aichaos"]
    assert held == {**held, "at": 0, "duration": 16.0}  # the fault held the whole step
    html = (sweep_dir / "sweep.html").read_text()
    assert 'data-capacity="no fault"' in html and 'id="chart-sweep-0"' in html
    assert "below --require-rps 50" in done.stderr


def test_a_sweep_of_a_target_keeps_its_finished_steps_when_interrupted(tmp_path, start_sim):
    """``--target``: no stack is brought up, each step drives the endpoint; Ctrl-C in the
    second step: exit 3, sweep.json says aborted and holds the first step, the report is
    written."""
    sim = start_sim("--profile", str(DATA / "slow-replica.yaml"))
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [AICHAOS, "sweep", "--scenario", str(DATA / "scenario.yaml"), "--slo",
         str(DATA / "slo.yaml"), "--target", sim.url, "--rates", "2,4", "--step", "16s",
         "--narrow", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def first_step_recorded() -> bool:
        found = list(out.glob("*/sweep.json"))
        return bool(found) and any(c.steps for c in read_sweep(found[0].parent).conditions)

    try:
        wait_for(first_step_recorded, 120, "the first step in sweep.json", interval=0.5)
    finally:
        said = interrupt(proc, timeout=120)
    assert proc.returncode == 3, said[-3000:]
    (sweep_dir,) = out.iterdir()
    result = read_sweep(sweep_dir)
    assert result.status == "aborted" and result.target == sim.url
    assert not (sweep_dir / "stack").exists()  # nothing was brought up
    (condition,) = result.conditions
    assert [s.offered_rps for s in condition.steps] == [2]  # the interrupted step is not one
    assert condition.steps[0].requests > 0 and condition.stopped_because == "did not finish"
    assert (Path(condition.steps[0].run_dir) / "slo.json").exists()
    assert (sweep_dir / "sweep.html").exists() and "sweep aborted" in said
