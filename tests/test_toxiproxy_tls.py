"""TLS from the proxy to its upstream: ``upstream_tls`` and the fields that go with it.

The upstream is an SSE chat-completions server in TLS on loopback, with a ``trustme``
certificate for ``upstream.test`` and ``localhost``; it records the SNI names it was sent.
Clients speak plain HTTP to the proxy's listen address, as they would to any proxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from aiohttp import web
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    LOOPBACK,
    ServerProcess,
    ThreadLoop,
    add_toxic,
    api_fixture,
    make_proxy,
    run_cli,
    thread_loop_fixture,
    toxiproxy_fixture,
    wait_for,
)
from toxiproxy import Toxiproxy

pytestmark = pytest.mark.timeout(120)

NAME = "upstream.test"
TOXIPROXY_FIELDS = {"name", "listen", "upstream", "enabled", "toxics"}


class TlsUpstream:
    """``POST /v1/chat/completions`` streaming three SSE chunks and ``[DONE]``, in TLS."""

    def __init__(self, loop: ThreadLoop, ca: trustme.CA):
        self.loop = loop
        self.sni: list[str | None] = []
        self.hosts: list[str] = []  # the Host header of each request
        self.requests = 0
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(NAME, "localhost").configure_cert(context)
        context.sni_callback = self._sni
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, LOOPBACK, 0, ssl_context=context)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = loop.run(start())
        self.address = f"{LOOPBACK}:{self.port}"

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        self.hosts.append(request.headers.get("Host", ""))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("hello", " from", " tls"):
            chunk = {
                "object": "chat.completion.chunk",
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "delta": {"content": word}}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.01)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def close(self) -> None:
        self.loop.run(self.runner.cleanup(), timeout=10)


@pytest.fixture(scope="module", name="ca")
def ca_fixture() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module", name="ca_file")
def ca_file_fixture(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module", name="tls_upstream")
def tls_upstream_fixture(thread_loop: ThreadLoop, ca: trustme.CA) -> Iterator[TlsUpstream]:
    server = TlsUpstream(thread_loop, ca)
    yield server
    server.close()


def chat(listen: str) -> list[str]:
    """The SSE ``data:`` payloads of one streamed chat completion through ``listen``."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    url = f"http://{listen}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=10) as response:
        assert response.status_code == 200
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def content(events: list[str]) -> str:
    assert events[-1] == "[DONE]", events
    return "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1])


def failures(toxiproxy: ServerProcess, proxy: str) -> list[str]:
    return [line for line in toxiproxy.log().splitlines() if f"proxy {proxy}: TLS" in line]


def assert_refused(toxiproxy: ServerProcess, proxy: str, listen: str, reason: str) -> None:
    """The client's connection is closed without a response; one warning says why."""
    with pytest.raises(httpx.TransportError):
        chat(listen)
    assert wait_for(lambda: failures(toxiproxy, proxy), timeout=10), toxiproxy.log()
    lines = failures(toxiproxy, proxy)
    assert len(lines) == 1 and reason in lines[0], lines


def test_ca_file_and_server_name(api, toxiproxy, tls_upstream, ca_file):
    tls = {"upstream_tls": True, "upstream_ca_file": ca_file, "upstream_server_name": NAME}
    listen = make_proxy(api, "tls-ok", tls_upstream.address, **tls)
    before = len(tls_upstream.sni)
    assert content(chat(listen)) == "hello from tls"
    assert tls_upstream.sni[before:] == [NAME]
    # the client named the proxy; the upstream is asked by its own name
    assert tls_upstream.hosts[-1] == f"{NAME}:{tls_upstream.port}"
    shown = api.get("/proxies/tls-ok").json()
    assert shown["listen"] == listen and shown["upstream"] == tls_upstream.address
    assert {k: shown[k] for k in tls} == tls and shown["upstream_verify"] is True
    # toxiproxy-python ignores the extra fields
    library = Toxiproxy()
    host, port = toxiproxy.url.removeprefix("http://").rsplit(":", 1)
    library.update_api_consumer(host, int(port))
    assert library.get_proxy("tls-ok").listen == listen


def test_server_name_defaults_to_the_upstream_host(api, tls_upstream, ca_file):
    upstream = f"localhost:{tls_upstream.port}"
    listen = make_proxy(api, "tls-host", upstream, upstream_tls=True, upstream_ca_file=ca_file)
    before = len(tls_upstream.sni)
    assert content(chat(listen)) == "hello from tls"
    assert tls_upstream.sni[before:] == ["localhost"]


def test_system_trust_store_refuses_an_unknown_ca(api, toxiproxy, tls_upstream):
    listen = make_proxy(
        api, "tls-system", tls_upstream.address, upstream_tls=True, upstream_server_name=NAME
    )
    served = tls_upstream.requests
    assert_refused(toxiproxy, "tls-system", listen, "certificate verify failed")
    assert tls_upstream.requests == served


