"""How an unfinished run ended (``slo/completion.py``): its verdict, exit code 3, and which of
its phases ran against the plan run.json recorded."""

from __future__ import annotations

import pytest

from aichaos.rundir import RunManifest
from aichaos.slo.completion import completion, incomplete_verdict
from aichaos.slo.evaluate import exit_code, judge_completion
from aichaos.slo.result import SloResult

T0 = 1_795_000_000.0
PLAN = {
    "t0": T0,
    "duration_s": 120.0,
    "experiment": {
        "method": [
            {"type": "action", "name": "outage", "x-aichaos": {"at": 30, "duration": 20}},
            {"type": "action", "name": "kill", "x-aichaos": {"at": 70, "duration": 10}},
            {"type": "probe", "name": "ready"},  # not a fault
        ]
    },
}


def plan(status: str) -> RunManifest:
    """run.json of the planned run, ended ``status``."""
    return RunManifest.model_validate({"id": "plan", **PLAN, "status": status})


def phase(name: str, kind: str, start: float, end: float, fault: str | None = None) -> dict:
    return {"name": name, "kind": kind, "start": T0 + start, "end": T0 + end,
            "requests": 10, "fault": {"name": fault} if fault else None}  # fmt: skip


def stop(t: float, kind: str = "interrupt", during: str = "load") -> dict:
    return {"t": T0 + t, "kind": kind, "name": "SIGINT", "action": "instant",
            "detail": {"during": during}}  # fmt: skip


@pytest.mark.parametrize(
    "status, verdict",
    [("completed", None), (None, None), ("aborted", "aborted"), ("crashed", "crashed"),
     ("failed", "incomplete"), ("running", "incomplete"), ("odd", "incomplete")],
)  # fmt: skip
def test_each_status_has_one_verdict(status, verdict):
    assert incomplete_verdict(status) == verdict


def test_a_fault_that_never_started_did_not_run_and_neither_did_recovery():
    """Stopped between the two faults: the first ran whole, the second never started."""
    phases = [
        phase("baseline", "baseline", 5, 30),
        phase("fault:outage", "fault", 30, 50, "outage"),
        phase("recovery", "recovery", 50, 61),
        phase("all", "all", 0, 61),
    ]
    done = completion(plan("aborted"), phases, [stop(60)])
    states = {p.name: (p.state, p.ran_s, p.planned_s) for p in done.phases}
    assert states == {
        "baseline": ("ran", 25.0, 25.0),
        "fault:outage": ("ran", 20.0, 20.0),
        "fault:kill": ("not_run", None, 10.0),
        "recovery": ("not_run", None, 40.0),
    }
    assert done.verdict == "aborted" and done.stopped_at == T0 + 60 and done.during == "load"


def test_a_stop_after_the_load_leaves_every_phase_whole():
    """Ctrl-C during the evaluation: everything ran; the headline still says aborted."""
    phases = [
        phase("baseline", "baseline", 5, 30),
        phase("fault:outage", "fault", 30, 50, "outage"),
        phase("fault:kill", "fault", 70, 80, "kill"),
        phase("recovery", "recovery", 80, 121),
        phase("all", "all", 0, 121),
    ]
    done = completion(plan("aborted"), phases, [stop(125, during="evaluation")])
    assert [p.state for p in done.phases] == ["ran"] * 4
    assert done.during == "evaluation" and done.load_started


def test_the_owner_gone_event_is_a_crash_s_stop():
    phases = [phase("baseline", "baseline", 5, 30), phase("fault:outage", "fault", 30, 41,
              "outage"), phase("all", "all", 0, 41)]  # fmt: skip
    done = completion(plan("crashed"), phases, [stop(37, kind="owner_gone")])
    cut = next(p for p in done.phases if p.name == "fault:outage")
    assert (cut.state, cut.ran_s, cut.planned_s) == ("cut", 7.0, 20.0)


def test_judging_a_finished_result_again_keeps_what_was_recorded():
    result = SloResult.model_validate(
        {"verdict": "pass", "score": 100.0, "phases": [phase("all", "all", 0, 121)]}
    )
    manifest = plan("aborted")
    judged = judge_completion(
        result.model_copy(deep=True), manifest, [stop(125, during="rendering")]
    )
    assert (judged.verdict, judged.score, judged.incomplete) == ("aborted", None, True)
    assert (judged.recorded_verdict, judged.recorded_score) == ("pass", 100.0)
    assert exit_code(judged) == 3
    again = judge_completion(judged, manifest, [stop(125, during="rendering")])
    assert again.recorded_verdict == "pass" and again.verdict == "aborted"
    unchanged = judge_completion(result.model_copy(deep=True), plan("completed"), [])
    assert unchanged.verdict == "pass" and unchanged.completion is None
    assert exit_code(unchanged) == 0
