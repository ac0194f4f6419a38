"""Scenario files: built-ins, the resolved form's round trip, and one clear line per mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aichaos.rundir import InputError
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.spec import Scenario, builtin_names, load_scenario

BUILTINS = ["burst", "chat-sessions", "diurnal", "soak", "steady", "tiered"]


def test_builtins_are_shipped_and_sized_for_two_cores():
    assert builtin_names() == BUILTINS
    for name in BUILTINS:
        s = load_scenario(name)
        sched = build_schedule(s)
        rate = len(sched) / s.duration_s
        assert 0.5 < rate < 10, (name, rate)  # a few requests per second
        assert s.tiers == ["free", "pro", "enterprise"]
        assert 0 <= s.warmup_s < s.duration_s


@pytest.mark.parametrize("name", BUILTINS)
def test_resolved_form_replays_the_same_schedule(name):
    s = load_scenario(name, seed=11)
    d = json.loads(json.dumps(s.to_dict()))  # what run.json stores
    again = Scenario.from_dict(d)
    assert again.to_dict() == s.to_dict()
    a, b = build_schedule(s), build_schedule(again)
    assert np.array_equal(a.t, b.t)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert np.array_equal(a.output_tokens, b.output_tokens)
    assert np.array_equal(a.tier, b.tier)


def test_overrides_and_seed_change_the_schedule():
    base = load_scenario("steady")
    short = load_scenario("steady", duration_s=10, seed=99)
    assert short.duration_s == 10 and short.seed == 99
    assert short.warmup_s <= 1.0  # a shortened run keeps a proportionate warm-up
    assert build_schedule(short).t.max() < 10
    assert not np.array_equal(build_schedule(base).t[:5], build_schedule(short).t[:5])


def test_random_bursts_are_resolved_once_from_the_seed(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(
        "duration: 100\nrate: {shape: burst, base: 1, factor: 5, length: 5, count: 3}\n"
    )
    a, b = load_scenario(path).to_dict(), load_scenario(path).to_dict()
    assert a["rate"]["starts"] == b["rate"]["starts"] and len(a["rate"]["starts"]) == 3


BAD = [
    ("duration: [\n", "line"),
    ("rate: {shape: constant, rps: 2}\n", "duration"),
    ("duration: 10\nrate: {shape: constant, rps: -1}\n", "rate.rps"),
    ("duration: 10\nrate: {shape: wobble, rps: 1}\n", "rate.shape"),
    ("duration: 10\ndurration: 5\nrate: {shape: constant, rps: 1}\n", "durration"),
    ("duration: ten\nrate: {shape: constant, rps: 1}\n", "duration"),
    ("duration: 10\narrival: {process: gamma, burstiness: 0}\nrate: {rps: 1}\n", "burstiness"),
    ("duration: 10\nrate: {rps: 1}\ntarget: {path: /v2/chat}\n", "target.path"),
    (
        "duration: 10\nrate: {rps: 1}\ntiers: [{name: a, share: 1}, {name: a, share: 1}]\n",
        "tiers[1].name",
    ),
    (
        "duration: 10\nrate: {rps: 1}\nnoisy_neighbour: {tier: gold, factor: 2}\n",
        "noisy_neighbour.tier",
    ),
    (
        "duration: 10\nrate: {rps: 1}\nworkload: {prompt_tokens: {dist: zipf}}\n",
        "workload.prompt_tokens.dist",
    ),
    ("duration: 10\ntrace: {format: azure, path: missing.csv}\n", "trace.path"),
    ("duration: 10\nrate: {shape: step, steps: [{at: 5, rps: 1}]}\n", "rate.steps"),
]


@pytest.mark.parametrize(("text", "field"), BAD)
def test_a_bad_scenario_is_one_line_naming_file_and_field(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and field in message and "expected" in message


def test_a_misspelt_required_field_is_named(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("duration: 10\nrate: {shape: constant, rsp: 3}\n")
    with pytest.raises(InputError, match=r"rate\.rps: expected a value \(required; found 'rsp'"):
        load_scenario(path)


def test_unknown_scenario_name_lists_the_builtins():
    with pytest.raises(InputError, match="steady"):
        load_scenario("no-such-scenario")


def test_cli_validate_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration: 10\nrate: {shape: constant, rps: 'x'}\n")
    exe = Path(sys.executable).with_name("aichaos")  # the console script of this venv
    proc = subprocess.run([str(exe), "scenarios", "validate", "steady", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout.startswith("ok: steady")
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "rate.rps" in errors[0] and "Traceback" not in proc.stderr


def test_a_rate_whose_schedule_would_not_fit_in_memory_is_refused(tmp_path):
    """1e8 requests a second for a minute used to end in a numpy memory error while the
    schedule was drawn; it is one line and exit 2 before anything is built."""
    steady = Path(__file__).resolve().parents[1] / "scenarios" / "builtin" / "steady.yaml"
    path = tmp_path / "huge.yaml"
    path.write_text(steady.read_text().replace("rps: 4}", "rps: 100000000}"))
    with pytest.raises(InputError, match=r"rate: expected at most 5,000,000 requests"):
        load_scenario(path)
