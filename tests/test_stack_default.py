"""The default embedded stack, brought up by the supervisor from fixtures/topology/default.yaml,
exercised the way a game day would: through the gateway, with faults on its edges."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import REPO

from aichaos.experiments.proxies import ToxiproxyClient
from aichaos.harness.stack import Stack

TOPOLOGY = REPO / "fixtures" / "topology" / "default.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack.up(TOPOLOGY, tmp_path_factory.mktemp("stack"), prometheus=False) as running:
        yield running


def ask(stack, text: str, tier: str = "enterprise", stream: bool = False, max_tokens: int = 4):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": stream}  # fmt: skip
    return httpx.post(f"{stack.url('gateway')}/v1/chat/completions", json=body,
                      headers={"X-Tier": tier}, timeout=30)  # fmt: skip


def proxies(stack) -> ToxiproxyClient:
    return ToxiproxyClient(stack.url("toxiproxy"))


def test_streamed_rag_answer_with_sources_flows_through_the_proxies(stack):
    body = {"messages": [{"role": "user", "content": "How do I read a file line by line?"}],
            "max_tokens": 6, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with httpx.stream("POST", f"{stack.url('gateway')}/v1/chat/completions", json=body,
                      headers={"X-Tier": "enterprise"}, timeout=30) as resp:  # fmt: skip
        events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        headers = resp.headers
    assert headers["x-served-by"] in ("llm-1", "llm-2") and headers["x-degraded"] == "none"
    assert len(headers["x-sources"].split(",")) >= 3  # the prompt cites retrieved chunks
    usage = json.loads(events[-2][6:])["usage"]
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] > 200  # sources inside
    assert events[-1] == "data: [DONE]"
    names = {p for p in proxies(stack).proxies()}
    assert {"llm-1", "llm-2", "fallback", "retriever"} <= names


def test_repeats_hit_the_cache(stack):
    first = ask(stack, "what is a token bucket?")
    again = ask(stack, "what is a token bucket?")
    assert first.status_code == again.status_code == 200
    assert again.headers["x-served-by"] == "cache"


def test_free_tier_over_its_limit_is_refused_while_enterprise_is_served(stack):
    # the embedded topology lets the free tier send 180 a minute (a burst of 180, then 3 a
    # second): 400 at once overrun it, however slow the machine
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(stack, f"free {i}", tier="free", max_tokens=1),
                                range(400)))  # fmt: skip
    elapsed = time.monotonic() - started
    admitted = sum(a.status_code == 200 for a in answers)
    refused = [a for a in answers if a.status_code == 429]
    assert admitted + len(refused) == 400 and admitted > 0 and refused
    assert admitted <= 180 + 3 * elapsed + 1  # the bucket, never more
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert ask(stack, "enterprise meanwhile").status_code == 200


def test_killed_replica_is_absorbed_and_restarted(stack):
    old = stack.kill("llm-1")
    served = [ask(stack, f"during kill {i}") for i in range(6)]
    assert all(a.status_code == 200 for a in served)
    assert {a.headers["x-served-by"] for a in served} <= {"llm-2", "cache"}
    new = stack.wait_ready("llm-1", timeout=30, not_pid=old)
    assert new != old
    events = [json.loads(line) for line in Path(stack.events_path).read_text().splitlines()]
    kinds = {(e["name"], e["kind"]) for e in events if e.get("name") == "llm-1"}
    assert any("exit" in kind for _, kind in kinds) and any("restart" in k for _, k in kinds)


def test_retriever_down_gives_degraded_answers(stack):
    with proxies(stack).outage("retriever"):
        answer = ask(stack, "a question while retrieval is down")
    assert answer.status_code == 200 and "retrieval" in answer.headers["x-degraded"]


def test_pool_down_means_fallback(stack):
    tp = proxies(stack)
    with tp.outage("llm-1"), tp.outage("llm-2"):
        during = [ask(stack, f"outage {i}") for i in range(4)]
        metrics = httpx.get(f"{stack.url('gateway')}/metrics").text
    assert all(a.status_code == 200 and a.headers["x-served-by"] == "fallback" for a in during)
    assert 'gateway_breaker_state{dependency="llm-1"} 2.0' in metrics
    # the pool is back: after open_s (10 s in the embedded topology) the breakers half-open
    # and good probes close them again
    deadline = time.monotonic() + 40
    closed = False
    while time.monotonic() < deadline and not closed:
        time.sleep(1)
        ask(stack, f"after the outage {time.monotonic()}")
        metrics = httpx.get(f"{stack.url('gateway')}/metrics").text
        closed = all(f'gateway_breaker_state{{dependency="{r}"}} 0.0' in metrics
                     for r in ("llm-1", "llm-2"))  # fmt: skip
    assert closed, "the breakers did not close after the pool came back"


def test_no_llm_proxy_leads_to_a_fault_api(stack):
    state = stack.status().services
    assert [n for n, svc in state.items() if svc.admin_url] == ["llm-1", "llm-2", "fallback"]
    fault = {"kind": "error", "status": 503}
    for name in ("llm-1", "llm-2", "fallback"):
        through_proxy = f"{stack.proxy_url(name)}/admin/faults"
        assert httpx.post(through_proxy, json=fault, timeout=5).status_code == 404
        assert httpx.get(through_proxy, timeout=5).status_code == 404
        admin = httpx.get(f"{stack.admin_url(name)}/admin/faults", timeout=5)
        assert admin.status_code == 200 and admin.json()["faults"] == []


def test_stack_down_leaves_no_process(tmp_path):
    running = Stack.up(TOPOLOGY, tmp_path / "run", prometheus=False)
    pids = [p for p in (running.pid(n) for n in ("gateway", "llm-1", "retriever")) if p]
    running.down()
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
