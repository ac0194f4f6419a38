"""Each toxic's effect through a real TCP echo server and a real streaming HTTP server.

Timing assertions are relations with slack (a latency toxic adds at least most of its delay;
a bandwidth cap keeps throughput under a multiple of the cap), never tight absolute bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time

import httpx
import pytest
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    add_toxic,
    api_fixture,
    connect,
    echo_fixture,
    http_upstream_fixture,
    make_proxy,
    metric,
    open_fds,
    recv_exactly,
    recv_until_closed,
    refused,
    roundtrip,
    thread_loop_fixture,
    toxiproxy_fixture,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


def median_rtt(sock: socket.socket, n: int = 5) -> float:
    return statistics.median(roundtrip(sock) for _ in range(n))


def test_noop_passes_bytes_unchanged(api, echo):
    listen = make_proxy(api, "noop", echo.address)
    add_toxic(api, "noop", "noop")
    add_toxic(api, "noop", "noop", stream="upstream")
    payload = bytes(range(256)) * 200
    with connect(listen) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_latency_adds_about_the_delay(api, echo, stream):
    listen = make_proxy(api, "lat", echo.address)
    with connect(listen) as sock:
        base = median_rtt(sock)
        add_toxic(api, "lat", "latency", stream=stream, latency=150)
        slow = median_rtt(sock, 3)  # the toxic applies to this already open connection
        assert slow - base >= 0.135
        assert slow < base + 1.0
        api.delete(f"/proxies/lat/toxics/latency_{stream}")
        assert median_rtt(sock) < slow - 0.1


def test_removing_a_toxic_releases_what_it_holds_in_order(api, echo):
    listen = make_proxy(api, "hold", echo.address)
    add_toxic(api, "hold", "latency", latency=3000)
    add_toxic(api, "hold", "bandwidth", stream="upstream", rate=20)  # 20 KB/s
    payload = bytes(range(256)) * 400  # 100 KB: 5 s at 20 KB/s
    with connect(listen) as sock:
        start = time.monotonic()
        sock.sendall(b"first|")
        time.sleep(0.2)
        assert api.delete("/proxies/hold/toxics/latency_downstream").status_code == 204
        assert recv_exactly(sock, 6) == b"first|"
        assert time.monotonic() - start < 2.0  # released, not served out its 3 s
        sock.sendall(payload)
        time.sleep(0.3)
        assert api.delete("/proxies/hold/toxics/bandwidth_upstream").status_code == 204
        assert recv_exactly(sock, len(payload)) == payload  # nothing lost or reordered
        assert time.monotonic() - start < 4.0


def test_latency_toxics_chain_and_accumulate(api, echo):
    listen = make_proxy(api, "chain", echo.address)
    api.post(
        "/proxies/chain/toxics",
        json={"type": "latency", "name": "a", "attributes": {"latency": 100}},
    )
    api.post(
        "/proxies/chain/toxics",
        json={"type": "latency", "name": "b", "attributes": {"latency": 100}},
    )
    with connect(listen) as sock:
        assert roundtrip(sock) >= 0.18


def test_jitter_spreads_the_delay(api, echo):
    listen = make_proxy(api, "jit", echo.address)
    add_toxic(api, "jit", "latency", latency=100, jitter=80)
    with connect(listen) as sock:
        samples = [roundtrip(sock) for _ in range(15)]
    assert max(samples) - min(samples) > 0.02
    assert min(samples) >= 0.015  # never below latency - jitter
    assert statistics.median(samples) >= 0.05


def test_latency_on_a_streaming_http_response(api, http_upstream):
    listen = make_proxy(api, "httplat", http_upstream.address)
    with httpx.Client(timeout=10) as client:
        start = time.monotonic()
        assert client.get(f"http://{listen}/ok").text == "ok"
        base = time.monotonic() - start
        add_toxic(api, "httplat", "latency", latency=200)
        start = time.monotonic()
        with client.stream("GET", f"http://{listen}/stream?chunks=3&gap_ms=20") as response:
            first = None
            body = b""
            for chunk in response.iter_raw():
                first = first or time.monotonic() - start
                body += chunk
        assert body.count(b"data: ") == 3
        assert first is not None and first - base >= 0.18


def test_toxic_added_mid_stream_slows_the_rest(api, http_upstream):
    listen = make_proxy(api, "mid", http_upstream.address)
    gaps = []
    with httpx.Client(timeout=10) as client:
        url = f"http://{listen}/stream?chunks=8&gap_ms=40"
        with client.stream("GET", url) as response:
            last = time.monotonic()
            for i, _ in enumerate(response.iter_raw()):
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                if i == 2:
                    add_toxic(api, "mid", "latency", latency=300)
    assert max(gaps[3:]) >= 0.25  # the first chunk after the toxic waited for it
    assert max(gaps[1:3]) < 0.25


def test_bandwidth_caps_throughput(api, http_upstream):
    listen = make_proxy(api, "bw", http_upstream.address)
    size = 150_000
    with httpx.Client(timeout=20) as client:
        start = time.monotonic()
        assert len(client.get(f"http://{listen}/bytes?size={size}").content) == size
        fast = time.monotonic() - start
        add_toxic(api, "bw", "bandwidth", rate=100)  # 100 KB/s: 150 KB takes about 1.5 s
        start = time.monotonic()
        assert len(client.get(f"http://{listen}/bytes?size={size}").content) == size
        slow = time.monotonic() - start
    assert slow >= 1.2 and slow > 5 * fast
    assert size / slow <= 1.25 * 100_000


def test_slow_close_delays_the_close(api, echo):
    listen = make_proxy(api, "sc", echo.address)

    def time_to_close() -> float:
        with connect(listen) as sock:
            roundtrip(sock)
            start = time.monotonic()
            sock.shutdown(socket.SHUT_WR)  # the echo server closes in turn
            assert recv_until_closed(sock) == b""
            return time.monotonic() - start

    fast = time_to_close()
    add_toxic(api, "sc", "slow_close", delay=400)
    slow = time_to_close()
    assert slow >= 0.37 and slow - fast >= 0.3


def test_timeout_zero_holds_until_removed_then_closes(api, echo):
    listen = make_proxy(api, "to0", echo.address)
    with connect(listen) as sock:
        roundtrip(sock)
        add_toxic(api, "to0", "timeout", timeout=0)
        sock.sendall(b"held")
        sock.settimeout(0.6)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing comes back, and the connection stays open
        sock.settimeout(5)
        api.delete("/proxies/to0/toxics/timeout_downstream")
        assert recv_until_closed(sock) == b""  # then it closes: the stream lost bytes


def test_timeout_closes_after_the_delay(api, echo):
    listen = make_proxy(api, "to", echo.address)
    add_toxic(api, "to", "timeout", stream="upstream", timeout=300)
    with connect(listen) as sock:
        start = time.monotonic()
        sock.sendall(b"never arrives")
        assert recv_until_closed(sock) == b""
        assert time.monotonic() - start >= 0.27


def test_reset_peer_sends_rst(api, echo):
    listen = make_proxy(api, "rst", echo.address)
    add_toxic(api, "rst", "reset_peer", stream="upstream", timeout=0)
    with connect(listen) as sock:
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            recv_until_closed(sock)


def test_reset_peer_waits_its_timeout(api, echo):
    listen = make_proxy(api, "rstt", echo.address)
    with connect(listen) as sock:
        roundtrip(sock)
        add_toxic(api, "rstt", "reset_peer", timeout=300)
        start = time.monotonic()
        sock.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            recv_until_closed(sock)
        assert time.monotonic() - start >= 0.27


def test_limit_data_cuts_after_n_bytes(api, echo):
    listen = make_proxy(api, "lim", echo.address)
    add_toxic(api, "lim", "limit_data", bytes=100)
    with connect(listen) as sock:
        sock.sendall(b"a" * 60)
        assert recv_exactly(sock, 60) == b"a" * 60
        sock.sendall(b"b" * 200)
        assert recv_until_closed(sock) == b"b" * 40


def test_limit_data_upstream(api, echo):
    listen = make_proxy(api, "limu", echo.address)
    add_toxic(api, "limu", "limit_data", stream="upstream", bytes=50)
    before = echo.received
    with connect(listen) as sock:
        sock.sendall(b"c" * 120)
        assert len(recv_until_closed(sock)) <= 50  # the connection closes after 50 bytes
    assert wait_for(lambda: echo.received - before == 50, 5)


def test_slicer_fragments_the_stream(api, echo):
    listen = make_proxy(api, "sl", echo.address)
    payload = bytes(range(200)) * 2

    def reads() -> int:
        with connect(listen) as sock:
            sock.sendall(payload)
            data, count = b"", 0
            for _ in range(len(payload)):
                if len(data) >= len(payload):
                    break
                data += sock.recv(65536)
                count += 1
            assert data == payload  # fragmented, never reordered or lost
            return count

    whole = reads()
    add_toxic(api, "sl", "slicer", average_size=10, size_variation=5, delay=3000)
    assert reads() >= max(8, 4 * whole)


def test_toxicity_is_drawn_per_connection(api, echo):
    listen = make_proxy(api, "tc", echo.address)
    api.post(
        "/proxies/tc/toxics",
        json={"type": "latency", "toxicity": 0.5, "attributes": {"latency": 200}},
    )
    fates = []
    for _ in range(16):
        with connect(listen) as sock:
            first = roundtrip(sock) >= 0.15
            second = roundtrip(sock) >= 0.15
            assert first == second  # one draw for the whole connection
            fates.append(first)
    assert any(fates) and not all(fates)
    api.patch("/proxies/tc/toxics/latency_downstream", json={"toxicity": 0.0})
    with connect(listen) as sock:
        assert roundtrip(sock) < 0.15


def test_disable_drops_open_connections_and_refuses_new_ones(api, echo, http_upstream):
    listen = make_proxy(api, "dis", echo.address)
    http_listen = make_proxy(api, "dis_http", http_upstream.address)
    with httpx.Client(timeout=10) as client, connect(listen) as sock:
        roundtrip(sock)
        with client.stream("GET", f"http://{http_listen}/stream?chunks=50&gap_ms=20") as resp:
            chunks = resp.iter_raw()
            next(chunks)
            api.post("/proxies/dis", json={"enabled": False})
            api.post("/proxies/dis_http", json={"enabled": False})
            with pytest.raises(httpx.HTTPError):
                for _ in chunks:
                    pass
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert recv_until_closed(sock) == b""
    assert refused(listen) and refused(http_listen)
    api.post("/proxies/dis", json={"enabled": True})
    with connect(listen) as sock:
        roundtrip(sock)


def test_reset_restores_a_broken_proxy(api, echo):
    listen = make_proxy(api, "rs", echo.address)
    add_toxic(api, "rs", "latency", latency=500)
    add_toxic(api, "rs", "limit_data", stream="upstream", bytes=1)
    api.post("/proxies/rs", json={"enabled": False})
    assert refused(listen)
    assert api.post("/reset").status_code == 204
    with connect(listen) as sock:
        assert roundtrip(sock, b"restored") < 0.4


@pytest.mark.timeout(180)
def test_200_connections_with_toxics_churning_do_not_leak(api, toxiproxy, echo, thread_loop):
    listen = make_proxy(api, "leak", echo.address)
    host, port = listen.rsplit(":", 1)
    baseline_fds = open_fds(toxiproxy.pid)
    baseline_tasks = metric(api.get("/metrics").text, "toxiproxy_server_asyncio_tasks")
    stop = asyncio.Event()
    counts = {"ok": 0, "closed": 0}

    async def client(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in range(10_000):  # bounded; normally ended by `stop`
                if stop.is_set():
                    break
                payload = f"{i}:{n};".encode()
                writer.write(payload)
                await asyncio.wait_for(reader.readexactly(len(payload)), 10)
                counts["ok"] += 1
                await asyncio.sleep(0.01)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            counts["closed"] += 1  # limit_data and timeout toxics close some on purpose
        finally:
            writer.close()

    async def run_clients() -> None:
        tasks = [asyncio.create_task(client(i)) for i in range(200)]
        await asyncio.sleep(6)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)

    future = asyncio.run_coroutine_threadsafe(run_clients(), thread_loop.loop)
    assert wait_for(
        lambda: (
            metric(api.get("/metrics").text, "toxiproxy_proxy_connections_open", proxy="leak")
            >= 150
        ),
        10,
    )
    churn = [
        ("latency", "downstream", {"latency": 20, "jitter": 10}),
        ("slicer", "upstream", {"average_size": 3, "size_variation": 1, "delay": 100}),
        ("bandwidth", "downstream", {"rate": 50}),
        ("slow_close", "upstream", {"delay": 50}),
        ("noop", "upstream", {}),
    ]
    for kind, stream, attrs in churn:
        add_toxic(api, "leak", kind, stream=stream, **attrs)
        time.sleep(0.3)
    for kind, stream, _ in churn:
        assert api.delete(f"/proxies/leak/toxics/{kind}_{stream}").status_code == 204
        time.sleep(0.2)
    api.post(
        "/proxies/leak/toxics",
        json={"type": "limit_data", "toxicity": 0.1, "attributes": {"bytes": 200}},
    )
    api.post(
        "/proxies/leak/toxics",
        json={"type": "timeout", "toxicity": 0.1, "attributes": {"timeout": 0}},
    )
    time.sleep(0.5)
    api.post("/reset")
    future.result(60)
    assert counts["ok"] > 200

    def settled() -> bool:
        text = api.get("/metrics").text
        return (
            metric(text, "toxiproxy_proxy_connections_open", proxy="leak") == 0
            and metric(text, "toxiproxy_server_asyncio_tasks") <= baseline_tasks
            and open_fds(toxiproxy.pid) <= baseline_fds
        )

    assert wait_for(settled, 15), (
        api.get("/metrics").text,
        open_fds(toxiproxy.pid),
        baseline_fds,
    )
    assert wait_for(lambda: echo.open == 0, 10)
