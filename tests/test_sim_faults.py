"""Every simulator fault, set by flag or admin API, seen by a real client over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aichaos.fixtures.llm_sim.tokenizer import tokenize

FIXED = "fixed-latency"


def chat(url: str, max_tokens: int = 8, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "ignore_eos": True, **extra}  # fmt: skip
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def stream_events(
    url: str, max_tokens: int = 8
) -> tuple[list[tuple[float, str]], Exception | None]:
    """(arrival time, event) pairs of one streamed chat completion, and the error if it broke."""
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True}  # fmt: skip
    events: list[tuple[float, str]] = []
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as resp:
            for line in resp.iter_lines():
                if line:
                    events.append((time.perf_counter(), line))
    except httpx.HTTPError as exc:
        return events, exc
    return events, None


def content_events(events) -> list[tuple[float, str]]:
    out = []
    for t, line in events:
        if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
            out.append((t, line))
    return out


def metric(url: str, name: str, **labels) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.mark.parametrize("status", [429, 500, 503])
def test_error_statuses_have_provider_bodies(start_sim, status):
    sim = start_sim("--profile", FIXED)
    assert (
        sim.admin("POST", {"kind": "error", "status": status, "retry_after": 3}).status_code == 201
    )
    resp = chat(sim.url)
    assert resp.status_code == status
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert resp.headers["Retry-After"] == "3"
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in resp.headers
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(
                base_url=f"{sim.url}/v1", api_key="x", max_retries=0
            ).chat.completions.create(model=FIXED, messages=[{"role": "user", "content": "x"}])
    assert sim.admin("DELETE").status_code == 200
    assert chat(sim.url).status_code == 200


def test_529_is_anthropics_overloaded_shape(start_sim):
    sim = start_sim("--profile", FIXED, "--fault", "error:status=529")
    resp = chat(sim.url)
    assert resp.status_code == 529
    assert resp.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_fault_rate_is_a_seeded_fraction(start_sim):
    def pattern(sim) -> list[int]:
        return [chat(sim.url, max_tokens=1).status_code for _ in range(120)]

    a = start_sim("--seed", "3", "--fault", "error:status=503,rate=0.3")
    b = start_sim("--seed", "3", "--fault", "error:status=503,rate=0.3")
    pa, pb = pattern(a), pattern(b)
    assert pa == pb  # same seed, same requests hit
    assert 15 <= pa.count(503) <= 60 and pa.count(200) == 120 - pa.count(503)


def test_error_chunk_after_n_tokens(start_sim):
    sim = start_sim("--profile", FIXED, "--fault", "error_chunk:after_tokens=3")
    events, error = stream_events(sim.url)
    assert error is None
    lines = [line for _, line in events]
    assert len(content_events(events)) == 3
    err = json.loads(lines[-2][6:])
    assert set(err["error"]) == {"message", "type", "param", "code"} and lines[-1] == "data: [DONE]"


def test_truncate_cuts_the_connection_without_done(start_sim):
    sim = start_sim("--profile", FIXED, "--fault", "truncate:after_tokens=3")
    events, error = stream_events(sim.url)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert len(content_events(events)) == 3
    assert all(line != "data: [DONE]" for _, line in events)
    assert chat(sim.url).status_code == 200  # the server itself is fine


def test_stall_pauses_mid_stream(start_sim):
    sim = start_sim("--profile", FIXED, "--fault", "stall:after_tokens=2,seconds=0.6")
    events, error = stream_events(sim.url, max_tokens=5)
    assert error is None
    content = content_events(events)
    times = [t for t, _ in content]
    # the three tokens made during the stall leave together, in one chunk, as vLLM merges
    # the outputs a stream has not taken yet
    assert len(times) == 3
    texts = [json.loads(line[6:])["choices"][0]["delta"]["content"] for _, line in content]
    assert [len(tokenize(t)) for t in texts] == [1, 1, 3]
    assert times[2] - times[1] >= 0.55 and times[2] - times[1] > 5 * (times[1] - times[0])


def test_ttft_inflation(start_sim):
    sim = start_sim("--profile", FIXED)

    def ttft() -> float:
        start = time.perf_counter()
        events, _ = stream_events(sim.url, max_tokens=2)
        return content_events(events)[0][0] - start

    base = min(ttft() for _ in range(3))
    sim.admin("POST", {"kind": "ttft_inflate", "seconds": 0.5})
    inflated = min(ttft() for _ in range(3))
    assert inflated - base >= 0.45


def test_engine_death_then_exit(start_sim):
    sim = start_sim("--profile", "llama-3.1-8b-h100")
    result: dict = {}

    def long_stream():
        result["events"], result["error"] = stream_events(sim.url, max_tokens=4000)

    reader = threading.Thread(target=long_stream)
    reader.start()
    time.sleep(0.5)
    died = time.monotonic()
    assert sim.admin("POST", {"kind": "engine_death", "exit_after": 2}).status_code == 201
    reader.join(10)
    lines = [line for _, line in result["events"]]
    assert result["error"] is None and lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2] and len(content_events(result["events"])) < 4000
    bare = chat(sim.url)
    assert bare.status_code == 500 and bare.text == "Internal Server Error"
    assert httpx.get(f"{sim.url}/health").status_code == 503
    assert sim.proc.wait(15) == 1 and time.monotonic() - died >= 1.5


def test_engine_death_with_stay_is_revived_by_clearing(start_sim):
    sim = start_sim("--profile", FIXED)
    sim.admin("POST", {"kind": "engine_death", "stay": True})
    assert httpx.get(f"{sim.url}/health").status_code == 503
    time.sleep(0.5)
    assert sim.proc.poll() is None
    sim.admin("DELETE")
    assert httpx.get(f"{sim.url}/health").status_code == 200 and chat(sim.url).status_code == 200


def test_slow_start_keeps_the_port_closed(start_sim):
    sim = start_sim("--profile", FIXED, "--fault", "slow_start:seconds=2", wait=False)
    time.sleep(0.8)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/health", timeout=0.5)
    sim.wait_ready(timeout=20)
    assert chat(sim.url).status_code == 200


def test_kv_shrink_causes_preemptions_and_is_restored(start_sim):
    sim = start_sim("--profile", "small-gpu")
    sim.admin("POST", {"kind": "kv_shrink", "blocks": 40})
    threads = [threading.Thread(target=chat, args=(sim.url, 200)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert metric(sim.url, "vllm:num_preemptions_total") > 0
    assert sim.admin("GET").json()["engine"]["num_gpu_blocks"] == 40
    sim.admin("DELETE")
    state = sim.admin("GET").json()
    assert state["faults"] == [] and state["engine"]["num_gpu_blocks"] == 2700


def test_client_disconnect_aborts_the_request(start_sim):
    sim = start_sim("--profile", FIXED)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500, "ignore_eos": True,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{sim.url}/v1/chat/completions", json=body) as resp:
        lines = resp.iter_lines()
        for _ in range(4):
            next(lines)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if metric(sim.url, "vllm:request_success_total", finished_reason="abort") == 1:
            break
        time.sleep(0.1)
    assert metric(sim.url, "vllm:request_success_total", finished_reason="abort") == 1
    assert metric(sim.url, "vllm:num_requests_running") == 0


def test_admin_api_rejects_bad_faults(start_sim):
    sim = start_sim("--profile", FIXED)
    bad = sim.admin("POST", {"kind": "error", "rate": 2})
    assert bad.status_code == 400 and "rate" in bad.json()["error"]
    assert sim.admin("POST", {"kind": "meteor"}).status_code == 400
    assert sim.admin("DELETE", path="/99").status_code == 404
    added = sim.admin("POST", {"kind": "stall", "seconds": 1}).json()
    listed = sim.admin("GET").json()["faults"]
    assert [f["id"] for f in listed] == [added["id"]]
    assert sim.admin("DELETE", path=f"/{added['id']}").status_code == 200


ERROR_503 = {"kind": "error", "status": 503}


def admin_post(sim, headers: dict[str, str], body: dict = ERROR_503) -> httpx.Response:
    """A POST to the fault API with exactly these headers (httpx adds Host unless given)."""
    content = json.dumps(body).encode()
    return httpx.post(f"{sim.admin_url}/admin/faults", content=content, headers=headers, timeout=5)


def test_a_browser_page_cannot_set_a_fault(start_sim):
    """The reproduction: a web page's text/plain POST, cross-site and DNS-rebound."""
    sim = start_sim("--profile", FIXED)
    attack = {"Content-Type": "text/plain", "Origin": "http://evil.example", "Host": "evil.example"}
    refused = admin_post(sim, attack)
    assert refused.status_code == 403 and "evil.example" in refused.json()["error"]
    # each rule alone, the others satisfied
    loopback = {"Content-Type": "application/json", "Host": f"127.0.0.1:{sim.admin_port}"}
    assert admin_post(sim, {**loopback, "Host": "evil.example"}).status_code == 403
    assert admin_post(sim, {**loopback, "Origin": "http://evil.example"}).status_code == 403
    assert admin_post(sim, {**loopback, "Origin": "null"}).status_code == 403
    for site in ("cross-site", "same-site"):
        assert admin_post(sim, {**loopback, "Sec-Fetch-Site": site}).status_code == 403
    wrong_type = admin_post(sim, {**loopback, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert wrong_type.json() == {
        "error": "POST needs Content-Type: application/json, got 'text/plain'"
    }
    assert sim.admin("GET").json()["faults"] == []
    assert chat(sim.url).status_code == 200
    # a refused DELETE leaves the fault a loopback client set
    assert admin_post(sim, loopback).status_code == 201
    cross = {**loopback, "Sec-Fetch-Site": "cross-site"}
    delete = httpx.delete(f"{sim.admin_url}/admin/faults", headers=cross, timeout=5)
    assert delete.status_code == 403
    assert len(sim.admin("GET").json()["faults"]) == 1
    assert sim.admin("DELETE").status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("127.0.0.1", True),
        ("127.3.2.1:8001", True),
        ("[::1]:8001", True),
        ("[::1]", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io:8001", False),
        ("0.0.0.0", False),
        ("[::2]:8001", False),
        ("localhost:http", False),
        ("", False),
    ],
)
def test_admin_answers_only_requests_for_a_loopback_host(h100_sim, host, allowed):
    response = httpx.get(f"{h100_sim.admin_url}/admin/faults", headers={"Host": host}, timeout=5)
    assert response.status_code == (200 if allowed else 403)


def test_a_loopback_json_client_and_a_same_origin_page_are_served(start_sim):
    sim = start_sim("--profile", FIXED)
    same_origin = {
        "Content-Type": "application/json; charset=utf-8",
        "Origin": f"http://localhost:{sim.admin_port}",
        "Sec-Fetch-Site": "same-origin",
    }
    assert admin_post(sim, same_origin).status_code == 201
    assert [f["status"] for f in sim.admin("GET").json()["faults"]] == [503]
    assert chat(sim.url).status_code == 503
    assert sim.admin("DELETE").status_code == 200


def test_the_serving_port_has_no_admin_api(start_sim):
    sim = start_sim("--profile", FIXED)
    serving = f"{sim.url}/admin/faults"
    assert httpx.post(serving, json=ERROR_503, timeout=5).status_code == 404
    assert httpx.get(serving, timeout=5).status_code == 404
    assert httpx.delete(serving, timeout=5).status_code == 404
    assert httpx.post(f"{sim.url}/admin/step-lag/reset", timeout=5).status_code == 404
    assert sim.admin("GET").json()["faults"] == []
    assert chat(sim.url).status_code == 200


def test_the_admin_port_stays_on_127_0_0_1_whatever_host_says(start_sim):
    sim = start_sim("--profile", FIXED, "--host", "127.0.0.2", wait=False)
    sim.url = f"http://127.0.0.2:{sim.port}"
    sim.wait_ready()
    assert httpx.get(f"{sim.admin_url}/admin/faults", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{sim.admin_port}/admin/faults", timeout=5)


def test_without_admin_port_a_free_one_is_chosen_and_printed(start_sim):
    proc = start_sim.service("aichaos.fixtures.llm_sim", "--profile", FIXED)
    printed: list[str] = []
    for _ in range(50):  # printed just after the port opens: at most 5 s
        lines = proc.log_path.read_text().splitlines()
        printed = [line for line in lines if line.startswith("admin: ")]
        if printed:
            break
        time.sleep(0.1)
    assert len(printed) == 1
    admin_url = printed[0].removeprefix("admin: ")
    assert admin_url.startswith("http://127.0.0.1:") and admin_url != proc.url
    assert httpx.get(f"{admin_url}/admin/faults", timeout=5).json()["faults"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--admin-port", "1"], "--admin-port: expected a port other than --port"),
        (["--fault", "error:status=9999"], "status"),
        (["--fault", "meteor"], "fault 'meteor'"),
        (["--fault", "stall:seconds"], "expected key=value"),
        (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args, expected):
    proc = subprocess.run(
        [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--port", "1", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr


def test_bad_profile_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: m\nmax_model_len: 10\nengine: {kind: step, max_num_seqs: 1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "aichaos.fixtures.llm_sim", "serve", "--profile", str(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "engine.step.max_num_batched_tokens" in proc.stderr
