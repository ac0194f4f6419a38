"""The simulator's /metrics: vLLM's names, types, labels and buckets, parsed as Prometheus does."""

from __future__ import annotations

from pathlib import Path

import httpx
from metric_shapes import metric_shapes
from prometheus_client.parser import text_string_to_metric_families

from aichaos.fixtures.llm_sim.metrics import build_1_2_5_buckets

TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
               10.0, 20.0, 40.0, 80.0]  # fmt: skip
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip

EXPECTED_TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:request_success": "counter",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
    "vllm:request_inference_time_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}
BUCKETS = {
    "vllm:time_to_first_token_seconds": TTFT_BUCKETS,
    "vllm:inter_token_latency_seconds": ITL_BUCKETS,
    "vllm:e2e_request_latency_seconds": LATENCY_BUCKETS,
    "vllm:request_queue_time_seconds": LATENCY_BUCKETS,
    "vllm:request_prefill_time_seconds": LATENCY_BUCKETS,
    "vllm:request_decode_time_seconds": LATENCY_BUCKETS,
    "vllm:request_inference_time_seconds": LATENCY_BUCKETS,
    "vllm:request_prompt_tokens": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
    "vllm:request_generation_tokens": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def families(url: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}


def sample(fams, name: str, suffix: str = "", **labels) -> float:
    fam = fams[name]
    return sum(
        s.value
        for s in fam.samples
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_build_1_2_5_buckets():
    assert build_1_2_5_buckets(4096) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert build_1_2_5_buckets(8192)[-1] == 5000


def test_names_types_labels_and_buckets(h100_sim):
    for i in range(3):
        httpx.post(f"{h100_sim.url}/v1/completions",
                   json={"prompt": f"count {i}", "max_tokens": 5, "ignore_eos": True})  # fmt: skip
    fams = families(h100_sim.url)
    for name, kind in EXPECTED_TYPES.items():
        assert fams[name].type == kind, name
        for s in fams[name].samples:
            if s.name.endswith("_created"):
                continue
            assert s.labels["model_name"] == MODEL and s.labels["engine"] == "0", s
    for name, buckets in BUCKETS.items():
        bounds = [float(s.labels["le"]) for s in fams[name].samples if s.name == f"{name}_bucket"]
        assert bounds == [float(b) for b in buckets] + [float("inf")], name
    reasons = {s.labels["finished_reason"] for s in fams["vllm:request_success"].samples}
    assert {"stop", "length", "abort"} <= reasons


def test_counters_follow_the_requests(h100_sim):
    before = families(h100_sim.url)
    for i in range(4):
        body = {"prompt": f"alpha beta {i}", "max_tokens": 6, "ignore_eos": True}
        httpx.post(f"{h100_sim.url}/v1/completions", json=body)
    after = families(h100_sim.url)

    def delta(name, suffix="", **labels):
        return sample(after, name, suffix, **labels) - sample(before, name, suffix, **labels)

    assert delta("vllm:generation_tokens", "_total") == 24
    assert delta("vllm:prompt_tokens", "_total") == 4 * 3
    assert delta("vllm:request_success", "_total", finished_reason="length") == 4
    assert delta("vllm:time_to_first_token_seconds", "_count") == 4
    assert delta("vllm:inter_token_latency_seconds", "_count") == 4 * 5
    assert delta("vllm:e2e_request_latency_seconds", "_count") == 4
    assert delta("vllm:request_generation_tokens", "_sum") == 24
    assert delta("vllm:prefix_cache_queries", "_total") == 12
    assert sample(after, "vllm:num_requests_running") == 0


# /metrics of a real vLLM 0.32.0 (CPU) engine serving the project's model, max_model_len 2048
ENGINE_METRICS = Path(__file__).parent / "data" / "vllm" / "metrics-0.32.0.txt"
SLO_FAMILIES = [
    "vllm:request_time_per_output_token_seconds",
    "vllm:iteration_tokens_total",
    "vllm:num_requests_waiting_by_reason",
    "vllm:prompt_tokens_cached",
    "vllm:request_num_preemptions",
    "vllm:request_prefill_kv_computed_tokens",
]


def test_every_family_has_the_engines_shape(start_sim):
    """Each family the simulator exposes has the real engine's type, labels and buckets."""
    sim = start_sim("--model", "tiny", "--max-model-len", "2048")
    httpx.post(f"{sim.url}/v1/completions", json={"prompt": "a b c", "max_tokens": 3})
    ours = metric_shapes(httpx.get(f"{sim.url}/metrics").text)
    engine = metric_shapes(ENGINE_METRICS.read_text())
    assert set(SLO_FAMILIES) <= set(ours)
    assert {name: engine.get(name) for name in ours} == ours
