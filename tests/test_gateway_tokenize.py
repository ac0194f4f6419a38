"""The gateway speaks the sizing protocol: ``/tokenize`` answered by a primary replica and
``/v1/models`` carrying the pool's context length, so a run through the gateway sizes its
prompts in the model's tokens. Real simulators and a real gateway, over HTTP on loopback."""

from __future__ import annotations

import httpx
import pytest
from conftest import ServiceProcess, free_port

from aichaos.fixtures.gateway.rag import with_sources
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.sizing import probe_target, size_schedule
from aichaos.scenarios.spec import Scenario

GATEWAY = "aichaos.fixtures.gateway"
RETRIEVER = "aichaos.fixtures.retriever"
PROMPT = "How do I open a file in Python, and close it again?"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]


def scenario(**target) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "through-the-gateway",
            "duration": 2,
            "seed": 3,
            "rate": {"shape": "constant", "rps": 6},
            "target": {"timeout": 20, **target},
            "workload": {
                "prompt_tokens": {"dist": "lognormal", "mean": 300, "sigma": 0.8, "max": 4000},
                "output_tokens": {"dist": "uniform", "low": 8, "high": 40},
            },
        }
    )


def tokenize(url: str, body: dict, tier: str = "free") -> httpx.Response:
    return httpx.post(f"{url}/tokenize", json=body, headers={"X-Tier": tier}, timeout=30)


def card(url: str) -> dict:
    resp = httpx.get(f"{url}/v1/models", timeout=30)
    assert resp.status_code == 200
    return resp.json()["data"][0]


def start_gateway(start_sim, *replicas: str, extra: tuple[str, ...] = ()):
    llms = [arg for i, url in enumerate(replicas) for arg in ("--llm", f"r{i + 1}={url}")]
    fallback = start_sim("--profile", "hosted-api", "--max-model-len", "100000")
    return start_sim.service(GATEWAY, *llms, "--fallback", fallback.url, *extra)


@pytest.fixture
def pool(start_sim):
    """Two replicas with different contexts behind a gateway."""
    r1 = start_sim("--seed", "1", "--max-model-len", "1024")
    r2 = start_sim("--seed", "2", "--max-model-len", "768")
    return r1, r2, start_gateway(start_sim, r1.url, r2.url)


def test_tokenize_through_the_gateway_counts_as_the_replica_does(pool):
    r1, _, gw = pool
    for fields in ({"prompt": PROMPT}, {"messages": MESSAGES, "add_generation_prompt": True}):
        via_gateway = tokenize(gw.url, {"model": "aichaos-rag", **fields})
        assert via_gateway.status_code == 200, via_gateway.text
        own = tokenize(r1.url, fields).json()
        got = via_gateway.json()
        assert got["count"] == own["count"] == len(got["tokens"]) > 10
        assert got["tokens"] == own["tokens"]
        assert got["max_model_len"] in (1024, 768)  # whichever replica answered


def test_a_bad_tokenize_request_gets_the_replicas_answer(pool):
    _, _, gw = pool
    missing = tokenize(gw.url, {"model": "aichaos-rag"})
    assert missing.status_code == 400
    assert "`prompt` or `messages`" in missing.json()["error"]["message"]
    assert tokenize(gw.url, {"prompt": "x"}, tier="platinum").status_code == 401


def test_tokenize_is_not_held_to_the_tier_rate_limit(start_sim, tmp_path):
    r1 = start_sim()
    config = tmp_path / "gateway.yaml"
    config.write_text("rate_limits_per_min: {free: 3}\n")
    gw = start_gateway(start_sim, r1.url, extra=("--config", str(config)))
    assert [tokenize(gw.url, {"prompt": f"q {i}"}).status_code for i in range(10)] == [200] * 10
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    chats = [
        httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                   headers={"X-Tier": "free"}).status_code
        for _ in range(4)
    ]  # fmt: skip
    assert chats == [200, 200, 200, 429]  # the counts took nothing from the tier's bucket


def test_models_card_carries_the_smallest_replica_context(pool):
    _, _, gw = pool
    got = card(gw.url)
    assert got["id"] == "aichaos-rag" and got["max_model_len"] == 768


