"""The simulator measured against a real vLLM engine: the same checks run against both.

Each ``observe_*`` function drives one server as a user would (the openai SDK where it fits,
plain HTTP for /tokenize, /health and /metrics) and returns what it saw. The parametrized
tests assert the contract both servers must keep; ``test_simulator_matches_the_engine``
observes both, asserts what must be identical (every metric family the simulator exposes has
the engine's type, labels and buckets) and writes what still differs as a Markdown table to
``$AICHAOS_CONFORMANCE_TABLE`` when set (``bench/conformance_table.py`` puts it in the README).

The engine is vLLM from ``$AICHAOS_VLLM_PYTHON`` or ``.venv-vllm`` (``make vllm-env``) serving
the project's model (fixtures/llm_model/build.py); without one the engine's half is skipped,
except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from conftest import VLLM_CONTEXT as MAX_MODEL_LEN
from conftest import VLLM_MODEL as MODEL
from metric_shapes import metric_shapes
from prometheus_client.parser import text_string_to_metric_families

TABLE_ENV = "AICHAOS_CONFORMANCE_TABLE"
SLO_FAMILIES = {
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:iteration_tokens_total": "histogram",
    "vllm:num_requests_waiting_by_reason": "gauge",
    "vllm:prompt_tokens_cached": "counter",
    "vllm:request_num_preemptions": "histogram",
    "vllm:request_prefill_kv_computed_tokens": "histogram",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_preemptions": "counter",
    "vllm:request_success": "counter",
}


@dataclass
class Server:
    kind: str  # simulator | vllm
    url: str
    version: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def simulator(module_sims) -> Server:
    sim = module_sims("--model", MODEL, "--max-model-len", str(MAX_MODEL_LEN), "--seed", "3")
    return Server("simulator", sim.url, httpx.get(f"{sim.url}/version").json()["version"])


@pytest.fixture(scope="module")
def engine(vllm_engine) -> Server:
    url = vllm_engine.url
    return Server("vllm", url, httpx.get(f"{url}/version").json()["version"])


@pytest.fixture(params=["simulator", "vllm"])
def server(request) -> Server:
    return request.getfixturevalue("simulator" if request.param == "simulator" else "engine")


# ----- observations -------------------------------------------------------------------------


def sse_events(url: str, path: str, body: dict) -> list[dict]:
    """The JSON events of one raw SSE response, [DONE] required at its end."""
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=60) as resp:
        raw = resp.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]", raw[-300:]
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def keys(obj: dict) -> str:
    return ",".join(sorted(obj))


def observe_stream(server: Server) -> dict:
    """A completion and a chat completion streamed with the SDK, and the same two raw."""
    client = server.client()
    prompt = "The error budget of a service is"
    chunks = list(client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    chat = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}  # fmt: skip
    raw = sse_events(server.url, "/v1/completions", body)
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 3, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    raw_chat = sse_events(server.url, "/v1/chat/completions", body)
    return {
        "completion": chunks,
        "chat": chat,
        "completion chunk keys": keys(raw[0]),
        "completion choice keys": keys(raw[0]["choices"][0]),
        "completion usage chunk keys": keys(raw[-1]),
        "chat role chunk keys": keys(raw_chat[0]),
        "chat token choice keys": keys(raw_chat[1]["choices"][0]),
        "chat last choice keys": keys(raw_chat[-2]["choices"][0]),
        "chat usage chunk keys": keys(raw_chat[-1]),
    }


def observe_whole(server: Server) -> dict:
    """A completion and a chat completion not streamed, with the SDK and raw."""
    client = server.client()
    prompt = "The error budget of a service is"
    completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6,
                                           extra_body={"ignore_eos": True})  # fmt: skip
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=6,
        extra_body={"ignore_eos": True})  # fmt: skip
    base = {"model": MODEL, "max_tokens": 3, "ignore_eos": True}
    messages = [{"role": "user", "content": prompt}]
    whole, whole_chat = (
        httpx.post(f"{server.url}{path}", json={**base, **body}, timeout=60).json()
        for path, body in (("/v1/completions", {"prompt": prompt}),
                           ("/v1/chat/completions", {"messages": messages}))
    )  # fmt: skip
    return {
        "completion": completion,
        "chat": chat,
        "completion keys": keys(whole),
        "completion choice keys": keys(whole["choices"][0]),
        "completion usage keys": keys(whole["usage"]),
        "chat keys": keys(whole_chat),
        "chat choice keys": keys(whole_chat["choices"][0]),
        "chat message keys": keys(whole_chat["choices"][0]["message"]),
        "chat usage keys": keys(whole_chat["usage"]),
    }


def api_error(call) -> dict:
    try:
        call()
    except openai.APIStatusError as exc:
        return {"status": exc.status_code, "exception": type(exc).__name__,
                **exc.response.json()["error"]}  # fmt: skip
    raise AssertionError("the request succeeded")


def observe_errors(server: Server) -> dict[str, dict]:
    completions = server.client().completions.create
    return {
        "unknown model": api_error(lambda: completions(model="nope", prompt="hi", max_tokens=5)),
        "prompt over the context": api_error(
            lambda: completions(model=MODEL, prompt="word " * 3000, max_tokens=5)
        ),
        "max_tokens over the context": api_error(
            lambda: completions(model=MODEL, prompt="hi", max_tokens=5000)
        ),
        "max_tokens=-1": api_error(lambda: completions(model=MODEL, prompt="hi", max_tokens=-1)),
        'max_tokens="abc"': api_error(
            lambda: completions(model=MODEL, prompt="hi", extra_body={"max_tokens": "abc"})
        ),
    }


def observe_models(server: Server) -> dict:
    models = server.client().models.list()
    card = models.data[0]
    return {
        "ids": [m.id for m in models.data],
        "card": card.model_dump(),
        "keys": keys(card.model_dump()),
    }


def observe_tokenize(server: Server) -> dict:
    prompt = "Which replica served the request, and how long did it take?"
    out = httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "prompt": prompt}).json()
    done = server.client().completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    return {"body": out, "keys": keys(out), "served prompt tokens": done.usage.prompt_tokens}


def observe_health(server: Server) -> dict:
    resp = httpx.get(f"{server.url}/health")
    return {"status": resp.status_code, "body": resp.text}


def observe_metrics(server: Server) -> dict:
    text = httpx.get(f"{server.url}/metrics").text
    values = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
    return {"shapes": metric_shapes(text), "values": values, "text": text}


# ----- the contract, against each server ----------------------------------------------------


def test_stream_chunks_and_usage(server):
    seen = observe_stream(server)
    for chunks, head in ((seen["completion"], "cmpl-"), (seen["chat"], "chatcmpl-")):
        assert all(c.id == chunks[0].id and c.id.startswith(head) for c in chunks)
        usage = chunks[-1]
        assert usage.choices == [] and usage.usage.completion_tokens == 12
        assert usage.usage.total_tokens == usage.usage.prompt_tokens + 12
        assert all(c.usage is None for c in chunks[:-1])
        finishes = [c.choices[0].finish_reason for c in chunks[:-1]]
        assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    texts = [c.choices[0].text for c in seen["completion"][:-1]]
    # one token per chunk while the stream keeps up; several when it falls behind
    assert 1 <= len(texts) <= 12 and all(texts)
    role = seen["chat"][0].choices[0].delta
    assert role.role == "assistant" and role.content == ""
    content = [c.choices[0].delta.content for c in seen["chat"][1:-1]]
    assert 1 <= len(content) <= 12 and all(content)


def test_whole_answers(server):
    seen = observe_whole(server)
    completion, chat = seen["completion"], seen["chat"]
    assert completion.id.startswith("cmpl-") and completion.object == "text_completion"
    assert chat.id.startswith("chatcmpl-") and chat.object == "chat.completion"
    for answer in (completion, chat):
        assert len(answer.choices) == 1 and answer.choices[0].finish_reason == "length"
        assert answer.usage.completion_tokens == 6
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + 6
    assert completion.choices[0].text
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content


def test_error_bodies(server):
    errors = observe_errors(server)
    for case, err in errors.items():
        assert err["code"] == err["status"] and err["message"] and err["type"], case
    assert errors["unknown model"]["status"] == 404
    assert errors["unknown model"]["exception"] == "NotFoundError"
    assert errors["unknown model"]["message"].startswith("The model `nope` does not exist.")
    assert errors["unknown model"]["param"] == "model"
    for case in ("prompt over the context", "max_tokens over the context", "max_tokens=-1",
                 'max_tokens="abc"'):  # fmt: skip
        assert errors[case]["status"] == 400 and errors[case]["exception"] == "BadRequestError"
    too_long = errors["prompt over the context"]["message"]
    assert f"maximum context length is {MAX_MODEL_LEN} tokens" in too_long


def test_models(server):
    seen = observe_models(server)
    assert seen["ids"] == [MODEL]
    card = seen["card"]
    assert card["object"] == "model" and card["owned_by"] == "vllm"
    assert card["max_model_len"] == MAX_MODEL_LEN


def test_tokenize_counts_what_is_served(server):
    seen = observe_tokenize(server)
    body = seen["body"]
    assert body["count"] == len(body["tokens"]) == seen["served prompt tokens"]
    assert body["max_model_len"] == MAX_MODEL_LEN


def test_output_is_cut_to_the_room_the_prompt_leaves(server):
    """A prompt that fits with a max_tokens that does not is served, cut to the context."""
    prompt = "word " * (MAX_MODEL_LEN - 60)
    tokens = httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "prompt": prompt})
    room = MAX_MODEL_LEN - tokens.json()["count"]
    assert 0 < room < 100
    done = server.client().completions.create(model=MODEL, prompt=prompt, max_tokens=room + 50,
                                              extra_body={"ignore_eos": True})  # fmt: skip
    assert done.usage.completion_tokens == room and done.choices[0].finish_reason == "length"
    assert done.usage.total_tokens == MAX_MODEL_LEN


def test_health(server):
    assert observe_health(server) == {"status": 200, "body": ""}


def test_metric_families(server):
    server.client().completions.create(model=MODEL, prompt="count me", max_tokens=4,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    seen = observe_metrics(server)
    shapes, values = seen["shapes"], seen["values"]
    for name, kind in SLO_FAMILIES.items():
        assert shapes[name].type == kind, name
        assert {"model_name", "engine"} <= set(shapes[name].labels), name
    assert f'model_name="{MODEL}"' in seen["text"]
    assert values["vllm:generation_tokens_total"] >= 4
    assert values["vllm:request_time_per_output_token_seconds_count"] >= 1
    assert values["vllm:iteration_tokens_total_count"] >= 1
    assert values["vllm:request_prefill_kv_computed_tokens_sum"] >= 2


# ----- the simulator against the engine -----------------------------------------------------


def differences(sim: Server, eng: Server) -> list[tuple[str, str, str]]:
    """(aspect, simulator, engine) wherever the two servers answered differently."""
    rows = []

    def compare(aspect: str, ours, theirs) -> None:
        if ours != theirs:
            rows.append((aspect, str(ours), str(theirs)))

    s_stream, e_stream = observe_stream(sim), observe_stream(eng)
    for aspect in s_stream:
        if aspect.endswith("keys"):
            compare(f"stream: {aspect}", s_stream[aspect], e_stream[aspect])
    s_whole, e_whole = observe_whole(sim), observe_whole(eng)
    for aspect in s_whole:
        if aspect.endswith("keys"):
            compare(f"not streamed: {aspect}", s_whole[aspect], e_whole[aspect])
    s_err, e_err = observe_errors(sim), observe_errors(eng)
    for case in s_err:
        for field in ("status", "type", "param", "message"):
            compare(f"error, {case}: {field}", s_err[case][field], e_err[case][field])
    compare("/v1/models card keys", observe_models(sim)["keys"], observe_models(eng)["keys"])
    compare("/tokenize keys", observe_tokenize(sim)["keys"], observe_tokenize(eng)["keys"])
    compare("/health", observe_health(sim), observe_health(eng))
    ours, theirs = observe_metrics(sim)["shapes"], observe_metrics(eng)["shapes"]
    missing = sorted(set(theirs) - set(ours))
    compare("metric families only the engine has", "", ", ".join(f"`{m}`" for m in missing))
    return rows


def table(sim: Server, eng: Server, rows: list[tuple[str, str, str]]) -> str:
    def cell(text: str) -> str:
        text = text.replace("|", "\\|").replace("\n", " ")
        return f"`{text}`" if text and not text.startswith("`") else text or "—"

    head = [f"| what | simulator {sim.version} | vLLM {eng.version} |", "|---|---|---|"]
    return "\n".join(head + [f"| {a} | {cell(s)} | {cell(e)} |" for a, s, e in rows]) + "\n"


def test_simulator_matches_the_engine(simulator, engine):
    ours = observe_metrics(simulator)["shapes"]
    theirs = observe_metrics(engine)["shapes"]
    # a dashboard or an SLO built on the simulator must read the engine unchanged
    assert {name: theirs.get(name) for name in ours} == ours
    assert set(SLO_FAMILIES) <= set(ours)
    rows = differences(simulator, engine)
    out = os.environ.get(TABLE_ENV)
    if out:
        Path(out).write_text(table(simulator, engine, rows))
