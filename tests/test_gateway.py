"""The gateway as a real process in front of real simulators (and proxies), over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from aichaos.experiments.proxies import ProxyDecl, ToxiproxyClient

GATEWAY = "aichaos.fixtures.gateway"


def ask(url: str, text: str = "hi", tier: str = "pro", max_tokens: int = 4, **extra):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "ignore_eos": True, **extra}  # fmt: skip
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"X-Tier": tier},
                      timeout=30)  # fmt: skip


def gauge(url: str, name: str, **labels) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def write_config(tmp_path, text: str):
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def two_replicas(start_sim):
    return start_sim("--seed", "1"), start_sim("--seed", "2"), start_sim("--profile", "hosted-api")


def gateway(start_sim, sims, *extra: str):
    r1, r2, fb = sims
    return start_sim.service(GATEWAY, "--llm", f"r1={r1.url}", "--llm", f"r2={r2.url}",
                             "--fallback", fb.url, *extra)  # fmt: skip


def test_openai_sdk_streams_through_the_gateway(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="aichaos-rag", messages=[{"role": "user", "content": "What is a burn rate?"}],
        max_tokens=6, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True}, extra_headers={"X-Tier": "enterprise"},
    )  # fmt: skip
    assert raw.headers["x-served-by"] in ("r1", "r2") and raw.headers["x-attempts"] == "1"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 6 and chunks[-1].usage.completion_tokens == 6
    assert gauge(gw.url, "gateway_first_token_delay_seconds_count") == 1


def test_a_request_id_reaches_the_replica_and_comes_back(start_sim, tmp_path):
    log = tmp_path / "served.jsonl"
    replica = start_sim("--request-log", str(log))
    sims = (replica, replica, start_sim("--profile", "hosted-api"))
    gw = gateway(start_sim, sims)
    body = {"messages": [{"role": "user", "content": "traced"}], "max_tokens": 3}
    answer = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                        headers={"X-Request-Id": "game-day-42"})  # fmt: skip
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "game-day-42"
    served = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["request_id"] for s in served] == ["game-day-42"]


def test_least_outstanding_balancing_uses_both_replicas(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    served = [ask(gw.url, f"q{i}").headers["x-served-by"] for i in range(12)]
    assert {"r1", "r2"} <= set(served)


def test_killed_replica_is_absorbed_by_the_other(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    two_replicas[0].kill()
    answers = [ask(gw.url, f"after kill {i}") for i in range(6)]
    assert all(a.status_code == 200 for a in answers)
    assert {a.headers["x-served-by"] for a in answers} == {"r2"}


def test_provider_errors_are_retried_on_another_replica(start_sim):
    bad = start_sim("--fault", "error:status=503")
    good = start_sim()
    fb = start_sim("--profile", "hosted-api")
    gw = gateway(start_sim, (bad, good, fb))
    answers = [ask(gw.url, f"retry {i}") for i in range(4)]
    assert all(a.status_code == 200 and a.headers["x-served-by"] == "r2" for a in answers)
    assert any(a.headers["x-attempts"] == "2" for a in answers)
    assert gauge(gw.url, "gateway_provider_errors_total", dependency="r1", kind="http_5xx") >= 1
    assert gauge(gw.url, "gateway_retries_total", dependency="llm") >= 1


def test_pool_down_means_fallback_then_breakers_close_after_recovery(start_sim, tmp_path):
    tp = start_sim.service("aichaos.experiments.toxiproxy", ready_path="/version")
    r1, r2, fb = start_sim(), start_sim(), start_sim("--profile", "hosted-api")
    ports = {"r1": free_port(), "r2": free_port()}
    proxies = ToxiproxyClient(tp.url)
    proxies.populate([ProxyDecl(name, f"127.0.0.1:{ports[name]}", f"127.0.0.1:{s.port}")
                      for name, s in (("r1", r1), ("r2", r2))])  # fmt: skip
    cfg = write_config(tmp_path, "llm_breaker: {open_s: 1.0, consecutive: 2}\n")
    gw = start_sim.service(GATEWAY, "--llm", f"r1=http://127.0.0.1:{ports['r1']}", "--llm",
                           f"r2=http://127.0.0.1:{ports['r2']}", "--fallback", fb.url,
                           "--config", cfg)  # fmt: skip
    assert ask(gw.url, "before").headers["x-served-by"] in ("r1", "r2")
    proxies.disable("r1")
    proxies.disable("r2")
    during = [ask(gw.url, f"outage {i}") for i in range(5)]
    assert all(a.status_code == 200 for a in during)
    assert {a.headers["x-served-by"] for a in during} == {"fallback"}
    assert all("fallback" in a.headers["x-degraded"] for a in during)
    assert gauge(gw.url, "gateway_breaker_state", dependency="r1") == 2  # open
    assert gauge(gw.url, "gateway_breaker_state", dependency="r2") == 2
    assert gauge(gw.url, "gateway_fallbacks_total", tier="pro") == 5
    proxies.enable("r1")
    proxies.enable("r2")
    time.sleep(1.2)  # the breakers' open period
    after = [ask(gw.url, f"recovered {i}").headers["x-served-by"] for i in range(8)]
    assert set(after) <= {"r1", "r2"}
    assert gauge(gw.url, "gateway_breaker_state", dependency="r1") == 0  # closed again
    assert gauge(gw.url, "gateway_breaker_state", dependency="r2") == 0


def test_retriever_down_gives_degraded_answers(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas, "--retriever", f"http://127.0.0.1:{free_port()}")
    answer = ask(gw.url, "where are the docs?")
    assert answer.status_code == 200 and answer.headers["x-degraded"] == "retrieval"
    assert gauge(gw.url, "gateway_degraded_total", reason="retrieval") == 1


def test_free_tier_over_its_limit_gets_429_while_enterprise_is_served(
    start_sim, two_replicas, tmp_path
):
    cfg = write_config(tmp_path, "rate_limits_per_min: {free: 3, pro: 200, enterprise: 2000}\n")
    gw = gateway(start_sim, two_replicas, "--config", cfg)
    free = [ask(gw.url, f"f{i}", tier="free") for i in range(5)]
    assert [a.status_code for a in free] == [200, 200, 200, 429, 429]
    assert int(free[-1].headers["retry-after"]) >= 1
    assert free[-1].json()["error"]["code"] == 429
    assert all(ask(gw.url, f"e{i}", tier="enterprise").status_code == 200 for i in range(5))
    assert gauge(gw.url, "gateway_shed_total", tier="free", reason="rate_limit") == 2


def test_overload_sheds_free_first(start_sim, tmp_path):
    slow = start_sim("--profile", "fixed-latency")
    fb = start_sim("--profile", "hosted-api")
    cfg = write_config(tmp_path, "shed_in_flight: {free: 1, pro: 2, enterprise: 3}\n")
    gw = start_sim.service(
        GATEWAY, "--llm", f"r1={slow.url}", "--fallback", fb.url, "--config", cfg
    )
    holder = threading.Thread(target=ask, args=(gw.url, "long", "pro", 150))
    holder.start()
    time.sleep(0.5)
    shed = ask(gw.url, "x", tier="free")
    served = ask(gw.url, "y", tier="enterprise")
    holder.join(30)
    assert shed.status_code == 429 and shed.headers["retry-after"] == "1"
    assert served.status_code == 200


def test_repeats_hit_the_cache(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    first = ask(gw.url, "same question", max_tokens=5)
    again = ask(gw.url, "same question", max_tokens=5)
    assert first.headers["x-served-by"] in ("r1", "r2") and again.headers["x-served-by"] == "cache"
    assert first.json()["choices"][0]["message"] == again.json()["choices"][0]["message"]
    streamed = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": "same question"}], "max_tokens": 5,
        "ignore_eos": True, "stream": True})  # fmt: skip
    assert streamed.headers["x-served-by"] == "cache" and streamed.text.endswith("data: [DONE]\n\n")
    families = text_string_to_metric_families(httpx.get(f"{gw.url}/metrics").text)
    held = next(f for f in families if f.name == "gateway_cache_entries").samples[0].value
    assert held == 1  # one question, asked three times


def test_no_retry_after_the_first_token(start_sim):
    broken = start_sim("--fault", "error_chunk:after_tokens=2")
    other = start_sim()
    fb = start_sim("--profile", "hosted-api")
    gw = start_sim.service(GATEWAY, "--llm", f"r1={broken.url}", "--fallback", fb.url)
    del other
    resp = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": "q"}], "max_tokens": 8, "ignore_eos": True,
        "stream": True})  # fmt: skip
    events = [e for e in resp.text.split("\n\n") if e]
    assert resp.headers["x-attempts"] == "1"
    assert '"error"' in events[-2] and events[-1] == "data: [DONE]"


def test_client_errors_pass_through_and_are_not_retried(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    resp = ask(gw.url, "x", max_tokens=100_000)
    assert resp.status_code == 400 and "max_model_len" in resp.json()["error"]["message"]
    assert ask(gw.url, "x", tier="platinum").status_code == 401
    bad = httpx.post(f"{gw.url}/v1/chat/completions", content=b"{", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == 400


def test_health_ready_metrics(start_sim, two_replicas):
    gw = gateway(start_sim, two_replicas)
    assert httpx.get(f"{gw.url}/health").status_code == 200
    assert httpx.get(f"{gw.url}/ready").json() == {"llm": True, "retriever": True}
    names = {f.name for f in text_string_to_metric_families(httpx.get(f"{gw.url}/metrics").text)}
    assert {"gateway_requests", "gateway_time_to_first_token_seconds", "gateway_breaker_state",
            "gateway_fallbacks", "gateway_shed", "gateway_retries", "gateway_cache_hits",
            "gateway_provider_errors", "gateway_errors"} <= names  # fmt: skip


def test_bad_gateway_flags_give_one_line():
    proc = subprocess.run([sys.executable, "-m", GATEWAY, "serve", "--llm", "r1=nowhere"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--llm" in proc.stderr
