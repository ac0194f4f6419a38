"""A conversation against a real vLLM engine (the session's one, CPU build): its later turns
find the earlier ones in the engine's prefix cache, as vLLM's own metrics count it, and every
turn's intended prompt length is what the engine served, real answers in the history included.

Without a vLLM environment the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import sys

import httpx
import pytest
from conftest import VLLM_READY_S
from prometheus_client.parser import text_string_to_metric_families

from aichaos.rundir import read_requests
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.spec import Scenario

pytestmark = pytest.mark.timeout(VLLM_READY_S + 300)
FIRST, FOLLOW_UP, ANSWER = 400, 30, 16  # tokens


def metrics(url: str) -> dict[str, float]:
    """Every sample's value by its name (labels summed), and the KV block size."""
    out: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
            if sample.name == "vllm:cache_config_info":
                out["block_size"] = float(sample.labels["block_size"])
    return out


def test_later_turns_show_cached_prompt_tokens(vllm_engine, tmp_path):
    scenario = Scenario.from_dict({
        "name": "vllm-conversations",
        "duration": 8,
        "seed": 4242,  # text no other test sends: a first turn finds nothing in the cache
        "arrival": {"process": "constant"},
        "rate": {"shape": "constant", "rps": 0.5},
        "tiers": [{"name": "free", "share": 1}],
        "workload": {"prompt_tokens": FIRST, "output_tokens": ANSWER,
                     "sessions": {"turns": 3, "think": 0.5, "prompt_tokens": FOLLOW_UP}},
        "target": {"timeout": 60},
    })  # fmt: skip
    runner = LoadRunner(scenario, vllm_engine.url, tmp_path)
    assert runner.size_prompts()["source"] == "tokenize"
    before = metrics(vllm_engine.url)
    runner.start()
    assert runner.wait(timeout=120, kill=True) == 0, runner.log_tail()
    after = metrics(vllm_engine.url)
    df = read_requests(tmp_path)[0].to_pandas().sort_values("t_sent")
    assert len(df) >= 9 and (df.status == "ok").all(), df.error_detail.dropna().tolist()[:3]
    # the real answers in the history were counted in the engine's tokens
    off = (df.served_prompt_tokens - df.intended_prompt_tokens).abs()
    assert (off <= 0.01 * df.intended_prompt_tokens).all(), df[off > 0].to_dict("records")[:2]
    block = int(after["block_size"])
    floor = 0  # the cache's share the earlier turns' prompts promise, in whole blocks
    for _, turns in df.groupby("session"):
        assert turns.turn.tolist() == list(range(1, len(turns) + 1))
        assert turns.served_prompt_tokens.is_monotonic_increasing
        prompts = turns.served_prompt_tokens.tolist()
        floor += sum(p // block * block for p in prompts[:-1])
    later = df.turn > 1
    cached = after["vllm:prompt_tokens_cached_total"] - before["vllm:prompt_tokens_cached_total"]
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    queries = after["vllm:prefix_cache_queries_total"] - before["vllm:prefix_cache_queries_total"]
    print(f"vLLM: TTFT turn 1 {df.ttft_s[~later].mean() * 1000:.1f} ms, later turns "
          f"{df.ttft_s[later].mean() * 1000:.1f} ms; cached {cached:.0f} of "
          f"{df.served_prompt_tokens[later].sum()} prompt tokens of later turns "
          f"(at least {floor} expected), hits {hits:.0f} of {queries:.0f} queried, "
          f"block {block}", file=sys.stderr)  # fmt: skip
    assert later.sum() >= 6
    assert cached >= floor > 0 and hits >= floor
    # and none of it went to first turns: at most every later turn's prompt came from the cache
    assert cached <= df.served_prompt_tokens[later].sum()
