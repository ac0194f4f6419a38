"""``aichaos sim calibrate``: the step-time fit, and the command against a simulator whose
coefficients are known and against the real vLLM engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import VLLM_MODEL, free_port

from aichaos.fixtures.llm_sim.profiles import load_profile
from aichaos.harness.step_fit import Observation, StepFit, fit_step_time, predict

AICHAOS = str(Path(sys.executable).with_name("aichaos"))
TRUTH = {"c0": 0.004, "c_prefill": 0.00002, "c_decode": 0.0005, "c_kv": 0.0000002}
KNOWN = {
    "name": "known",
    "model": "known-model",
    "max_model_len": 2048,
    "engine": {"kind": "step", "max_num_batched_tokens": 2048, "max_num_seqs": 64,
               "block_size": 16, "num_gpu_blocks": 4000, "step_time": TRUTH},
    "provider": {"extra_ttft": {"median_s": 0.003, "sigma": 0.0}},
}  # fmt: skip


def calibrate(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([AICHAOS, "sim", "calibrate", *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_the_fit_recovers_the_coefficients_that_made_the_observations():
    truth = StepFit(extra=0.003, **TRUTH, median_error=0, max_error=0)
    shapes = [("ttft", 1, p, 64) for p in (32, 512, 1024)]
    shapes += [("tpot", 1, p, 64) for p in (32, 512, 1024)]
    shapes += [("tpot", n, 128, 128) for n in (2, 8, 32)]
    obs = []
    for metric, n, p, o in shapes:
        shape = Observation(metric=metric, concurrency=n, prompt_tokens=p, output_tokens=o,
                            seconds=1.0)  # fmt: skip
        obs.append(shape.model_copy(update={"seconds": predict(truth, shape)}))
    fit = fit_step_time(obs)
    for name, value in {"extra": 0.003, **TRUTH}.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-6), name
    assert fit.max_error < 1e-6
    with pytest.raises(ValueError, match="cannot fit"):
        fit_step_time(obs[:4])


def test_calibrating_a_known_simulator_recovers_its_profile(start_sim, tmp_path):
    known = tmp_path / "known.yaml"
    known.write_text(yaml.safe_dump(KNOWN))
    sim = start_sim("--profile", str(known))
    out = tmp_path / "fitted.yaml"
    done = calibrate("--target", sim.url, "--out", str(out), "--quick", "--max-num-seqs", "64")
    assert done.returncode == 0, done.stderr
    assert "4000 KV blocks of 16 tokens" in done.stdout  # read from vllm:cache_config_info
    profile = load_profile(str(out))
    assert profile.name == "fitted" and profile.model == "known-model"
    assert profile.max_model_len == 2048
    engine = profile.engine
    assert (engine.num_gpu_blocks, engine.block_size, engine.max_num_seqs) == (4000, 16, 64)
    # the coefficients a step costs most by; c_kv adds well under a millisecond here
    for name in ("c0", "c_prefill", "c_decode"):
        assert getattr(engine.step_time, name) == pytest.approx(TRUTH[name], rel=0.3), name
    assert profile.provider.extra_ttft.median_s >= 0.003 * 0.7
    # the fitted profile serves
    fitted = start_sim("--profile", str(out))
    card = httpx.get(f"{fitted.url}/v1/models").json()["data"][0]
    assert (card["id"], card["max_model_len"]) == ("known-model", 2048)


def test_bad_options_get_one_line_and_exit_2(tmp_path):
    for args, flag in (
        (["--target", "http://127.0.0.1:9", "--out", str(tmp_path / "p.txt")], "--out"),
        (["--target", "http://127.0.0.1:9", "--out", str(tmp_path / "no" / "p.yaml")], "--out"),
        (["--target", "ftp://127.0.0.1", "--out", str(tmp_path / "p.yaml")], "--target"),
    ):
        done = calibrate(*args, timeout=60)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and flag in done.stderr
    assert not list(tmp_path.iterdir())


def test_an_unreachable_engine_exits_3(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    done = calibrate("--target", url, "--out", str(tmp_path / "p.yaml"), timeout=60)
    assert done.returncode == 3 and "unreachable" in done.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_calibrating_the_real_engine_gives_a_profile_the_simulator_serves(
    vllm_engine, start_sim, tmp_path
):
    out = tmp_path / "engine.yaml"
    done = calibrate("--target", vllm_engine.url, "--out", str(out), "--quick",
                     timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    metrics = httpx.get(f"{vllm_engine.url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("vllm:cache_config_info{"))
    profile = load_profile(str(out))
    assert f'num_gpu_blocks="{profile.engine.num_gpu_blocks}"' in line
    assert f'block_size="{profile.engine.block_size}"' in line
    assert profile.model == VLLM_MODEL and profile.max_model_len == vllm_engine.max_model_len
    step = profile.engine.step_time
    assert step.c0 + step.c_decode + step.c_kv > 0, done.stdout  # decode steps take time
    assert "ttft=" in out.read_text()  # the measured points it was fitted to, as comments
    sim = start_sim("--profile", str(out))
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="none")
    stream = client.chat.completions.create(
        model=VLLM_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    usage = [c.usage for c in stream if c.usage is not None]
    assert usage and usage[0].completion_tokens == 8


def test_a_point_whose_every_stream_came_in_one_burst_is_left_out_of_the_fit():
    from aichaos.harness.calibration import Point, observations

    shape = {"kind": "length", "concurrency": 1, "prompt_tokens": 32.0, "output_tokens": 64.0,
             "errors": 0, "ttft_p50_s": 0.2, "tpot_p50_s": 1e-5, "itl_p50_s": 1e-5}  # fmt: skip
    burst = Point(requests=5, bursts=5, **shape)
    mixed = Point(requests=5, bursts=2, **shape)
    assert burst.all_bursts and not mixed.all_bursts
    assert [o.metric for o in observations([burst, mixed])] == ["ttft", "tpot"]


def test_a_point_all_in_bursts_takes_the_engines_own_means_when_it_publishes_them():
    from aichaos.harness.calibration import Point, observations

    shape = {"kind": "length", "concurrency": 1, "prompt_tokens": 32.0, "output_tokens": 64.0,
             "errors": 0, "ttft_p50_s": 0.2, "tpot_p50_s": 1e-5, "itl_p50_s": 1e-5}  # fmt: skip
    burst = Point(requests=5, bursts=5, engine_ttft_s=0.01, engine_tpot_s=0.003, **shape)
    assert burst.engine_measured
    assert [(o.metric, o.seconds) for o in observations([burst])] == [
        ("ttft", 0.01), ("tpot", 0.003)
    ]  # fmt: skip


def test_the_time_per_output_token_is_the_engines_own_where_it_publishes_it():
    """A stream the API server bunched but not flagged as a burst has a client TPOT near zero,
    which would zero every decode coefficient of a fit on relative errors."""
    from aichaos.harness.calibration import Point, observations

    shape = {"kind": "length", "concurrency": 1, "prompt_tokens": 32.0, "output_tokens": 64.0,
             "errors": 0, "ttft_p50_s": 0.02, "tpot_p50_s": 1e-6, "itl_p50_s": 1e-6}  # fmt: skip
    mixed = Point(requests=5, bursts=2, engine_ttft_s=0.01, engine_tpot_s=0.003, **shape)
    bare = Point(requests=5, bursts=2, **shape)
    assert [(o.metric, o.seconds) for o in observations([mixed, bare])] == [
        ("ttft", 0.02), ("tpot", 0.003), ("ttft", 0.02), ("tpot", 1e-6)
    ]  # fmt: skip
