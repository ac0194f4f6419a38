"""The LLM toxics in front of the real vLLM CPU engine, seen by the official ``openai``
client as a provider's failures; and the gateway's retries, breakers and fallback reacting to
a 429 / 529 storm injected in front of real vLLM replicas (two proxies, two replica edges, in
front of the session's one engine: two engines would not fit this machine's tests)."""

from __future__ import annotations

import itertools
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from conftest import VLLM_MODEL, free_port
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    ServerProcess,
    toxiproxy_fixture,
)
from test_gateway import GATEWAY, ask, gauge, write_config

from aichaos.experiments.proxies import ProxyDecl, ToxiproxyClient

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def proxies(toxiproxy: ServerProcess, vllm_engine):
    """``ToxiproxyClient`` and a function making a proxy in front of the engine."""
    client = ToxiproxyClient(toxiproxy.url)
    made: list[str] = []

    def make(name: str) -> str:
        upstream = urlsplit(vllm_engine.url).netloc
        listen = f"127.0.0.1:{free_port()}"
        client.populate([ProxyDecl(name, listen, upstream)])
        made.append(name)
        return f"http://{listen}"

    yield client, make
    for name in made:
        client.destroy(name)


def chat(url: str, tokens: int = 12, timeout: float = 60.0, content: str = "hello"):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=timeout)
    return client.chat.completions.create(
        model=VLLM_MODEL, messages=[{"role": "user", "content": content}], max_tokens=tokens,
        stream=True, extra_body={"ignore_eos": True},
    )  # fmt: skip


def contents(stream) -> list[str]:
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


def test_each_llm_toxic_in_front_of_vllm_looks_like_a_providers_failure(proxies):
    client, make = proxies
    url = make("vllm")
    assert len(contents(chat(url))) == 12  # clean first: vLLM streams every token
    client.add_toxic("vllm", "http_error", name="limit", attributes={"status": 429})
    with pytest.raises(openai.RateLimitError) as caught:
        chat(url)
    assert caught.value.response.headers["retry-after"] == "1"
    client.remove_toxic("vllm", "limit")
    client.add_toxic("vllm", "http_error", name="busy", attributes={"status": 529})
    with pytest.raises(openai.APIStatusError) as caught:
        chat(url)
    assert caught.value.status_code == 529
    assert caught.value.body["type"] == "overloaded_error"
    client.remove_toxic("vllm", "busy")
    client.add_toxic("vllm", "error_event", name="broken", attributes={"after": 3})
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in chat(url):
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert len(seen) == 3
    client.remove_toxic("vllm", "broken")
    client.add_toxic("vllm", "truncate", name="cut", attributes={"after": 2})
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        contents(chat(url))
    client.remove_toxic("vllm", "cut")
    client.add_toxic("vllm", "hang", name="hang")
    with pytest.raises(openai.APITimeoutError):
        chat(url, timeout=2.0)
    client.remove_toxic("vllm", "hang")
    assert len(contents(chat(url))) == 12  # every toxic gone: clean streams again


def test_delays_in_front_of_vllm(proxies):
    client, make = proxies
    url = make("vllm-slow")
    client.add_toxic("vllm-slow", "first_token_delay", name="late", attributes={"delay": 1500})
    start = time.monotonic()
    stream = chat(url)
    first = next(c for c in stream if c.choices and c.choices[0].delta.content)
    assert first and time.monotonic() - start >= 1.5
    list(stream)
    client.remove_toxic("vllm-slow", "late")
    client.add_toxic("vllm-slow", "slow_tokens", name="slow", attributes={"delay": 150})
    times = []
    for chunk in chat(url, tokens=6):
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic())
    # events, not tokens: vLLM puts two tokens in one event when its client falls behind
    assert 4 <= len(times) <= 6, times
    # the proxy lets them out 150 ms apart; a client starved by the engine on 2 cores may
    # read two at once, so the median gap and the whole span are checked, not every gap
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] >= 0.14 and times[-1] - times[0] >= 0.14 * len(gaps), gaps
    client.remove_toxic("vllm-slow", "slow")
    client.add_toxic("vllm-slow", "stall", name="stall", attributes={"after": 2, "duration": 1500})
    times = []
    for chunk in chat(url, tokens=6):
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic())
    assert len(times) >= 3 and times[2] - times[1] >= 1.5, times


def test_the_gateway_reacts_to_a_storm_in_front_of_real_vllm(proxies, start_sim, tmp_path):
    client, make = proxies
    r1, r2 = make("r1"), make("r2")
    fallback = start_sim("--profile", "hosted-api")
    config = write_config(tmp_path, "llm_breaker: {open_s: 30, consecutive: 2}\n")
    pool = ["--llm", f"r1={r1}", "--llm", f"r2={r2}", "--set", f"model={VLLM_MODEL}"]
    gw = start_sim.service(GATEWAY, *pool, "--fallback", fallback.url, "--config", config)
    assert ask(gw.url, "before").headers["x-served-by"] in ("r1", "r2")
    # 429s with Retry-After on r1 only: retried on r2, every answer served
    client.add_toxic("r1", "http_error", name="limit", attributes={"status": 429})
    answers = [ask(gw.url, f"limited {i}") for i in range(4)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert gauge(gw.url, "gateway_provider_errors_total", dependency="r1", kind="http_429") >= 1
    assert any(a.headers["x-attempts"] == "2" for a in answers)
    assert {a.headers["x-served-by"] for a in answers} <= {"r2", "fallback"}
    client.remove_toxic("r1", "limit")
    # 529 overloaded on both: the breakers open, the fallback provider serves
    for name in ("r1", "r2"):
        client.add_toxic(name, "http_error", name="busy", attributes={"status": 529})
    answers = [ask(gw.url, f"overloaded {i}") for i in range(6)]
    assert all(a.status_code == 200 for a in answers)
    assert answers[-1].headers["x-served-by"] == "fallback"
    assert gauge(gw.url, "gateway_breaker_state", dependency="r1") == 2  # open
    assert gauge(gw.url, "gateway_breaker_state", dependency="r2") == 2
