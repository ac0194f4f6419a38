"""``aichaos demo``: start the simulator, stream one real completion from it, stop it.

This is what ``make run`` does until the full game day (``aichaos run``) lands.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx

from aichaos import exits
from aichaos.loopback import free_port
from aichaos.waiting import wait_until


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with code {proc.returncode}")
        try:
            return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    if not wait_until(ready, timeout, interval=0.1):
        raise RuntimeError(f"simulator not ready after {timeout:.0f}s")


def stream_one(url: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    ttft = None
    usage = {}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30.0) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text = choice["delta"].get("content")
                if text:
                    ttft = ttft if ttft is not None else time.perf_counter() - sent
                    sys.stdout.write(text)
                    sys.stdout.flush()
    return {"ttft_s": ttft, "e2e_s": time.perf_counter() - sent, "usage": usage}


def run_demo(profile: str = "llama-3.1-8b-h100", max_tokens: int = 40) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print("aichaos demo: the full game day (`aichaos run`) is not built yet; this starts the")
    print(f"vLLM-compatible simulator (profile {profile}) on {url} and streams one completion.")
    cmd = [
        sys.executable,
        "-m",
        "aichaos.fixtures.llm_sim",
        "serve",
        "--port",
        str(port),
        "--profile",
        profile,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, proc)
        print("--- streamed answer ---")
        result = stream_one(url, "Explain what an error budget is.", max_tokens)
        print("\n--- measured ---")
        print(
            f"TTFT {result['ttft_s'] * 1000:.1f} ms, end-to-end {result['e2e_s'] * 1000:.1f} ms,"
            f" usage {result['usage']}"
        )
        return 0
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exits.NOT_COMPLETED
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
