"""The simulator's OpenAI-compatible API, exercised with the official openai SDK over HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from aichaos.fixtures.llm_sim.tokenizer import tokenize

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def client(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_chat_stream_with_usage(h100_sim):
    stream = client(h100_sim).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is an error budget?"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant" and first.delta.content == ""
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    # one token per chunk while the stream keeps up, several when it falls behind (as vLLM)
    assert 1 <= len(content) <= 12 and len(tokenize("".join(content))) == 12
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 12
    assert usage_chunk.usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.id.startswith("chatcmpl-") and c.id == chunks[0].id for c in chunks)


def test_completions_stream_with_usage(h100_sim):
    chunks = list(
        client(h100_sim).completions.create(
            model=MODEL, prompt="The quick brown fox", max_tokens=7, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert 1 <= len(texts) <= 7 and all(texts) and len(tokenize("".join(texts))) == 7
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 7 and chunks[-1].object == "text_completion"
    assert chunks[-1].usage.prompt_tokens == 4


def test_raw_stream_format_is_vllms(h100_sim):
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}  # fmt: skip
    with httpx.stream("POST", f"{h100_sim.url}/v1/completions", json=body) as resp:
        raw = resp.read().decode()
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    assert "event:" not in raw and ", " not in raw  # compact JSON, no event lines
    datas = [json.loads(e[6:]) for e in events[:-2]]
    # continuous usage: every chunk carries cumulative usage
    counts = [d["usage"]["completion_tokens"] for d in datas]
    assert counts[-2:] == [3, 3] and counts[:-1] == sorted(set(counts[:-1]))


def test_chunks_without_usage_omit_the_key(h100_sim):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{h100_sim.url}/v1/chat/completions", json=body) as resp:
        events = [e for e in resp.read().decode().split("\n\n") if e.startswith("data: {")]
    assert events and all('"usage"' not in e for e in events)


def test_non_streaming_chat_and_completion(h100_sim):
    c = client(h100_sim)
    chat = c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        extra_body={"ignore_eos": True},
    )
    assert chat.object == "chat.completion" and chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 5 and chat.choices[0].message.role == "assistant"
    comp = c.completions.create(
        model=MODEL, prompt="hello", max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert comp.usage.completion_tokens == 4 and comp.choices[0].text


def test_generation_is_deterministic_and_honours_stop_and_eos(start_sim):
    sim = start_sim("--profile", "fixed-latency", "--text", "echo")
    c = client(sim)
    model = "fixed-latency"
    eos = {"ignore_eos": True}
    first = c.completions.create(
        model=model, prompt="alpha beta gamma", max_tokens=6, extra_body=eos
    )
    again = c.completions.create(
        model=model, prompt="alpha beta gamma", max_tokens=6, extra_body=eos
    )
    assert first.choices[0].text == again.choices[0].text == " alpha beta gamma alpha beta gamma"
    stopped = c.completions.create(model=model, prompt="alpha beta gamma", max_tokens=6,
                                   stop=["gamma"], extra_body=eos)  # fmt: skip
    assert stopped.choices[0].text == " alpha beta " and stopped.choices[0].finish_reason == "stop"
    # without ignore_eos the model stops on its own, never before min_tokens
    natural = [
        c.completions.create(model=model, prompt=f"p{i}", max_tokens=500, extra_body={
            "min_tokens": 3}).usage.completion_tokens
        for i in range(8)
    ]  # fmt: skip
    assert all(3 <= n <= 500 for n in natural) and min(natural) < 500
    forced = c.completions.create(model=model, prompt="p", max_tokens=120,
                                  extra_body={"ignore_eos": True})  # fmt: skip
    assert forced.usage.completion_tokens == 120 and forced.choices[0].finish_reason == "length"


def test_models_health_ping_version_tokenize(h100_sim):
    url = h100_sim.url
    models = httpx.get(f"{url}/v1/models").json()
    card = models["data"][0]
    assert models["object"] == "list" and card["id"] == MODEL
    assert card["owned_by"] == "vllm" and card["max_model_len"] == 8192
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.content == b""
    assert httpx.get(f"{url}/ping").status_code == 200
    assert httpx.post(f"{url}/ping").status_code == 200
    assert "version" in httpx.get(f"{url}/version").json()
    tok = httpx.post(f"{url}/tokenize", json={"prompt": "Hello, world!"}).json()
    assert tok["count"] == 4 and len(tok["tokens"]) == 4 and tok["max_model_len"] == 8192


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404,
         "The model `nope` does not exist."),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 9000},
         400, "max_tokens=9000 cannot be greater than max_model_len=8192. Please request fewer "
         "output tokens. (parameter=max_tokens, value=9000)"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "word " * 9000}]}, 400,
         "This model's maximum context length is 8192 tokens. However, your prompt contains "
         "at least 8193 input tokens"),
        ({"model": MODEL, "messages": []}, 400, "Cannot apply chat template to an empty"),
        ({"model": MODEL, "messages": "not a list"}, 400, "messages"),
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400,
         "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
          "stream_options": {"include_usage": True}}, 400, "only be defined when `stream=True`"),
    ],
)  # fmt: skip
def test_errors_have_vllms_body(h100_sim, body, status, fragment):
    resp = httpx.post(f"{h100_sim.url}/v1/chat/completions", json=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and fragment in error["message"]


def test_malformed_json_is_400(h100_sim):
    resp = httpx.post(f"{h100_sim.url}/v1/completions", content=b"{not json",
                      headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 400


def test_openai_sdk_raises_typed_errors(h100_sim):
    with pytest.raises(openai.NotFoundError):
        client(h100_sim).chat.completions.create(
            model="missing", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError, match="cannot be greater than max_model_len"):
        client(h100_sim).completions.create(model=MODEL, prompt="x", max_tokens=10_000)