def test_verify_false_needs_no_ca(api, tls_upstream):
    listen = make_proxy(
        api, "tls-noverify", tls_upstream.address, upstream_tls=True, upstream_verify=False
    )
    assert content(chat(listen)) == "hello from tls"
    assert api.get("/proxies/tls-noverify").json()["upstream_verify"] is False


def test_wrong_server_name_is_refused(api, toxiproxy, tls_upstream, ca_file):
    listen = make_proxy(
        api,
        "tls-wrong-name",
        tls_upstream.address,
        upstream_tls=True,
        upstream_ca_file=ca_file,
        upstream_server_name="other.test",
    )
    before = len(tls_upstream.sni)
    assert_refused(toxiproxy, "tls-wrong-name", listen, "other.test")
    assert tls_upstream.sni[before:] == ["other.test"]


def test_patch_turns_tls_on_and_off(api, tls_upstream, ca_file):
    listen = make_proxy(api, "tls-patch", tls_upstream.address)
    assert set(api.get("/proxies/tls-patch").json()) == TOXIPROXY_FIELDS
    with pytest.raises(httpx.TransportError):  # plain HTTP to a TLS port
        chat(listen)
    tls = {"upstream_tls": True, "upstream_ca_file": ca_file, "upstream_server_name": NAME}
    response = api.patch("/proxies/tls-patch", json=tls)
    assert response.status_code == 200, response.text
    assert response.json()["listen"] == listen and response.json()["enabled"] is True
    assert content(chat(listen)) == "hello from tls"
    # an empty server name is the default again: 127.0.0.1, not in the certificate
    response = api.patch("/proxies/tls-patch", json={"upstream_server_name": ""})
    assert response.json()["upstream_server_name"] is None
    with pytest.raises(httpx.TransportError):
        chat(listen)
    response = api.patch("/proxies/tls-patch", json={"upstream_tls": False})
    assert set(response.json()) == TOXIPROXY_FIELDS


def test_populate_restarts_a_proxy_whose_tls_settings_change(api, tls_upstream, ca_file):
    with socket.socket() as sock:  # a fixed listen address: port 0 would always differ
        sock.bind((LOOPBACK, 0))
        listen = f"{LOOPBACK}:{sock.getsockname()[1]}"
    spec = {
        "name": "tls-pop",
        "listen": listen,
        "upstream": tls_upstream.address,
        "upstream_tls": True,
        "upstream_ca_file": ca_file,
        "upstream_server_name": NAME,
    }
    assert api.post("/populate", json=[spec]).status_code == 201
    add_toxic(api, "tls-pop", "latency", latency=1)
    api.post("/populate", json=[spec])  # unchanged: left alone, toxic and all
    assert len(api.get("/proxies/tls-pop/toxics").json()) == 1
    response = api.post("/populate", json=[{**spec, "upstream_verify": False}])
    assert response.status_code == 201, response.text
    assert api.get("/proxies/tls-pop/toxics").json() == []  # replaced
    assert content(chat(listen)) == "hello from tls"


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        ({"upstream_tls": "yes"}, "upstream_tls", "expected true or false, got 'yes'"),
        ({"upstream_verify": 0}, "upstream_verify", "expected true or false, got 0"),
        ({"upstream_server_name": "a b"}, "upstream_server_name", "expected a host name"),
        ({"upstream_server_name": 5}, "upstream_server_name", "expected a host name"),
        ({"upstream_ca_file": "/nonexistent/ca.pem"}, "upstream_ca_file", "No such file"),
        ({"upstream_ca_file": ["a"]}, "upstream_ca_file", "got an array"),
    ],
)
def test_bad_tls_fields_are_400(api, tls_upstream, extra, field, expected):
    body = {"name": "tls-bad", "upstream": tls_upstream.address, **extra}
    for method, path, sent in (
        ("POST", "/proxies", body),
        ("POST", "/populate", [body]),
    ):
        response = api.request(method, path, json=sent)
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert f"field '{field}'" in message and expected in message, message
    assert "tls-bad" not in api.get("/proxies").json()
    make_proxy(api, "tls-bad", tls_upstream.address)
    response = api.patch("/proxies/tls-bad", json=extra)
    assert response.status_code == 400 and f"field '{field}'" in response.json()["error"]


def test_a_ca_file_without_certificates_is_400(api, tls_upstream, tmp_path):
    path = tmp_path / "empty.pem"
    path.write_text("not a certificate\n")
    body = {"name": "tls-empty", "upstream": tls_upstream.address, "upstream_tls": True}
    response = api.post("/proxies", json={**body, "upstream_ca_file": str(path)})
    assert response.status_code == 400
    assert "field 'upstream_ca_file'" in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"upstream_tls": "yes"}, "proxy 1: field 'upstream_tls': expected true or false"),
        ({"upstream_ca_file": "absent.pem"}, "proxy 1: field 'upstream_ca_file': expected"),
    ],
)
def test_bad_tls_field_in_config_file_is_one_line(tmp_path: Path, extra, expected):
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "a", "upstream": "127.0.0.1:1", **extra}]))
    result = run_cli("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {config}: ") and expected in lines[0], lines[0]
