"""The supervisor and ``aichaos stack``: real processes on loopback, stopped and checked by PID.

Topologies are in ``tests/data/topology/``; they use the simulator and the proxy server only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import wait_for
from typer.testing import CliRunner

from aichaos.harness.cli import app
from aichaos.harness.stack import Stack, StackClient
from aichaos.harness.stack_cli import DEFAULT_TOPOLOGY
from aichaos.harness.stack_state import process_alive
from aichaos.harness.supervisor import StackStartError
from aichaos.harness.topology import TopologyError, load_topology

DATA = Path(__file__).parent / "data" / "topology"
AICHAOS = str(Path(sys.executable).parent / "aichaos")


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


pytestmark = pytest.mark.timeout(120)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def state_pids(run_dir: Path, supervisor: bool = True) -> list[tuple[int, int | None]]:
    """The recorded (PID, start time) of the services, and of the supervisor process."""
    state = json.loads((run_dir / "stack.json").read_text())
    found = [(state["supervisor"]["pid"], state["supervisor"]["start_time"])] if supervisor else []
    found += [(s["pid"], s["start_time"]) for s in state["services"].values() if s["pid"]]
    return found


def assert_all_gone(pids: list[tuple[int, int | None]]) -> None:
    wait_for(
        lambda: not any(process_alive(pid, started) for pid, started in pids),
        10,
        f"processes {pids} gone",
    )


def kill_leftovers(pids: list[tuple[int, int | None]]) -> None:
    """Only for a failed test: stop what it started (each PID checked by its start time)."""
    for pid, started in pids:
        if process_alive(pid, started):
            os.killpg(pid, signal.SIGKILL)


# --- topology files --------------------------------------------------------------------------

BAD = [
    ("bad_unknown_field.yaml", "services[0].restart_dealy: expected one of the fields"),
    ("bad_missing_command.yaml", "services[0]: expected a command to run or the url of an"),
    ("bad_unknown_dependency.yaml", "services[0].depends_on[0]: expected a service"),
    ("bad_cycle.yaml", "services[0].depends_on: expected no dependency cycle, got a -> b -> a"),
    ("bad_proxy_upstream.yaml", "proxies[0].upstream: expected a service of this topology"),
    ("bad_yaml.yaml", "line 4: expected valid YAML"),
    ("bad_placeholder.yaml", "services[0].command[5]: expected a placeholder among"),
    ("bad_external_replicas.yaml", "services[0]: expected no replicas, port or env for an"),
]


@pytest.mark.parametrize(("name", "expected"), BAD)
def test_bad_topology_is_one_line_and_exit_2_and_nothing_started(
    name, expected, tmp_path, monkeypatch
):
    path = DATA / name
    with pytest.raises(TopologyError) as caught:
        load_topology(path)
    assert str(caught.value) == f"{path}: {str(caught.value).split(': ', 1)[1]}"
    assert expected in str(caught.value)

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["stack", "up", "--topology", str(path), "--run-dir", "run", "--detach"]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / ".aichaos").exists()


def test_default_topology_is_valid_and_starts_dependencies_first():
    topology = load_topology(DEFAULT_TOPOLOGY)
    order = [i.name for i in topology.instances()]
    assert order.index("gateway") == len(order) - 1
    gateway = next(i for i in topology.instances() if i.name == "gateway")
    assert {"toxiproxy", "llm-1", "llm-2", "fallback", "retriever"} <= gateway.depends_on


def test_replicas_expand_and_a_proxy_reference_implies_the_proxy_server():
    topology = load_topology(DATA / "stack.yaml")
    assert [i.name for i in topology.instances()] == ["toxiproxy", "llm-1", "llm-2"]
    data = yaml.safe_load((DATA / "stack.yaml").read_text())
    data["services"].append({"name": "client", "command": ["curl", "{proxy:llm-1}"]})
    data["services"][0]["depends_on"] = ["client"]
    from aichaos.harness.topology import parse_topology

    with pytest.raises(TopologyError, match=r"dependency cycle, got toxiproxy -> client"):
        parse_topology(data, "t.yaml")


# --- the Python API: one stack for the module ------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    with Stack.up(DATA / "stack.yaml", run_dir, prometheus=False) as running:
        yield running


def test_stack_comes_up_and_a_request_through_a_proxy_reaches_a_replica(stack):
    state = stack.status()
    assert state.status == "ready"
    assert {s.state for s in state.services.values()} == {"ready"}
    for name in ("llm-1", "llm-2"):
        proxy = stack.proxy_url(name)
        assert proxy != stack.url(name)
        response = httpx.post(f"{proxy}/v1/chat/completions", json=chat(f"sim-{name}"), timeout=10)
        assert response.status_code == 200
        assert response.json()["model"] == f"sim-{name}"  # the replica behind that proxy
    log = (stack.run_dir / "logs" / "llm-1.log").read_text()
    assert "aichaos supervisor: start #1" in log


def test_the_fault_api_has_its_own_port_and_no_proxy_forwards_it(stack):
    state = json.loads((stack.run_dir / "stack.json").read_text())
    assert state["services"]["toxiproxy"]["admin_url"] is None  # no {admin_port}: none
    proxy_ports = {int(p["listen"].rsplit(":", 1)[1]) for p in state["proxies"].values()}
    for name in ("llm-1", "llm-2"):
        svc = state["services"][name]
        assert svc["admin_url"] == f"http://127.0.0.1:{svc['admin_port']}"
        other_shell = StackClient(stack.run_dir)
        assert svc["admin_url"] == stack.admin_url(name) == other_shell.admin_url(name)
        assert svc["admin_port"] != svc["port"] and svc["admin_port"] not in proxy_ports
        assert state["proxies"][name]["upstream_url"] == svc["url"]
        # through the proxy, /admin is an unknown route of the serving port; no fault is set
        proxy = stack.proxy_url(name)
        fault = {"kind": "error", "status": 503}
        assert httpx.post(f"{proxy}/admin/faults", json=fault, timeout=5).status_code == 404
        assert httpx.get(f"{proxy}/admin/faults", timeout=5).status_code == 404
        assert httpx.get(f"{svc['admin_url']}/admin/faults", timeout=5).json()["faults"] == []
        response = httpx.post(f"{proxy}/v1/chat/completions", json=chat(f"sim-{name}"), timeout=10)
        assert response.status_code == 200


def test_a_killed_replica_restarts_after_its_delay_and_is_ready_again(stack):
    old = stack.kill("llm-2", signal.SIGKILL)
    new = stack.wait_ready("llm-2", timeout=20, not_pid=old)
    assert not process_alive(old)
    mine = [e for e in events(stack.events_path) if e["name"] == "llm-2"]
    exit_ = next(e for e in mine if e["kind"] == "exit" and e["detail"]["pid"] == old)
    assert exit_["source"] == "supervisor" and exit_["action"] == "instant"
    assert exit_["detail"]["signal"] == "SIGKILL"
    restart = next(e for e in mine if e["kind"] == "restart" and e["t"] > exit_["t"])
    assert restart["t"] - exit_["t"] >= 0.9  # restart_delay: 1
    ready = next(e for e in mine if e["kind"] == "ready" and e["detail"]["pid"] == new)
    assert ready["t"] > restart["t"]
    assert stack.status().services["llm-2"].restarts >= 1
    # the same port as before, so the proxy in front of it works again
    body = chat("sim-llm-2")
    response = httpx.post(f"{stack.proxy_url('llm-2')}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200


def test_an_engine_death_exit_code_1_is_recorded_and_restarted(stack):
    old = stack.pid("llm-1")
    fault = {"kind": "engine_death", "exit_after": 0.2}
    assert httpx.post(f"{stack.admin_url('llm-1')}/admin/faults", json=fault, timeout=5).is_success
    stack.wait_ready("llm-1", timeout=20, not_pid=old)
    exits = [e for e in events(stack.events_path) if e["kind"] == "exit" and e["name"] == "llm-1"]
    assert exits[-1]["detail"]["returncode"] == 1


def test_a_restarted_proxy_server_gets_its_proxies_back_on_the_same_addresses(stack):
    before = stack.proxy_url("llm-1")
    old = stack.kill("toxiproxy")
    stack.wait_ready("toxiproxy", timeout=20, not_pid=old)
    assert stack.proxy_url("llm-1") == before
    response = httpx.post(f"{before}/v1/chat/completions", json=chat("sim-llm-1"), timeout=10)
    assert response.status_code == 200


def test_down_leaves_no_process(stack):
    pids = state_pids(stack.run_dir, supervisor=False)  # the supervisor is this process
    assert len(pids) == 3
    stack.down()
    assert_all_gone(pids)
    kinds = [e["kind"] for e in events(stack.events_path)]
    assert (
        kinds[-1] == "stack"
        and json.loads((stack.run_dir / "stack.json").read_text())["status"] == "stopped"
    )


# --- the command line ------------------------------------------------------------------------


def fake_prometheus(bin_dir: Path) -> None:
    """A stand-in ``prometheus``: checks its flags and config, answers ``/-/ready``."""
    bin_dir.mkdir()
    script = bin_dir / "prometheus"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, yaml\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "args = dict(a[2:].split('=', 1) for a in sys.argv[1:])\n"
        "yaml.safe_load(open(args['config.file']))['scrape_configs']\n"
        "assert args['storage.tsdb.path']\n"
        "host, port = args['web.listen-address'].rsplit(':', 1)\n"
        "class Ready(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/-/ready' else 404)\n"
        "        self.end_headers()\n"
        "HTTPServer((host, int(port)), Ready).serve_forever()\n"
    )
    script.chmod(0o755)


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [AICHAOS, "stack", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_detached_up_then_status_and_down_from_other_processes(tmp_path):
    fake_prometheus(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    run_dir = tmp_path / "run"
    up = cli("up", "--topology", str(DATA / "small.yaml"), "--detach", "--run-dir", "run",
             cwd=tmp_path, env=env)  # fmt: skip
    pids = state_pids(run_dir) if (run_dir / "stack.json").exists() else []
    try:
        assert up.returncode == 0, up.stderr
        assert "ready" in up.stdout
        status = cli("status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["status"] == "ready" and state["supervisor"]["alive"]
        assert set(state["services"]) == {"toxiproxy", "llm", "prometheus"}
        assert all(s["alive"] for s in state["services"].values())
        admin = state["services"]["llm"]["admin_url"]
        assert f"llm: {admin}/admin/faults" in cli("status", cwd=tmp_path).stdout
        prom_url = state["prometheus"]["url"]
        assert httpx.get(f"{prom_url}/-/ready", timeout=5).status_code == 200
        config = yaml.safe_load((run_dir / "prometheus.yml").read_text())
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        llm_port = state["services"]["llm"]["port"]
        assert jobs["llm"]["static_configs"][0]["targets"] == [f"127.0.0.1:{llm_port}"]
        response = httpx.post(
            f"{state['proxies']['llm']['url']}/v1/chat/completions",
            json=chat("fixed-latency"),
            timeout=10,
        )
        assert response.status_code == 200

        down = cli("down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        assert_all_gone(pids)
        assert not (tmp_path / ".aichaos" / "stack.json").exists()
        assert cli("status", "--run-dir", "run", cwd=tmp_path).returncode == 3
    finally:
        kill_leftovers(pids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_foreground_up_stopped_by_a_signal_leaves_nothing(tmp_path, sig):
    run_dir = tmp_path / "run"
    with open(tmp_path / "out.log", "w") as out:
        proc = subprocess.Popen(
            [AICHAOS, "stack", "up", "-t", str(DATA / "one.yaml"), "--run-dir", str(run_dir)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    pids: list[tuple[int, int | None]] = []
    try:
        wait_for(
            lambda: (
                (run_dir / "stack.json").exists()
                and json.loads((run_dir / "stack.json").read_text())["status"] == "ready"
            ),
            30,
            "stack ready",
        )
        pids = state_pids(run_dir)
        assert pids[0][0] == proc.pid and len(pids) == 2
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert_all_gone(pids)
        assert f"stack stopped ({signal.Signals(sig).name})" in (tmp_path / "out.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        kill_leftovers(pids)


@pytest.mark.parametrize("detach", [False, True])
def test_a_service_never_ready_fails_with_exit_3_naming_it_with_its_log(tmp_path, detach):
    args = ["up", "-t", str(DATA / "never_ready.yaml"), "--run-dir", "run"]
    result = cli(*args, *(["--detach"] if detach else []), cwd=tmp_path)
    pids = state_pids(tmp_path / "run")
    try:
        assert result.returncode == 3
        first, *tail = result.stderr.strip().splitlines()
        assert "service 'slow' not ready after 2s" in first
        assert "logs/slow.log" in first
        assert any("slow start" in line for line in tail)  # the simulator's own log line
        assert_all_gone(pids)
        state = json.loads((tmp_path / "run" / "stack.json").read_text())
        assert state["status"] == "failed" and "slow" in state["error"]
    finally:
        kill_leftovers(pids)


def test_api_start_failure_raises_and_stops_what_started(tmp_path):
    with pytest.raises(StackStartError) as caught:
        Stack.up(DATA / "never_ready.yaml", tmp_path / "run", prometheus=False)
    assert caught.value.service == "slow"
    assert_all_gone(state_pids(tmp_path / "run", supervisor=False))
