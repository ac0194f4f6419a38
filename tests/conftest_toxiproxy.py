"""Fixtures for the Toxiproxy tests, imported explicitly by ``tests/test_toxiproxy_*.py``.

Each fixture function is named ``<fixture>_fixture`` and registered under ``<fixture>``, so a
test module imports the function while its tests take the fixture by its short name.

The server runs as a real subprocess (``python -m aichaos.experiments.toxiproxy.cli serve``),
stopped by its PID. Upstreams (a TCP echo server and a streaming HTTP server) run on an
event loop in a background thread of the test process, on loopback, and are closed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

LOOPBACK = "127.0.0.1"


# --- the server under test -------------------------------------------------------------------


class ServerProcess:
    """One ``toxiproxy serve`` process on a free port; ``stop()`` ends it by PID."""

    def __init__(self, *args: str, port: int = 0):
        self.args = ["serve", "--host", LOOPBACK, "--port", str(port), *args]
        fd, name = tempfile.mkstemp(prefix="toxiproxy-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aichaos.experiments.toxiproxy.cli", *self.args]

    def start(self, timeout: float = 20.0) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"ready: (http://\S+)", self.log())
            if match:
                self.url = match.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"toxiproxy exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"toxiproxy not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        return code


def run_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """The CLI run to completion (for inputs it must refuse)."""
    cmd = [sys.executable, "-m", "aichaos.experiments.toxiproxy.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# --- an event loop in a thread, for upstream servers ----------------------------------------


class ThreadLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _Echo(asyncio.Protocol):
    def __init__(self, server: EchoServer):
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.open += 1
        self.server.accepted += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server.received += len(data)
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once the client has finished sending

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open -= 1
        if isinstance(exc, ConnectionResetError):
            self.server.resets += 1


class EchoServer:
    """Writes back every byte it reads; counts connections and the resets it sees."""

    def __init__(self, loop: ThreadLoop):
        self.loop = loop
        self.open = 0
        self.accepted = 0
        self.resets = 0
        self.received = 0  # bytes, over every connection

        async def start() -> asyncio.AbstractServer:
            return await asyncio.get_running_loop().create_server(
                lambda: _Echo(self), LOOPBACK, 0, backlog=1024
            )

        self.server = loop.run(start())
        self.address = f"{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}"

    def close(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.server.close)


class HttpUpstream:
    """A streaming HTTP server: ``/ok``, ``/bytes?size=N``, ``/stream?chunks=N&gap_ms=M``."""

    def __init__(self, loop: ThreadLoop):
        self.loop = loop
        app = web.Application()
        app.router.add_get("/ok", self._ok)
        app.router.add_get("/bytes", self._bytes)
        app.router.add_get("/stream", self._stream)
        self.runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, LOOPBACK, 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.address = f"{LOOPBACK}:{loop.run(start())}"

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _bytes(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query.get("size", "1000")))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "10"))
        gap = int(request.query.get("gap_ms", "50")) / 1000.0
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(chunks):
            await response.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(gap)
        await response.write_eof()
        return response

    def close(self) -> None:
        self.loop.run(self.runner.cleanup(), timeout=10)


# --- sockets ---------------------------------------------------------------------------------


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def connect(address: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(split(address), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    for _ in range(size + 1):  # at least one byte per read
        if len(data) >= size:
            break
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_until_closed(sock: socket.socket, limit: int = 10_000_000) -> bytes:
    data = b""
    for _ in range(limit):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds for ``payload`` to come back through the echo server."""
    start = time.monotonic()
    sock.sendall(payload)
    got = recv_exactly(sock, len(payload))
    assert got == payload, got
    return time.monotonic() - start


def refused(address: str) -> bool:
    try:
        connect(address, timeout=2).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def wait_for(condition, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``condition`` until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if condition():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    return bool(condition())


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="toxiproxy")
def toxiproxy_fixture() -> Iterator[ServerProcess]:
    server = ServerProcess("--metrics").start()
    yield server
    server.stop()


@pytest.fixture(name="api")
def api_fixture(toxiproxy: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the server's API; every proxy is deleted after the test."""
    with httpx.Client(base_url=toxiproxy.url, timeout=10) as client:
        yield client
        for name in client.get("/proxies").json():
            client.delete(f"/proxies/{name}")


@pytest.fixture(scope="module", name="thread_loop")
def thread_loop_fixture() -> Iterator[ThreadLoop]:
    loop = ThreadLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module", name="echo")
def echo_fixture(thread_loop: ThreadLoop) -> Iterator[EchoServer]:
    server = EchoServer(thread_loop)
    yield server
    server.close()


@pytest.fixture(scope="module", name="http_upstream")
def http_upstream_fixture(thread_loop: ThreadLoop) -> Iterator[HttpUpstream]:
    server = HttpUpstream(thread_loop)
    yield server
    server.close()


def make_proxy(api: httpx.Client, name: str, upstream: str, **extra: Any) -> str:
    """Create a proxy on a free loopback port; its listen address."""
    response = api.post("/proxies", json={"name": name, "upstream": upstream, **extra})
    assert response.status_code == 201, response.text
    return response.json()["listen"]


def add_toxic(api: httpx.Client, proxy: str, kind: str, stream: str = "downstream", **attrs):
    body = {"type": kind, "stream": stream, "attributes": attrs}
    response = api.post(f"/proxies/{proxy}/toxics", json=body)
    assert response.status_code == 200, response.text
    return response.json()
