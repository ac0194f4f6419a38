"""``replicas.kill_engine_core`` on a real vLLM server: only its engine process dies, and vLLM
then does what the README says (measured by bench/measure_engine_kill.py): every stream in
flight ends with an error event and ``[DONE]``, the server stops answering as healthy, and the
API server exits, which the supervisor treats as any replica exit (restart).

Its own engine (killing the session's shared one would break the other real-engine tests),
running one sequence at a time (``--max-num-seqs 1``). The kill comes as soon as any stream
has its first token: the others are then queued behind its 2000-token generation, so they are
in flight in the engine however fast it is. (Waiting for every stream's first token instead
is flaky: the engine can finish a request long before the API server has streamed it out, and
vLLM then completes that stream normally.) Skipped
only when there is no vLLM environment and ``CI`` is not set.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from conftest import VLLM_MODEL, VLLM_READY_S, VllmEngine, vllm_python_and_model, wait_for

from aichaos.experiments.actions.replicas import kill_engine_core
from aichaos.processes import process_start_time

STREAMS = 4
pytestmark = pytest.mark.timeout(VLLM_READY_S + 300)


def stream(url: str, out: dict, first: threading.Event) -> None:
    """One long streaming completion; what its last events were."""
    body = {"model": VLLM_MODEL, "prompt": "hello " * 20, "max_tokens": 2000, "stream": True,
            "ignore_eos": True}  # fmt: skip
    events: list[str] = []
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as resp:
            out["status"] = resp.status_code
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first.set()
    except httpx.HTTPError as exc:
        out["transport_error"] = type(exc).__name__
    out["errors"] = [e for e in events if e != "[DONE]" and "error" in json.loads(e)]
    out["done"] = bool(events) and events[-1] == "[DONE]"


@pytest.fixture
def engine(tmp_path):
    python, model = vllm_python_and_model()
    server = VllmEngine(python, model, tmp_path / "vllm.log", "--max-num-seqs", "1")
    try:
        server.wait_ready(VLLM_READY_S)
        yield server
    finally:
        server.stop()


def test_killing_only_the_engine_core_ends_streams_and_the_api_server(engine, tmp_path):
    pid = engine.proc.pid
    stack = tmp_path / "stack.json"
    replica = {"service": "llm", "kind": "llm", "url": engine.url, "pid": pid,
               "start_time": process_start_time(pid), "state": "ready"}  # fmt: skip
    stack.write_text(json.dumps({"services": {"llm-1": replica}, "proxies": {}}))
    results = [{} for _ in range(STREAMS)]
    first = threading.Event()
    threads = [
        threading.Thread(target=stream, args=(engine.url, out, first), daemon=True)
        for out in results
    ]
    for thread in threads:
        thread.start()
    wait_for(first.is_set, 120, "a first token")
    # vLLM answers a stream's headers as soon as it takes the request, queued or not
    wait_for(lambda: all("status" in out for out in results), 30, "every stream's headers")

    killed = kill_engine_core("llm-1", configuration={"aichaos_stack_file": str(stack)})

    assert len(killed) == 1 and killed[0]["pid"] == pid and killed[0]["engine_pid"] != pid
    for thread in threads:
        thread.join(120)
    for out in results:  # every stream was closed properly, finished or cut
        assert out.get("status") == 200 and out["done"], out
    # the queued streams were told (the one generating might, on a fast engine, be done)
    assert sum(bool(out["errors"]) for out in results) >= STREAMS - 1, results
    wait_for(lambda: engine.proc.poll() is not None, 60, "the API server exits")
