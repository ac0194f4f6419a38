"""``replicas.kill_engine_core`` on a real vLLM server: only its engine process dies, and vLLM
then does what the README says (measured by bench/measure_engine_kill.py): every stream in
flight ends with an error event and ``[DONE]``, the server stops answering as healthy, and the
API server exits, which the supervisor treats as any replica exit (restart).

Its own engine (killing the session's shared one would break the other real-engine tests),
running one sequence at a time (``--max-num-seqs 1``). The kill comes once the processes
under its API server (idle before) have done a tenth of a second of work on twelve
2000-token requests: the engine then has seconds of work left, so the kill lands while it
works even if this test's own process is held up on a busy machine (with four, two CI runs
late in the suite saw every stream finish first). Nothing the API server sends can time the
kill: on two busy cores it may stream a request out only after the engine has finished it
(vLLM then completes that stream normally), and a request it has not yet taken gets a 500, or
no answer once it has exited. So every stream must end properly (``[DONE]``, or refused by a
dead engine), and the kill must reach at least one (an error event, or a refusal). Skipped
only when there is no vLLM environment and ``CI`` is not set.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest
from conftest import VLLM_MODEL, VLLM_READY_S, VllmEngine, vllm_python_and_model, wait_for

from aichaos.experiments.actions.replicas import kill_engine_core
from aichaos.processes import process_start_time

STREAMS = 12
pytestmark = pytest.mark.timeout(VLLM_READY_S + 300)


def stream(url: str, out: dict) -> None:
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
    except httpx.HTTPError as exc:
        out["transport_error"] = type(exc).__name__
    out["errors"] = [e for e in events if e != "[DONE]" and "error" in json.loads(e)]
    out["done"] = bool(events) and events[-1] == "[DONE]"


def engine_side(pid: int) -> list[psutil.Process]:
    """The processes under the API server (``VLLM::EngineCore``, ``VLLM::Worker``...): their
    CPU time is the engine's work, which the API server cannot hold back."""
    return psutil.Process(pid).children(recursive=True)


def idle(procs: list[psutil.Process], window_s: float = 0.5) -> bool:
    """Whether ``procs`` used under a tenth of a core over ``window_s``."""
    start = busy_s(procs)
    time.sleep(window_s)
    return busy_s(procs) - start < 0.1 * window_s


def busy_s(procs: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


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
    threads = [
        threading.Thread(target=stream, args=(engine.url, out), daemon=True) for out in results
    ]
    worker = engine_side(pid)
    wait_for(lambda: idle(worker), 60, "the engine idle")  # its work now is the streams'
    before = busy_s(worker)
    for thread in threads:
        thread.start()
    wait_for(lambda: busy_s(worker) - before >= 0.1, 120, "the engine at work")

    killed = kill_engine_core("llm-1", configuration={"aichaos_stack_file": str(stack)})

    assert len(killed) == 1 and killed[0]["pid"] == pid and killed[0]["engine_pid"] != pid
    for thread in threads:
        thread.join(120)

    def refused(out: dict) -> bool:  # not taken by the API server before the engine died
        return out.get("status") == 500 or ("status" not in out and "transport_error" in out)

    for out in results:  # every stream ended properly: finished, cut, or refused by a dead engine
        assert (out.get("status") == 200 and out["done"]) or refused(out), out
    # the kill reached the streams: one in flight was told (an error event, then [DONE]), or
    # the API server, starved on a busy machine, had not yet taken them and refused them
    assert any(out["errors"] or refused(out) for out in results), results
    wait_for(lambda: engine.proc.poll() is not None, 60, "the API server exits")
