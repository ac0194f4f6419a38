"""Shared test helpers: free ports and real simulator processes on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from aichaos.harness.targets import vllm_server_args
from aichaos.loopback import free_port
from aichaos.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """The first true value of ``predicate()`` within ``timeout`` seconds, else a failure
    naming ``what``."""
    value = wait_until(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"{what}: not within {timeout}s")
    return value


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> str:
    """Ctrl-C ``proc`` and wait for it to finish; what it wrote (stdout, then stderr, where
    piped). Killed if it will not end."""
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return (out or "") + (err or "")


class ServiceProcess:
    """One ``python -m MODULE serve --port P ...`` process on loopback (or ``command``, built
    from the port), stopped by PID."""

    def __init__(self, module: str, args: list[str], log_path: Path, ready_path: str = "/health",
                 wait: bool = True, port: int | None = None, command=None,
                 env: dict[str, str] | None = None):  # fmt: skip
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        cmd = [sys.executable, "-m", module, "serve", "--port", str(self.port), *args]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command(self.port) if command else cmd, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=command is not None)  # fmt: skip
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.log_path.name} exited: {self.log_path.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.log_path.name} not ready after {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class SimProcess(ServiceProcess):
    """A simulator with its fault admin API on a port of its own (``admin_url``)."""

    def __init__(self, args: list[str], log_path: Path, wait: bool = True, port: int | None = None):
        port = port or free_port()
        self.admin_port = next(p for p in (free_port() for _ in range(20)) if p != port)
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        args = ["--admin-port", str(self.admin_port), *args]
        super().__init__("aichaos.fixtures.llm_sim", args, log_path, wait=wait, port=port)

    def admin(self, method: str, body: dict | None = None, path: str = "") -> httpx.Response:
        """The fault API as the toolkit calls it: JSON, from loopback."""
        url = f"{self.admin_url}/admin/faults{path}"
        headers = {"Content-Type": "application/json"}
        return httpx.request(method, url, json=body, headers=headers, timeout=5)


class SimStarter:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[SimProcess] = []

    def __call__(self, *args: str, wait: bool = True, port: int | None = None) -> SimProcess:
        log = self.log_dir / f"sim-{len(self.started)}.log"
        sim = SimProcess(list(args), log, wait=wait, port=port)
        self.started.append(sim)
        return sim

    def service(self, module: str, *args: str, ready_path: str = "/health") -> ServiceProcess:
        log = self.log_dir / f"{module.rsplit('.', 1)[-1]}-{len(self.started)}.log"
        proc = ServiceProcess(module, list(args), log, ready_path=ready_path)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """Stop every process, even when stopping one of them fails."""
        errors = []
        for proc in self.started:
            try:
                proc.stop()
            except Exception as exc:  # reported after the others are stopped
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def start_sim(tmp_path) -> Iterator[SimStarter]:
    """Start simulators for one test; all are stopped when it ends."""
    starter = SimStarter(tmp_path)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def module_sims(tmp_path_factory) -> Iterator[SimStarter]:
    starter = SimStarter(tmp_path_factory.mktemp("sims"))
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def h100_sim(module_sims) -> SimProcess:
    """An 8B-H100 simulator shared by a module's tests (which must not leave faults on it)."""
    return module_sims("--profile", "llama-3.1-8b-h100", "--seed", "7")


# ----- a real vLLM engine, shared by every test module that needs one -------------------------

VLLM_MODEL = "tiny"
VLLM_CONTEXT = 2048  # the context of the server in the bug report that sized prompts in words
VLLM_READY_S = 300.0


class VllmEngine(ServiceProcess):
    """A real vLLM OpenAI server (API server, EngineCore, worker) in a session of its own,
    serving the project's built model; stopped by the PID it was started with."""

    def __init__(self, python: str, model: Path, log: Path, *extra: str):
        """``extra``: more of vLLM's server options (``--max-num-seqs 1``...)."""

        def command(port: int) -> list[str]:
            args = vllm_server_args(python, str(model), VLLM_MODEL, str(port),
                                    max_model_len=VLLM_CONTEXT)  # fmt: skip
            return [*args, *extra]

        # 1 GiB of KV cache is plenty for this model, and a small footprint
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        super().__init__("vllm", [], log, wait=False, command=command, env=env)
        self.model = VLLM_MODEL
        self.max_model_len = VLLM_CONTEXT

    def stop(self) -> None:
        """SIGTERM the API server and its engine and worker processes, SIGKILL what stays."""
        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=20)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


def vllm_python() -> str:
    """vLLM's interpreter; see ``vllm_python_and_model``."""
    from aichaos.harness.vllm_env import find_python

    return _or_skip(find_python)


def vllm_python_and_model() -> tuple[str, Path]:
    """vLLM's interpreter and the project's built model. Without a vLLM environment the
    caller is skipped, except under CI, where the real-engine tests must run."""
    from aichaos.harness.vllm_env import build_model

    python = vllm_python()
    return python, _or_skip(lambda: build_model(python=python))


def _or_skip(make):
    from aichaos.harness.vllm_env import VllmUnavailable

    try:
        return make()
    except VllmUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the real-vLLM tests: {exc}")
        pytest.skip(f"no real vLLM engine: {exc}")


@pytest.fixture(scope="session")
def vllm_engine(tmp_path_factory) -> Iterator[VllmEngine]:
    """One real engine for the whole session (it takes a minute or more to start here)."""
    python, model = vllm_python_and_model()
    engine = VllmEngine(python, model, tmp_path_factory.mktemp("vllm") / "vllm.log")
    try:
        engine.wait_ready(VLLM_READY_S)
        yield engine
    finally:
        engine.stop()
