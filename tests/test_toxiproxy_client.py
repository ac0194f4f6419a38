"""``toxiproxy-python`` against our server, and aichaos's client layer built on it."""

from __future__ import annotations

import socket
import time

import pytest
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    api_fixture,
    connect,
    echo_fixture,
    refused,
    roundtrip,
    thread_loop_fixture,
    toxiproxy_fixture,
)
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from aichaos.experiments.proxies import (
    ProxyDecl,
    TopologyError,
    ToxiproxyClient,
    ToxiproxyError,
    load_topology,
    parse_topology,
    start_topology,
)

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def library(toxiproxy, api) -> Toxiproxy:
    """toxiproxy-python pointed at our server (``api`` deletes its proxies afterwards)."""
    server = Toxiproxy()
    host, port = toxiproxy.url.removeprefix("http://").rsplit(":", 1)
    server.update_api_consumer(host, int(port))
    return server


@pytest.fixture
def client(toxiproxy, api) -> ToxiproxyClient:
    return ToxiproxyClient(toxiproxy.url)


def test_library_server_calls(library):
    assert library.running() is True
    assert b'"version"' in library.version()
    assert library.proxies() == {}
    assert library.get_proxy("nope") is None


def test_library_proxy_lifecycle(library, echo):
    proxy = library.create(upstream=echo.address, name="lib")
    assert proxy.name == "lib" and proxy.upstream == echo.address and proxy.enabled is True
    assert not proxy.listen.endswith(":0")
    with connect(proxy.listen) as sock:
        roundtrip(sock)
    with pytest.raises(ProxyExists):
        library.create(upstream=echo.address, name="lib")  # the library's own check
    with pytest.raises(ProxyExists):  # and the server's 409, through the library
        APIConsumer.post("/proxies", json={"name": "lib", "upstream": echo.address})
    assert set(library.proxies()) == {"lib"}

    proxy.disable()
    assert proxy.enabled is False and refused(proxy.listen)
    assert library.get_proxy("lib").enabled is False
    proxy.enable()
    with connect(proxy.listen) as sock:
        roundtrip(sock)
    with proxy.down():
        assert refused(proxy.listen)
    with connect(proxy.listen) as sock:
        roundtrip(sock)

    assert library.destroy(proxy) is True
    assert library.get_proxy("lib") is None
    with pytest.raises(NotFound):
        proxy.destroy()


def test_library_toxics(library, echo):
    proxy = library.create(upstream=echo.address, name="libtox")
    proxy.add_toxic(type="latency", attributes={"latency": 120})
    proxy.add_toxic(type="bandwidth", stream="upstream", name="bw", toxicity=0.5)
    toxic = proxy.get_toxic("latency_downstream")
    assert toxic.type == "latency" and toxic.stream == "downstream"
    assert toxic.attributes == {"latency": 120, "jitter": 0} and toxic.toxicity == 1.0
    assert set(proxy.toxics()) == {"latency_downstream", "bw"}
    assert proxy.get_toxic("bw").attributes == {"rate": 0}
    assert proxy.get_toxic("missing") is None
    with connect(proxy.listen) as sock:
        assert roundtrip(sock) >= 0.1
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="latency")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="warp")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways", name="s")
    assert proxy.destroy_toxic("latency_downstream") is True
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")
    with connect(proxy.listen) as sock:
        assert roundtrip(sock) < 0.1


def test_library_reset_and_populate(library, echo):
    port = free_port()
    declared = [{"name": "pop", "upstream": echo.address, "listen": f"127.0.0.1:{port}"}]
    created = library.populate(declared)
    assert [p.name for p in created] == ["pop"] and created[0].listen == f"127.0.0.1:{port}"
    assert library.populate(declared) == []  # already as declared: left alone
    proxy = library.get_proxy("pop")
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    proxy.disable()
    assert library.reset() is True
    proxy = library.get_proxy("pop")
    assert proxy.enabled is True and proxy.toxics() == {}
    with connect(proxy.listen) as sock:
        roundtrip(sock)
    library.destroy_all()
    assert library.proxies() == {}