def test_a_replica_that_answers_late_is_asked_again(start_sim):
    late_port = free_port()
    r1 = start_sim("--max-model-len", "1024")
    gw = start_gateway(start_sim, r1.url, f"http://127.0.0.1:{late_port}")
    assert card(gw.url)["max_model_len"] == 1024  # r2 is not up: the one known context
    start_sim("--max-model-len", "512", port=late_port)
    assert card(gw.url)["max_model_len"] == 512


def test_with_the_replicas_down_tokenize_is_503_and_the_card_has_no_context(start_sim):
    ports = [free_port(), free_port()]
    gw = start_gateway(start_sim, *(f"http://127.0.0.1:{p}" for p in ports))
    assert "max_model_len" not in card(gw.url)
    down = tokenize(gw.url, {"model": "aichaos-rag", "prompt": PROMPT})
    assert down.status_code == 503
    err = down.json()["error"]
    assert err["code"] == 503 and err["type"] == "ServiceUnavailableError"
    assert "connect" in err["message"]


def test_replicas_killed_after_start_give_503(pool):
    r1, r2, gw = pool
    assert tokenize(gw.url, {"prompt": PROMPT}).status_code == 200
    r1.kill()
    r2.kill()
    down = tokenize(gw.url, {"prompt": PROMPT})
    assert down.status_code == 503 and down.json()["error"]["code"] == 503


def test_sizing_through_the_gateway_counts_with_the_replicas_tokenizer(pool):
    r1, _, gw = pool
    s = scenario()
    info = probe_target(gw.url, s)
    assert info.tokenize and info.max_model_len == 768 and info.model == "aichaos-rag"
    assert info.notes == []
    # the whole sizing (hundreds of counts on the free tier, whose limit is 20 a minute)
    schedule = build_schedule(s)
    summary = size_schedule(s, schedule, gw.url).summary
    assert summary["source"] == "tokenize" and summary["max_model_len"] == 768
    assert summary["off_after_sizing"] == 0 and summary["notes"] == []
    assert summary["capped"] > 0  # the lognormal tail reaches past 768 tokens
    # what the gateway counted is what the replica itself counts
    own = size_schedule(s, build_schedule(s), r1.url).summary
    assert own["source"] == "tokenize" and own["off_after_sizing"] == 0


def test_sources_that_would_overflow_the_context_are_left_out(start_sim, tmp_path):
    """The gateway keeps the most relevant sources that fit beside the prompt and the output
    asked for: sized so that exactly two of the four fit, two are sent, the prompt is served
    within the context, and the other two are counted as dropped."""
    retriever = ServiceProcess(RETRIEVER, [], tmp_path / "retriever.log", wait=False)
    start_sim.started.append(retriever)
    retriever.wait_ready(90)  # the first start builds the index
    question = [{"role": "user", "content": "How do I read a file line by line in Python?"}]
    found = httpx.post(f"{retriever.url}/search", json={"query": question[0]["content"], "k": 4},
                       timeout=30).json()["results"]  # fmt: skip
    probe = start_sim()
    counts = [tokenize(probe.url, {"messages": with_sources(question, found[:n])}).json()["count"]
              for n in (1, 2, 3)]  # fmt: skip
    output = 50
    context = counts[1] + output + (counts[2] - counts[1]) // 2  # room for two, not three
    replica = start_sim("--max-model-len", str(context))
    gw = start_gateway(start_sim, replica.url, extra=("--retriever", retriever.url))
    assert card(gw.url)["max_model_len"] == context  # the gateway learns the pool's context
    resp = httpx.post(f"{gw.url}/v1/chat/completions", headers={"X-Tier": "enterprise"},
                      json={"messages": question, "max_tokens": output, "ignore_eos": True},
                      timeout=30)  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Sources"].split(",") == [str(c["id"]) for c in found[:2]]
    usage = resp.json()["usage"]
    assert usage["prompt_tokens"] == counts[1]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= context
    metrics = httpx.get(f"{gw.url}/metrics", timeout=10).text
    assert "gateway_sources_dropped_total 2.0" in metrics
