"""The built-in scenarios sent straight at a real vLLM engine: the prompt tokens it serves are
the intended ones (within ±1% for at least 99% of requests) and no request exceeds its context.

vLLM runs from its own environment: ``$AICHAOS_VLLM_PYTHON``, else ``./.venv-vllm/bin/python``
(``make vllm-env``). Without one the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from aichaos.rundir import read_requests
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.spec import builtin_names, load_scenario

REPO = Path(__file__).resolve().parents[1]
CONTEXT = 2048  # the context the bug report's server had
START_TIMEOUT_S = 300.0
# short runs of every built-in scenario (burst: to its first burst at 20 s; soak: to a session's
# second turn)
DURATIONS = {"steady": 10.0, "diurnal": 10.0, "burst": 30.0, "tiered": 10.0, "soak": 25.0}

pytestmark = pytest.mark.timeout(START_TIMEOUT_S + 600)


def _vllm_python() -> str:
    named = os.environ.get("AICHAOS_VLLM_PYTHON")
    candidate = Path(named) if named else REPO / ".venv-vllm" / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    why = f"no vLLM environment ({candidate} is absent; `make vllm-env` creates it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run the real-vLLM tests: {why}")
    pytest.skip(why)


class Engine:
    """One vLLM OpenAI server in a process group of its own (API server, engine, worker)."""

    def __init__(self, python: str, model: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(CONTEXT), "--dtype", "bfloat16"]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        raise RuntimeError(
            f"vLLM not ready in {START_TIMEOUT_S:g}s: {self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        """The whole group, by the PID we started: SIGTERM, then SIGKILL after 30 s."""
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # children may outlive the API server
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    python = _vllm_python()
    tmp = tmp_path_factory.mktemp("vllm")
    model = tmp / "model"
    build = [python, str(REPO / "fixtures" / "llm_model" / "build.py"), "--out", str(model)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    server = Engine(python, model, tmp / "vllm.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_scenario_served_in_the_intended_tokens(engine, name, tmp_path):
    s = load_scenario(name, duration_s=DURATIONS.get(name, 10.0))
    runner = LoadRunner(s, engine.url, tmp_path)
    summary = runner.size_prompts()
    assert summary["source"] == "tokenize" and summary["max_model_len"] == CONTEXT
    runner.start()
    assert runner.wait(timeout=s.duration_s + 120, kill=True) == 0, runner.log_tail()
    rows = read_requests(tmp_path)[0].to_pylist()
    assert len(rows) > 10
    # nothing over the context: no 400, every planned length fits
    refused = [r for r in rows if r["http_status"] == 400]
    assert not refused, refused[0]["error_detail"]
    assert all(r["intended_prompt_tokens"] + r["output_tokens"] <= CONTEXT for r in rows)
    served = [r for r in rows if r["served_prompt_tokens"] is not None]
    assert len(served) >= 0.99 * len(rows)
    within = [
        r for r in served
        if abs(r["served_prompt_tokens"] - r["intended_prompt_tokens"])
        <= 0.01 * r["intended_prompt_tokens"]
    ]  # fmt: skip
    share = len(within) / len(served)
    print(f"{name}: {len(within)}/{len(served)} within ±1% ({share:.1%}), "
          f"capped {summary['capped']}, sizing {summary['seconds']}s", file=sys.stderr)  # fmt: skip
    assert share >= 0.99
