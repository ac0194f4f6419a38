"""LLM toxics of the embedded proxy, seen by the official ``openai`` client exactly as a
provider's failures, against the simulator; managed with ``toxiproxy-python`` and
``chaostoolkit-toxiproxy`` as users manage any toxic. The same toxics in front of the real
vLLM engine are in ``test_llm_toxics_vllm.py``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from chaostoxi.toxic import actions as chaostoxi_actions
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    ServerProcess,
    toxiproxy_fixture,
)
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

pytestmark = pytest.mark.timeout(180)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def sim(module_sims):
    return module_sims("--profile", "llama-3.1-8b-h100", "--seed", "5")


@pytest.fixture
def proxy(toxiproxy: ServerProcess, sim) -> Iterator:
    """A proxy in front of the simulator, made with ``toxiproxy-python``."""
    parts = urlsplit(toxiproxy.url)
    APIConsumer.host, APIConsumer.port = parts.hostname, parts.port
    server = Toxiproxy()
    upstream = urlsplit(sim.url).netloc
    made = server.create(upstream=upstream, name="llm", listen="127.0.0.1:0")
    yield made
    server.destroy(made)


def client_for(proxy, timeout: float = 30.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{proxy.listen}/v1", api_key="none", max_retries=0,
                         timeout=timeout)  # fmt: skip


def chat(client: openai.OpenAI, content: str = "hello", tokens: int = 12, stream: bool = True):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=tokens,
        stream=stream, extra_body={"ignore_eos": True},
    )  # fmt: skip


def read_stream(stream) -> tuple[list[str], list[float]]:
    """The text of each content chunk, and when it came."""
    texts, times = [], []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
            times.append(time.monotonic())
    return texts, times


def test_a_429_storm_looks_like_a_providers_rate_limit(proxy):
    proxy.add_toxic(type="http_error", name="storm", attributes={"status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client_for(proxy))
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.body["code"] == "rate_limit_exceeded"


def test_a_529_is_anthropics_overloaded_error_and_the_connection_stays_usable(proxy):
    proxy.add_toxic(type="http_error", name="overloaded", attributes={"status": 529})
    http = httpx.Client(timeout=10)
    client = openai.OpenAI(base_url=f"http://{proxy.listen}/v1", api_key="none", max_retries=0,
                           http_client=http)  # fmt: skip
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client)
    assert caught.value.status_code == 529
    assert caught.value.response.json() == {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}
    }  # fmt: skip
    proxy.destroy_toxic("overloaded")
    texts, _ = read_stream(chat(client))  # the same keep-alive connection, clean again
    assert len(texts) == 12


def test_an_error_event_after_three_tokens(proxy):
    proxy.add_toxic(type="error_event", name="midstream",
                    attributes={"after": 3, "status": 503, "message": "engine died"})  # fmt: skip
    texts = []
    with pytest.raises(openai.APIError, match="engine died"):
        for chunk in chat(client_for(proxy)):
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    assert len(texts) == 3


def test_a_truncated_stream_has_no_done(proxy):
    proxy.add_toxic(type="truncate", name="cut", attributes={"after": 4})
    received = bytearray()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12,
            "stream": True, "ignore_eos": True}  # fmt: skip
    url = f"http://{proxy.listen}/v1/chat/completions"
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", url, json=body, timeout=10) as response,
    ):
        for data in response.iter_raw():
            received += data
    assert b"[DONE]" not in received
    assert received.count(b'"content":"') - received.count(b'"content":""') == 4
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        read_stream(chat(client_for(proxy)))


def test_a_stall_a_slow_first_token_and_slow_tokens(proxy):
    client = client_for(proxy)
    start = time.monotonic()
    _, times = read_stream(chat(client))
    clean_ttft = times[0] - start
    proxy.add_toxic(type="first_token_delay", name="late", attributes={"delay": 800})
    start = time.monotonic()
    texts, times = read_stream(chat(client))
    assert len(texts) == 12 and times[0] - start >= 0.8 > clean_ttft
    proxy.destroy_toxic("late")
    proxy.add_toxic(type="stall", name="stall", attributes={"after": 2, "duration": 1000})
    texts, times = read_stream(chat(client))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(texts) == 12 and gaps[1] >= 1.0 and max(gaps[:1] + gaps[2:]) < 1.0
    proxy.destroy_toxic("stall")
    proxy.add_toxic(type="slow_tokens", name="slow", attributes={"delay": 100})
    texts, times = read_stream(chat(client))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(texts) == 12 and min(gaps) >= 0.09


def test_a_hang_reads_the_request_and_never_answers(proxy):
    proxy.add_toxic(type="hang", name="hang")
    with pytest.raises(openai.APITimeoutError):
        chat(client_for(proxy, timeout=1.0))
    proxy.destroy_toxic("hang")
    assert len(read_stream(chat(client_for(proxy)))[0]) == 12


def _hit(client: openai.OpenAI, i: int) -> bool:
    try:
        chat(client, content=f"question {i}", tokens=2, stream=False)
    except openai.RateLimitError:
        return True
    return False


def test_toxicity_hits_that_share_of_requests_and_the_same_ones_again(toxiproxy, proxy):
    client = client_for(proxy)
    attrs = {"status": 429, "seed": 11}
    proxy.add_toxic(type="http_error", name="some", toxicity=0.3, attributes=attrs)
    first = {i for i in range(60) if _hit(client, i)}
    assert 6 <= len(first) <= 30  # 18 expected; binomial(60, 0.3) is in this range 99.9%
    proxy.destroy_toxic("some")
    proxy.add_toxic(type="http_error", name="some", toxicity=0.3, attributes=attrs)
    assert {i for i in range(60) if _hit(client, i)} == first
    proxy.destroy_toxic("some")
    proxy.add_toxic(type="http_error", name="some", toxicity=0.3, attributes={**attrs, "seed": 12})
    assert {i for i in range(60) if _hit(client, i)} != first
    proxy.destroy_toxic("some")
    proxy.add_toxic(type="http_error", name="none", toxicity=0.0, attributes=attrs)
    assert not any(_hit(client, i) for i in range(10))
    metrics = httpx.get(f"{toxiproxy.url}/metrics", timeout=5).text
    labels = 'proxy="llm",toxic="none",type="http_error"'
    assert f"toxiproxy_llm_toxic_requests_total{{{labels}}} 10.0" in metrics
    assert f"toxiproxy_llm_toxic_hits_total{{{labels}}} 0.0" in metrics


def test_a_toxic_added_while_a_connection_is_open_hits_its_next_request(proxy):
    http = httpx.Client(timeout=10)
    client = openai.OpenAI(base_url=f"http://{proxy.listen}/v1", api_key="none", max_retries=0,
                           http_client=http)  # fmt: skip
    assert len(read_stream(chat(client))[0]) == 12  # opens the pooled connection
    proxy.add_toxic(type="error_event", name="now", attributes={"after": 1})
    with pytest.raises(openai.APIError):
        read_stream(chat(client))
    proxy.destroy_toxic("now")
    assert len(read_stream(chat(client))[0]) == 12


def test_bad_llm_toxics_get_the_apis_400_naming_the_attribute(toxiproxy, proxy):
    url = f"{toxiproxy.url}/proxies/llm/toxics"
    cases = [
        ({"type": "http_eror"}, "invalid toxic type"),
        ({"type": "http_error", "attributes": {"status": 700}}, "'status'"),
        ({"type": "http_error", "attributes": {"status": "429"}}, "'status'"),
        ({"type": "http_error", "attributes": {"shape": "aws"}}, "'shape'"),
        ({"type": "stall", "attributes": {"durration": 5}}, "'durration'"),
        ({"type": "slow_tokens", "attributes": {"delay": -1}}, "'delay'"),
        ({"type": "truncate", "stream": "upstream"}, "downstream"),
    ]
    for body, words in cases:
        response = httpx.post(url, json=body, timeout=5)
        assert response.status_code == 400, body
        assert words in response.json()["error"], (body, response.text)
    assert httpx.get(url, timeout=5).json() == []
    made = httpx.post(url, json={"type": "stall", "name": "s"}, timeout=5).json()
    assert made["attributes"] == {"seed": 0, "after": 0, "duration": 10000}
    updated = httpx.post(f"{url}/s", json={"attributes": {"after": 5}}, timeout=5)
    assert updated.json()["attributes"]["after"] == 5
    refused = httpx.post(f"{url}/s", json={"attributes": {"after": "x"}}, timeout=5)
    assert refused.status_code == 400 and "'after'" in refused.text


def test_chaostoolkit_toxiproxy_creates_and_deletes_llm_toxics(toxiproxy, proxy):
    configuration = {"toxiproxy_url": toxiproxy.url}
    assert chaostoxi_actions.create_toxic(
        for_proxy="llm", toxic_name="ctk", toxic_type="http_error", toxicity=1.0,
        attributes={"status": 503}, configuration=configuration,
    )  # fmt: skip
    with pytest.raises(openai.InternalServerError):
        chat(client_for(proxy))
    chaostoxi_actions.delete_toxic(for_proxy="llm", toxic_name="ctk", configuration=configuration)
    assert proxy.toxics() == {}
    assert len(read_stream(chat(client_for(proxy)))[0]) == 12
