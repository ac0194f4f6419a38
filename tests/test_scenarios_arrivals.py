"""Arrival processes and shapes are statistically what they say (seeded, so deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from aichaos.scenarios.arrivals import arrival_times
from aichaos.scenarios.payload import prompt_parts
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.shapes import Burst, Constant, Diurnal, Ramp, Spike, Stages, Step
from aichaos.scenarios.spec import Scenario, load_scenario


def scenario(**over) -> Scenario:
    d = {"duration": 600, "seed": 3, "rate": {"shape": "constant", "rps": 5}}
    d.update(over)
    return Scenario.from_dict(d)


def test_poisson_gaps_are_exponential_at_the_rate():
    t = build_schedule(scenario()).t
    gaps = np.diff(t)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 5)).pvalue > 0.01
    assert abs(len(t) - 3000) < 4 * np.sqrt(3000)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_gaps_follow_vllm_burstiness(burstiness):
    s = scenario(arrival={"process": "gamma", "burstiness": burstiness})
    gaps = np.diff(build_schedule(s).t)
    # vLLM: shape = burstiness, scale = 1 / (rate × burstiness)
    ks = stats.kstest(gaps, "gamma", args=(burstiness, 0, 1 / (5 * burstiness)))
    assert ks.pvalue > 0.01
    cv = gaps.std() / gaps.mean()
    assert cv == pytest.approx(1 / np.sqrt(burstiness), rel=0.15)


def test_gamma_is_not_exponential_when_bursty():
    s = scenario(arrival={"process": "gamma", "burstiness": 0.25})
    gaps = np.diff(build_schedule(s).t)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 5)).pvalue < 1e-6


def test_constant_process_is_evenly_spaced():
    t = build_schedule(scenario(arrival={"process": "constant"})).t
    assert np.allclose(np.diff(t), 0.2, atol=1e-3)


SHAPES = [
    {"shape": "ramp", "from": 1, "to": 9, "curve": "linear"},
    {"shape": "ramp", "from": 1, "to": 9, "curve": "exponential"},
    {"shape": "step", "steps": [{"at": 0, "rps": 2}, {"at": 200, "rps": 8}, {"at": 400, "rps": 1}]},
    {"shape": "spike", "base": 2, "peak": 20, "at": 300, "length": 30},
    {"shape": "diurnal", "peak": 8, "peak_to_trough": 10, "peak_hour": 14},
    {"shape": "diurnal", "peak": 6, "hourly": [0.2] * 8 + [1.0] * 8 + [0.5] * 8},
    {"shape": "burst", "base": 2, "factor": 5, "length": 20, "every": 100},
    {"shape": "stages", "stages": [{"duration": 200, "shape": "constant", "rps": 2},
                                   {"duration": 400, "shape": "ramp", "from": 2, "to": 8}]},
]  # fmt: skip


@pytest.mark.parametrize("process", ["poisson", "gamma"])
@pytest.mark.parametrize("rate", SHAPES, ids=lambda r: r["shape"] + str(len(r)))
def test_a_shapes_integral_matches_the_count(rate, process):
    s = scenario(rate=rate, arrival={"process": process, "burstiness": 2.0})
    t = build_schedule(s).t
    grid = np.linspace(0, 600, 600_001)
    expected = np.trapezoid(s.shape.rate(grid), grid)
    assert abs(len(t) - expected) < 5 * np.sqrt(expected), (len(t), expected)
    # and in time: each 100 s window holds its own integral
    for lo in range(0, 600, 100):
        sub = grid[(grid >= lo) & (grid <= lo + 100)]
        want = np.trapezoid(s.shape.rate(sub), sub)
        got = int(((t >= lo) & (t < lo + 100)).sum())
        assert abs(got - want) < 5 * np.sqrt(want) + 3, (lo, got, want)


def test_shape_rates_at_chosen_times():
    t = np.asarray([0.0, 50.0, 100.0])
    assert list(Constant(3).rate(t)) == [3, 3, 3]
    assert list(Ramp(1, 5, 100).rate(t)) == [1, 3, 5]
    assert Ramp(1, 100, 100, "exponential").rate(t)[1] == pytest.approx(10)
    assert list(Step((0.0, 50.0), (1.0, 4.0)).rate(t)) == [1, 4, 4]
    assert list(Spike(1, 9, 40, 20).rate(t)) == [1, 9, 1]
    day = Diurnal(10, period_s=240, peak_to_trough=10, peak_hour=12)
    assert day.rate(np.asarray([120.0, 0.0])) == pytest.approx([10, 1])
    assert list(Burst(2, 3, 10, (45.0,)).rate(t)) == [2, 6, 2]
    chained = Stages((50.0, 50.0), (Constant(1), Ramp(2, 4, 50)))
    assert list(chained.rate(np.asarray([10.0, 50.0, 75.0]))) == [1, 2, 3]


def test_tiers_take_their_share_and_their_lengths():
    s = load_scenario("tiered", duration_s=2000)
    sched = build_schedule(s)
    tiers = np.asarray(sched.tier_names)[sched.tier]
    outside = (sched.t < 40) | (sched.t >= 70)
    shares = {n: float((tiers[outside] == n).mean()) for n in s.tiers}
    assert shares["free"] == pytest.approx(0.6, abs=0.03)
    assert shares["enterprise"] == pytest.approx(0.1, abs=0.02)
    assert (
        sched.prompt_tokens[tiers == "enterprise"].mean()
        > 2 * sched.prompt_tokens[tiers == "free"].mean()
    )
    free_out = sched.output_tokens[tiers == "free"]
    assert free_out.min() >= 16 and free_out.max() <= 96


def test_noisy_neighbour_multiplies_one_tiers_rate_in_its_window():
    s = scenario(
        duration=1000,
        tiers=[{"name": "free", "share": 0.5}, {"name": "pro", "share": 0.5}],
        noisy_neighbour={"tier": "free", "factor": 3, "start": 300, "end": 700},
    )
    sched = build_schedule(s)
    tiers = np.asarray(sched.tier_names)[sched.tier]
    inside = (sched.t >= 300) & (sched.t < 700)
    for tier, factor in (("free", 3.0), ("pro", 1.0)):
        rate_in = (tiers[inside] == tier).sum() / 400.0
        rate_out = (tiers[~inside] == tier).sum() / 600.0
        assert rate_out == pytest.approx(2.5, rel=0.15)
        assert rate_in / rate_out == pytest.approx(factor, rel=0.15), tier


def test_shared_prefixes_and_sessions_share_prompt_text():
    s = scenario(
        duration=60,
        workload={
            "prompt_tokens": 50,
            "output_tokens": 10,
            "shared_prefix": {"groups": 2, "tokens": 30, "share": 1.0},
            "sessions": {"turns": {"dist": "fixed", "value": 3}, "think": 2},
        },
    )
    sched = build_schedule(s)
    by_session: dict[int, list[int]] = {}
    for i in range(len(sched)):
        by_session.setdefault(int(sched.session_id[i]), []).append(i)
    full = [v for v in by_session.values() if len(v) == 3]
    assert full
    first, second, third = full[0]
    assert sched.t[second] - sched.t[first] == pytest.approx(2.0)
    # earlier turns ride along: the system prompt once, each question (20) and answer (10)
    assert sched.prompt_tokens[third] == 30 + 2 * (20 + 10) + 20
    shared1, _ = prompt_parts(sched, first, s.seed)
    shared3, _ = prompt_parts(sched, third, s.seed)
    assert shared3 == shared1  # the history comes as messages (tests/test_conversations.py)
    groups = {}
    for i in range(len(sched)):
        if sched.turn[i] == 1:
            shared, own = prompt_parts(sched, i, s.seed)
            groups.setdefault(int(sched.prefix_id[i]), set()).add(shared)
            assert len(own.split()) == 50 - 30
    assert sorted(groups) == [0, 1] and all(len(v) == 1 for v in groups.values())


def test_length_distributions(tmp_path):
    out = {
        "uniform": {"dist": "uniform", "low": 10, "high": 20},
        "normal": {"dist": "normal", "mean": 100, "std": 10},
        "lognormal": {"dist": "lognormal", "mean": 100, "sigma": 0.5},
        "empirical": {"dist": "empirical", "values": [7, 70, 700]},
    }
    for name, dist in out.items():
        s = scenario(workload={"prompt_tokens": dist, "output_tokens": 5}, duration=400)
        p = build_schedule(s).prompt_tokens
        if name == "uniform":
            assert p.min() == 10 and p.max() == 20
        elif name == "empirical":
            assert set(p.tolist()) == {7, 70, 700}
        else:
            assert p.mean() == pytest.approx(100, rel=0.06), name


def test_prompts_from_sharegpt_and_jsonl(tmp_path):
    share = tmp_path / "sg.json"
    share.write_text(
        '[{"conversations": [{"from": "human", "value": "why is the sky blue"},'
        ' {"from": "gpt", "value": "scattering of light by air"}]}]'
    )
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "hello there", "output_tokens": 9}\n')
    for path, fmt, text, n in ((share, "sharegpt", "why is the sky blue", 5),
                               (lines, "jsonl", "hello there", 9)):  # fmt: skip
        s = scenario(duration=20, workload={"prompts": {"file": str(path), "format": fmt}})
        sched = build_schedule(s)
        assert set(sched.texts) == {text}
        assert set(sched.output_tokens.tolist()) == {n}


def test_arrival_times_are_bounded_and_sorted():
    rng = np.random.default_rng(0)
    t = arrival_times(Ramp(0, 50, 10).rate, 10.0, "poisson", rng)
    assert (np.diff(t) >= 0).all() and t.min() >= 0 and t.max() < 10