def test_client_populates_a_topology(client, echo, toxiproxy):
    port = free_port()
    topology = [
        {"name": "llm-1", "listen": f"127.0.0.1:{port}", "upstream": echo.address},
        {"name": "retriever", "listen": "127.0.0.1:0", "upstream": echo.address},
    ]
    proxies = start_topology(topology, toxiproxy.url, source="topology.yaml")
    assert set(proxies) == {"llm-1", "retriever"}
    assert proxies["llm-1"].listen == f"127.0.0.1:{port}"
    with connect(proxies["retriever"].listen) as sock:
        roundtrip(sock)
    client.add_toxic("llm-1", "noop")
    again = start_topology(topology, toxiproxy.url)  # start-up twice: llm-1 left as it was
    assert again["llm-1"].listen == f"127.0.0.1:{port}"
    assert set(client.toxics("llm-1")) == {"noop_downstream"}


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"name": "a"}, "topology.yaml: expected a list of proxies"),
        ([{"listen": "127.0.0.1:1", "upstream": "127.0.0.1:2"}], "proxies[0].name: expected"),
        ([{"name": "a", "listen": "x", "upstream": "127.0.0.1:2"}], "proxies[0].listen: expected"),
        ([{"name": "a", "listen": "127.0.0.1:1"}], "proxies[0].upstream: expected 'host:port'"),
        (
            [
                {"name": "a", "listen": "127.0.0.1:1", "upstream": "127.0.0.1:2"},
                {"name": "a", "listen": "127.0.0.1:3", "upstream": "127.0.0.1:2"},
            ],
            "proxies[1].name: expected a unique name",
        ),
    ],
)
def test_topology_errors_name_the_field(entries, expected):
    with pytest.raises(TopologyError) as info:
        parse_topology(entries, "topology.yaml")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_topology_file(tmp_path, toxiproxy, echo, client):
    path = tmp_path / "topology.yaml"
    path.write_text(
        f"proxies:\n  - name: gw\n    listen: 127.0.0.1:0\n    upstream: {echo.address}\n"
    )
    proxies = start_topology(path, toxiproxy.url)
    with connect(proxies["gw"].listen) as sock:
        roundtrip(sock)
    path.write_text("proxies:\n  - name: gw\n    listen: 127.0.0.1:0\n")
    with pytest.raises(TopologyError, match=r"topology.yaml: proxies\[0\].upstream: expected"):
        load_topology(path)
    path.write_text("services: []\n")
    with pytest.raises(TopologyError, match="'proxies' key"):
        load_topology(path)
    with pytest.raises(TopologyError, match="expected a readable file"):
        load_topology(tmp_path / "absent.yaml")


def test_client_toxic_and_outage_are_always_undone(client, echo):
    proxy = client.create("edge", echo.address)
    assert client.version()
    with (
        pytest.raises(RuntimeError),
        client.toxic_applied("edge", "latency", attributes={"latency": 150}),
    ):
        with connect(proxy.listen) as sock:
            assert roundtrip(sock) >= 0.13
        raise RuntimeError("the experiment failed")
    assert client.toxics("edge") == {}
    with pytest.raises(RuntimeError), client.outage("edge"):
        assert refused(proxy.listen)
        raise RuntimeError("the experiment failed")
    assert client.proxy("edge").enabled is True
    with connect(proxy.listen) as sock:
        assert roundtrip(sock) < 0.13


def test_client_errors_are_one_line(client, echo):
    client.create("exists", echo.address)
    with pytest.raises(ToxiproxyError, match="proxy already exists"):
        client.create("exists", echo.address)
    with pytest.raises(ToxiproxyError, match="proxy not found"):
        client.disable("ghost")
    with pytest.raises(ToxiproxyError, match="toxic not found"):
        client.remove_toxic("exists", "ghost")
    with pytest.raises(ToxiproxyError, match="toxic type"):
        client.add_toxic("exists", "warp")
    with pytest.raises(ToxiproxyError, match="stream was invalid"):
        client.add_toxic("exists", "latency", stream="sideways")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ToxiproxyError, match=r"(?i)address already in use.*HTTP 500"):
            client.create("busy", echo.address, listen=listen)
    with pytest.raises(ToxiproxyError, match="missing required field: upstream at proxy 1"):
        client.populate([ProxyDecl("x", "127.0.0.1:0", "")])


def test_client_unreachable_server_fails_in_bounded_time():
    client = ToxiproxyClient(f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(ToxiproxyError, match="not ready"):
        client.wait_ready(timeout=0.5)
    assert time.monotonic() - start < 5
    with pytest.raises(ToxiproxyError, match="cannot reach toxiproxy"):
        client.proxies()
    with pytest.raises(ToxiproxyError, match="expected http://host:port"):
        ToxiproxyClient("https://example.invalid:8474")
