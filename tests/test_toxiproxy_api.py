"""The HTTP API over real HTTP: every route, status code and error message of Toxiproxy 2.x."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest
from conftest_toxiproxy import (  # noqa: F401 - fixtures
    ServerProcess,
    api_fixture,
    connect,
    echo_fixture,
    http_upstream_fixture,
    make_proxy,
    metric,
    refused,
    roundtrip,
    run_cli,
    thread_loop_fixture,
    toxiproxy_fixture,
)

pytestmark = pytest.mark.timeout(120)


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == response.status_code
    return response.status_code, body["error"]


def test_version(api):
    response = api.get("/version")
    assert response.status_code == 200
    assert re.fullmatch(r"\d+\.\d+\.\d+", response.json()["version"])


def test_create_list_show_delete(api, echo):
    assert api.get("/proxies").json() == {}
    response = api.post(
        "/proxies", json={"name": "db", "listen": "127.0.0.1:0", "upstream": echo.address}
    )
    assert response.status_code == 201
    proxy = response.json()
    assert proxy["name"] == "db" and proxy["upstream"] == echo.address
    assert proxy["enabled"] is True and proxy["toxics"] == []
    host, port = proxy["listen"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # port 0 became a real port
    with connect(proxy["listen"]) as sock:
        roundtrip(sock, b"through the proxy")
    assert api.get("/proxies").json() == {"db": proxy}
    assert api.get("/proxies/db").json() == proxy
    assert api.delete("/proxies/db").status_code == 204
    assert error(api.get("/proxies/db")) == (404, "proxy not found")
    assert refused(proxy["listen"])


def test_create_without_listen_takes_a_free_loopback_port(api, echo):
    listen = make_proxy(api, "nolisten", echo.address)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", listen) and not listen.endswith(":0")


def test_create_disabled_does_not_listen(api, echo):
    response = api.post(
        "/proxies",
        json={"name": "off", "listen": "127.0.0.1:0", "upstream": echo.address, "enabled": False},
    )
    assert response.status_code == 201
    assert response.json()["enabled"] is False


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
        ({"name": "", "upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
        ({"name": "x"}, 400, "missing required field: upstream"),
        ({"name": "x", "upstream": "127.0.0.1:1", "enabled": "yes"}, 400, "bad request body: "),
        ({"name": 5, "upstream": "127.0.0.1:1"}, 400, "bad request body: "),
        ({"name": "x", "upstream": "nohostport"}, 400, "bad request body: "),
        ([1, 2], 400, "bad request body: "),
    ],
)
def test_create_rejects_bad_bodies(api, body, status, message):
    code, text = error(api.post("/proxies", json=body))
    assert code == status and text.startswith(message), text
    assert api.get("/proxies").json() == {}


def test_create_rejects_malformed_json(api):
    code, text = error(api.post("/proxies", content=b'{"name": "x",'))
    assert code == 400 and text.startswith("bad request body: ")


def test_create_duplicate_is_a_conflict(api, echo):
    make_proxy(api, "dup", echo.address)
    code, text = error(api.post("/proxies", json={"name": "dup", "upstream": echo.address}))
    assert (code, text) == (409, "proxy already exists")


def test_bind_failure_is_500_and_leaves_nothing(api, echo):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        response = api.post(
            "/proxies", json={"name": "busy", "listen": address, "upstream": echo.address}
        )
        code, text = error(response)
    assert code == 500 and "address already in use" in text.lower(), text
    assert "busy" not in api.get("/proxies").json()
    # The name is free again: a failed create left nothing behind.
    assert api.post("/proxies", json={"name": "busy", "upstream": echo.address}).status_code == 201


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_partial_update_and_enable_disable(api, echo, method):
    listen = make_proxy(api, "upd", echo.address)
    response = api.request(method, "/proxies/upd", json={"enabled": False})
    assert response.status_code == 200
    assert response.json() == {
        "name": "upd",
        "listen": listen,
        "upstream": echo.address,
        "enabled": False,
        "toxics": [],
    }
    assert refused(listen)
    response = api.request(method, "/proxies/upd", json={"enabled": True})
    assert response.json()["enabled"] is True and response.json()["listen"] == listen
    with connect(listen) as sock:
        roundtrip(sock)


def test_update_upstream_and_listen_restart_the_proxy(api, echo, http_upstream):
    listen = make_proxy(api, "move", echo.address)
    with connect(listen) as sock:
        roundtrip(sock)
    response = api.patch("/proxies/move", json={"upstream": http_upstream.address})
    assert response.status_code == 200 and response.json()["upstream"] == http_upstream.address
    assert response.json()["listen"] == listen and response.json()["enabled"] is True
    assert httpx.get(f"http://{listen}/ok", timeout=5).text == "ok"

    response = api.patch("/proxies/move", json={"listen": "127.0.0.1:0"})
    new_listen = response.json()["listen"]
    assert new_listen != listen and response.json()["upstream"] == http_upstream.address
    assert refused(listen)
    assert httpx.get(f"http://{new_listen}/ok", timeout=5).text == "ok"


def test_update_rejects_bad_body(api, echo):
    make_proxy(api, "badupd", echo.address)
    assert error(api.patch("/proxies/badupd", json={"enabled": 3}))[0] == 400
    assert error(api.patch("/proxies/badupd", content=b"{nope"))[0] == 400
    assert api.get("/proxies/badupd").json()["enabled"] is True


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_missing_proxy_is_404(api, method):
    response = api.request(method, "/proxies/ghost", json={"enabled": True})
    assert error(response) == (404, "proxy not found")
    response = api.request(method, "/proxies/ghost/toxics", json={"type": "latency"})
    if method in ("GET", "POST"):
        assert error(response) == (404, "proxy not found")
    else:
        assert error(response)[0] == 405


def test_toxic_routes(api, echo):
    make_proxy(api, "tox", echo.address)
    assert api.get("/proxies/tox/toxics").json() == []

    response = api.post(
        "/proxies/tox/toxics", json={"type": "latency", "attributes": {"latency": 50, "xx": 1}}
    )
    assert response.status_code == 200  # not 201
    assert response.json() == {
        "attributes": {"latency": 50, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
    }
    response = api.post(
        "/proxies/tox/toxics",
        json={"type": "slicer", "stream": "upstream", "name": "cut", "toxicity": 0.5},
    )
    sliced = response.json()
    assert sliced["attributes"] == {"average_size": 0, "size_variation": 0, "delay": 0}
    assert (sliced["name"], sliced["stream"], sliced["toxicity"]) == ("cut", "upstream", 0.5)

    listed = api.get("/proxies/tox/toxics").json()
    assert [t["name"] for t in listed] == ["cut", "latency_downstream"]  # upstream first
    assert api.get("/proxies/tox").json()["toxics"] == listed
    assert api.get("/proxies/tox/toxics/cut").json() == sliced

    for method in ("POST", "PATCH"):
        response = api.request(
            method,
            "/proxies/tox/toxics/latency_downstream",
            json={"attributes": {"jitter": 7}, "type": "timeout", "name": "other"},
        )
        assert response.status_code == 200
        assert response.json()["attributes"] == {"latency": 50, "jitter": 7}
        assert response.json()["type"] == "latency"
    response = api.patch("/proxies/tox/toxics/latency_downstream", json={"toxicity": 0.25})
    assert response.json()["toxicity"] == 0.25
    assert response.json()["attributes"] == {"latency": 50, "jitter": 7}

    assert api.delete("/proxies/tox/toxics/cut").status_code == 204
    assert [t["name"] for t in api.get("/proxies/tox/toxics").json()] == ["latency_downstream"]


def test_toxic_errors(api, echo):
    make_proxy(api, "te", echo.address)
    post = api.post
    assert error(post("/proxies/te/toxics", json={"type": "warp"})) == (400, "invalid toxic type")
    assert error(post("/proxies/te/toxics", json={})) == (400, "invalid toxic type")
    assert error(post("/proxies/te/toxics", json={"type": "latency", "stream": "sideways"})) == (
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    code, text = error(post("/proxies/te/toxics", content=b"{"))
    assert code == 400 and text.startswith("bad request body: ")
    code, text = error(
        post("/proxies/te/toxics", json={"type": "latency", "attributes": {"latency": "x"}})
    )
    assert code == 400 and text.startswith("bad request body: ")
    assert post("/proxies/te/toxics", json={"type": "noop"}).status_code == 200
    assert error(post("/proxies/te/toxics", json={"type": "noop"})) == (409, "toxic already exists")
    # Names are unique per proxy, across both streams.
    response = post("/proxies/te/toxics", json={"type": "noop", "stream": "upstream"})
    assert response.status_code == 200 and response.json()["name"] == "noop_upstream"
    response = post(
        "/proxies/te/toxics",
        json={"type": "latency", "stream": "upstream", "name": "noop_upstream"},
    )
    assert error(response) == (409, "toxic already exists")
    for method in ("GET", "POST", "PATCH", "DELETE"):
        response = api.request(method, "/proxies/te/toxics/ghost", json={"toxicity": 1})
        assert error(response) == (404, "toxic not found")


def test_reset_enables_proxies_and_removes_toxics(api, echo):
    listen = make_proxy(api, "r1", echo.address)
    make_proxy(api, "r2", echo.address)
    api.post("/proxies/r1/toxics", json={"type": "latency", "attributes": {"latency": 1000}})
    api.post("/proxies/r2/toxics", json={"type": "timeout", "stream": "upstream"})
    api.post("/proxies/r1", json={"enabled": False})
    response = api.post("/reset")
    assert response.status_code == 204 and response.content == b""
    proxies = api.get("/proxies").json()
    assert set(proxies) == {"r1", "r2"}
    assert all(p["enabled"] and p["toxics"] == [] for p in proxies.values())
    assert proxies["r1"]["listen"] == listen
    with connect(listen) as sock:
        assert roundtrip(sock) < 0.5


def test_populate(api, echo, http_upstream):
    body = [
        {"name": "p1", "listen": "127.0.0.1:0", "upstream": echo.address},
        {"name": "p2", "upstream": http_upstream.address, "enabled": False},
    ]
    response = api.post("/populate", json=body)
    assert response.status_code == 201
    proxies = response.json()["proxies"]
    assert [p["name"] for p in proxies] == ["p1", "p2"]
    assert proxies[0]["enabled"] is True and proxies[1]["enabled"] is False
    p1_listen = proxies[0]["listen"]

    # The same declaration again is left alone (toxics kept); a changed one is replaced.
    api.post("/proxies/p1/toxics", json={"type": "noop"})
    again = [{"name": "p1", "listen": p1_listen, "upstream": echo.address}]
    response = api.post("/populate", json=again)
    assert response.status_code == 201
    assert response.json()["proxies"][0]["toxics"] != []
    changed = [{"name": "p1", "listen": p1_listen, "upstream": http_upstream.address}]
    replaced = api.post("/populate", json=changed).json()["proxies"][0]
    assert replaced["toxics"] == [] and replaced["upstream"] == http_upstream.address
    assert httpx.get(f"http://{p1_listen}/ok", timeout=5).text == "ok"


def test_populate_validates_everything_before_changing_anything(api, echo):
    body = [
        {"name": "first", "upstream": echo.address},
        {"upstream": echo.address},
    ]
    assert error(api.post("/populate", json=body)) == (
        400,
        "missing required field: name at proxy 2",
    )
    body = [{"name": "first", "upstream": echo.address}, {"name": "second"}]
    assert error(api.post("/populate", json=body)) == (
        400,
        "missing required field: upstream at proxy 2",
    )
    assert api.get("/proxies").json() == {}
    for bad in ({"name": "x", "upstream": echo.address}, "text", 3):
        code, text = error(api.post("/populate", json=bad))
        assert code == 400 and text.startswith("bad request body: ")
    code, text = error(api.post("/populate", content=b"[{"))
    assert code == 400 and text.startswith("bad request body: ")


def test_browsers_unknown_routes_and_wrong_methods(api):
    response = api.get("/proxies", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert error(response)[0] == 403
    assert error(api.get("/nowhere")) == (404, "not found")
    assert error(api.put("/proxies"))[0] == 405
    assert error(api.delete("/reset"))[0] == 405
    assert error(api.post("/version"))[0] == 405


def test_cross_site_and_rebound_requests_are_refused(api, echo):
    make_proxy(api, "x", echo.address, enabled=False)
    strangers = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Host": "evil.example"},
        {"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain"},
    ]
    for headers in strangers:
        assert error(api.post("/reset", headers=headers))[0] == 403, headers
        assert error(api.delete("/proxies/x", headers=headers))[0] == 403, headers
        assert error(api.get("/proxies", headers=headers))[0] == 403, headers
    assert api.get("/proxies").json()["x"]["enabled"] is False  # nothing was done
    # Toxiproxy's own clients post /reset without a JSON body: still served from loopback
    local = {"Content-Type": "text/plain", "Origin": "http://127.0.0.1", "Host": "localhost"}
    assert api.post("/reset", headers=local).status_code == 204
    assert api.get("/proxies").json()["x"]["enabled"] is True


def test_metrics(api, toxiproxy, echo):
    listen = make_proxy(api, "m", echo.address)
    api.post("/proxies/m/toxics", json={"type": "noop", "stream": "upstream"})
    with connect(listen) as sock:
        roundtrip(sock, b"x" * 1000)
    response = api.get("/metrics")
    assert response.status_code == 200
    text = response.text
    for direction in ("upstream", "downstream"):
        assert metric(text, "toxiproxy_proxy_received_bytes_total", proxy="m", direction=direction)
        assert metric(text, "toxiproxy_proxy_sent_bytes_total", proxy="m", direction=direction)
    assert metric(text, "toxiproxy_proxy_received_bytes_total", direction="upstream") >= 1000
    assert metric(text, "toxiproxy_proxy_connections_total", proxy="m") >= 1
    assert metric(text, "toxiproxy_proxy_toxics_active", proxy="m", direction="upstream") == 1


def test_metrics_route_needs_the_flag():
    server = ServerProcess().start()
    try:
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 404
        assert httpx.get(f"{server.url}/version", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0


def test_config_file_creates_proxies_at_start(tmp_path, echo):
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps([{"name": "cfg", "listen": "127.0.0.1:0", "upstream": echo.address}])
    )
    server = ServerProcess("--config", str(config)).start()
    try:
        proxies = httpx.get(f"{server.url}/proxies", timeout=5).json()
        assert proxies["cfg"]["enabled"] is True
        with connect(proxies["cfg"]["listen"]) as sock:
            roundtrip(sock)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[{"name": "a", "listen": "127.0.0.1:0"}]', "proxy 1: field 'upstream': expected"),
        ('[{"name": "a", "upstream": "127.0.0.1:1", "enabled": "no"}]', "field 'enabled'"),
        ('{"name": "a"}', "expected a JSON array of proxies"),
        ("[{", "expected valid JSON"),
    ],
)
def test_bad_config_file_is_one_clear_line(tmp_path, content, expected):
    config = tmp_path / "proxies.json"
    config.write_text(content)
    result = run_cli("serve", "--port", "0", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {config}: ") and expected in lines[0], lines[0]


def test_missing_config_file(tmp_path):
    result = run_cli("serve", "--port", "0", "--config", str(tmp_path / "absent.json"))
    assert result.returncode == 2 and "absent.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_busy_ports_exit_3(tmp_path, echo):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
        assert result.returncode == 3 and f"127.0.0.1:{port}" in result.stderr
        config = tmp_path / "proxies.json"
        config.write_text(
            json.dumps([{"name": "a", "listen": f"127.0.0.1:{port}", "upstream": echo.address}])
        )
        result = run_cli("serve", "--port", "0", "--config", str(config))
        assert result.returncode == 3 and "address already in use" in result.stderr.lower()
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
