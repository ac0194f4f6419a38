"""Shared test helpers: free ports and real simulator processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """The first true value of ``predicate()`` within ``timeout`` seconds, else a failure
    naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")


class ServiceProcess:
    """One ``python -m MODULE serve --port P ...`` process on loopback; stopped by PID."""

    def __init__(self, module: str, args: list[str], log_path: Path, ready_path: str = "/health",
                 wait: bool = True, port: int | None = None):  # fmt: skip
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        cmd = [sys.executable, "-m", module, "serve", "--port", str(self.port), *args]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
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
