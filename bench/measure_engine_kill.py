"""What a real vLLM server does when only its engine process (VLLM::EngineCore) is killed.

Starts one vLLM OpenAI server (the vLLM environment's Python, the project's model), opens
``--streams`` streaming completions, kills the EngineCore child with SIGKILL once every stream
has its first token, then watches for ``--watch`` seconds: how each stream in flight ended,
what ``/health`` and a new request get, and whether (and how) the API server exits. Prints one
JSON document; the README's reference-stack section quotes it.

    .venv/bin/python bench/measure_engine_kill.py [--python P] [--model DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from aichaos.experiments.actions.replicas import engine_process
from aichaos.harness.targets import BUILT_MODEL_NAME, vllm_server_args
from aichaos.harness.vllm_env import build_model, find_python

READY_TIMEOUT_S = 420.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream(url: str, out: dict, first: threading.Event) -> None:
    body = {"prompt": "hello " * 50, "max_tokens": 2000, "stream": True, "ignore_eos": True}
    chunks = 0
    t0 = time.monotonic()
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as resp:
            out["status"] = resp.status_code
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks += 1
                    data = json.loads(line[6:])
                    if "error" in data:
                        out["error_chunk"] = data["error"]
                    first.set()
                if line == "data: [DONE]":
                    out["done"] = True
        out["ended"] = "stream closed"
    except httpx.HTTPError as exc:
        out["ended"] = f"{type(exc).__name__}: {exc}"
    out["chunks"] = chunks
    out["after_s"] = round(time.monotonic() - t0, 2)


def _try(method: str, url: str, **kwargs) -> str:
    try:
        resp = httpx.request(method, url, timeout=10, **kwargs)
        return f"HTTP {resp.status_code} {resp.text[:160]}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"


def measure(python: str, model: str, streams: int, watch_s: float) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = vllm_server_args(python, model, BUILT_MODEL_NAME, str(port), max_model_len=2048)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"engine-kill-{port}.log", "wb")  # noqa: SIM115 - closed in finally
    t0 = time.monotonic()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)  # fmt: skip
    result: dict = {"log": log.name}
    try:
        for _ in range(int(READY_TIMEOUT_S)):
            if server.poll() is not None:
                raise SystemExit(f"server exited {server.returncode} before ready; see {log.name}")
            if _try("GET", f"{url}/health").startswith("HTTP 200"):
                break
            time.sleep(1)
        else:
            raise SystemExit("not ready in time")
        result["ready_after_s"] = round(time.monotonic() - t0, 1)
        procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(True)]
        result["rss_gb"] = round(sum(p.memory_info().rss for p in procs) / 1e9, 2)
        result["processes"] = [" ".join(p.cmdline())[:40] for p in procs]
        outs = [{} for _ in range(streams)]
        firsts = [threading.Event() for _ in range(streams)]
        threads = [
            threading.Thread(target=_stream, args=(url, o, f))
            for o, f in zip(outs, firsts, strict=True)
        ]
        for t in threads:
            t.start()
        for f in firsts:
            f.wait(60)
        engine = engine_process(server.pid)
        if engine is None:
            raise SystemExit("no EngineCore child found")
        killed_at = time.monotonic()
        engine.send_signal(signal.SIGKILL)
        result["engine_pid"] = engine.pid
        timeline = []
        for _ in range(int(watch_s * 2)):
            at = round(time.monotonic() - killed_at, 1)
            code = server.poll()
            if code is not None:
                timeline.append({"t": at, "server_exit": code})
                break
            health = _try("GET", f"{url}/health")
            new = _try("POST", f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 4})
            timeline.append({"t": at, "health": health, "new_request": new})
            time.sleep(0.5)
        for t in threads:
            t.join(30)
        result["streams"] = outs
        result["timeline"] = timeline
        result["server_exit"] = server.poll()
        alive = [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        result["left_running"] = alive
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        log.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--watch", type=float, default=30.0)
    args = parser.parse_args()
    python = args.python or find_python()
    model = args.model or str(build_model(python=python))
    print(json.dumps(measure(python, model, args.streams, args.watch), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
