"""Nothing outlives its owner: `kill -9` of `aichaos run` in its fault window, and stacks whose
owner (and owner watch) were killed, as a user meets them — real processes, the real CLI.

Every process started here is found by psutil (PID + start time) and, should a test fail,
stopped by PID.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import REPO, free_port, wait_for

from aichaos.processes import ProcessRef

AICHAOS = str(Path(sys.executable).parent / "aichaos")
LIBRARY = REPO / "experiments" / "library"
SMALL_TOPOLOGY = REPO / "tests" / "data" / "topology" / "small.yaml"
FAULTS = ("primary-pool-down", "fallback-errors")
CLEAN_UP_S = 15.0  # the bound: the run's processes gone and its faults undone

SCENARIO = """\
name: owner-death
duration: 90s
warmup: 1s
seed: 5
target: {path: /v1/chat/completions, stream: true}
arrival: {process: poisson}
rate: {shape: constant, rps: 2}
workload:
  prompt_tokens: {dist: uniform, low: 20, high: 60}
  output_tokens: {dist: fixed, value: 8}
"""


def outage_with_a_simulator_fault() -> dict:
    """provider-outage (both LLM proxies disabled) opened at 3 s for 80 s, after a simulator
    fault on the fallback provider that stays until the end (no duration: method actions run
    in turn, and only one without a duration lets the next start at once), so a kill in the
    window leaves both kinds of fault set."""
    experiment = json.loads((LIBRARY / "provider-outage.json").read_text())
    outage = experiment["method"][0]
    outage["x-aichaos"] = {"at": 3, "duration": 80, "rollback": "primary-pool-up"}
    storm = {
        "type": "action",
        "name": "fallback-errors",
        "provider": {
            "type": "python",
            "module": "aichaos.experiments.actions.provider",
            "func": "inject_llm_fault",  # the simulator's own fault API, not a proxy's toxic
            "arguments": {
                "services": "fallback",
                "fault": {"kind": "error", "status": 503, "rate": 0.2},
            },
        },
        "x-aichaos": {"at": 3, "rollback": "fallback-clear"},
    }
    clear = {
        "type": "action",
        "name": "fallback-clear",
        "provider": {
            "type": "python",
            "module": "aichaos.experiments.actions.provider",
            "func": "clear_faults",
            "arguments": {"services": "fallback"},
        },
    }
    experiment["method"].insert(0, storm)
    experiment["rollbacks"].append(clear)
    return experiment


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([AICHAOS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def fault_window_open(out: Path, proc: subprocess.Popen) -> Path | None:
    assert proc.poll() is None, "aichaos run ended before its fault window"
    for path in out.glob("*/events.jsonl"):
        kinds = {(e["kind"], e["action"], e["name"]) for e in events(path.parent)}
        if {
            ("fault", "start", "primary-pool-down"),
            ("fault", "start", "fallback-errors"),
        } <= kinds:
            return path.parent
    return None


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    return ports


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Still running (``is_running`` compares the start time, so a reused PID is not ours)."""
    running = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(p)
        except psutil.NoSuchProcess:
            continue
    return running


def listeners(ports: set[int]) -> set[int]:
    conns = psutil.net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN} & ports


def stop(procs: list[psutil.Process]) -> None:
    """Only for a failed test: stop what it started, by PID."""
    for p in alive(procs):
        p.kill()


# --- kill -9 of aichaos run in its fault window -------------------------------------------------


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """An `aichaos run` killed with SIGKILL two seconds into its fault window."""
    tmp = tmp_path_factory.mktemp("owner-death")
    (tmp / "scenario.yaml").write_text(SCENARIO)
    (tmp / "experiment.json").write_text(json.dumps(outage_with_a_simulator_fault()))
    out = tmp / "runs"
    proc = subprocess.Popen(
        [AICHAOS, "run", "--scenario", "scenario.yaml", "--experiment", "experiment.json",
         "--slo", "default", "--ci", "--out", str(out)],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    owner = psutil.Process(proc.pid)
    seen: list[psutil.Process] = []
    try:
        run_dir = wait_for(lambda: fault_window_open(out, proc), 180, "the fault window opens")
        time.sleep(2)
        seen = owner.children(recursive=True)
        state = json.loads((run_dir / "stack.json").read_text())
        before = fault_state(state)
        ports = listening_ports(seen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: not alive(seen) and not listeners(ports), CLEAN_UP_S + 5,
                 "every process of the run gone")  # fmt: skip
        cleaned_in = time.monotonic() - killed_at
        yield {"run_dir": run_dir, "seen": seen, "ports": ports, "before": before,
               "state": state, "cleaned_in": cleaned_in, "tmp": tmp}  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
        stop(seen)


def fault_state(state: dict) -> dict:
    """What the proxy server and the fallback simulator say is injected right now."""
    proxy_url = next(s["url"] for s in state["services"].values() if s["kind"] == "proxy")
    proxies = httpx.get(f"{proxy_url}/proxies", timeout=5).json()
    fallback = next(s for s in state["services"].values() if s["kind"] == "fallback")
    faults = httpx.get(f"{fallback['admin_url']}/admin/faults", timeout=5).json()
    return {"proxies": proxies, "faults": faults}


def test_the_kill_happened_with_the_faults_in_place(killed_run):
    before = killed_run["before"]
    assert before["proxies"]["llm-1"]["enabled"] is False
    assert before["proxies"]["llm-2"]["enabled"] is False
    assert before["faults"], "the fallback simulator had no fault set"
    assert len(killed_run["seen"]) >= 6, killed_run["seen"]  # services, owner watch, Locust


def test_no_process_of_the_run_outlives_it(killed_run):
    assert killed_run["cleaned_in"] <= CLEAN_UP_S
    assert not alive(killed_run["seen"])
    assert not listeners(killed_run["ports"])


def test_every_fault_was_rolled_back_before_the_services_stopped(killed_run):
    run_dir, state = killed_run["run_dir"], killed_run["state"]
    timeline = events(run_dir)
    watch = [e for e in timeline if e["source"] == "owner-watch"]
    kinds = [(e["kind"], e["action"]) for e in watch]
    assert kinds[0] == ("owner_gone", "start") and kinds[-1] == ("owner_gone", "end"), kinds
    rollback = next(e for e in watch if e["kind"] == "rollback")
    notes = rollback["detail"]["notes"]
    proxy_url = next(s["url"] for s in state["services"].values() if s["kind"] == "proxy")
    assert f"proxies reset at {proxy_url}" in notes, notes
    fallback = next(n for n, s in state["services"].items() if s["kind"] == "fallback")
    cleared = [n for n in notes if n.startswith(f"{fallback}:")]
    assert cleared and "not cleared" not in cleared[0]
    # the experiment's process saw its owner go (its standard input ended) and ran its own
    # rollbacks; the watch clears whatever they had not undone yet
    undone = [e for e in timeline if e["source"] == "experiments" and e["kind"] == "rollback"
              and e["name"] == "fallback-clear" and e["action"] == "end"]  # fmt: skip
    by_experiment = [e for e in undone if e["detail"].get("status") == "succeeded"]
    assert by_experiment or "1 fault(s) cleared" in cleared[0], (undone, cleared)
    stops = [e for e in watch if e["kind"] == "stop"]
    assert {e["name"] for e in stops} == set(state["services"])
    rollbacks = [rollback, *by_experiment]
    assert all(r["t"] < e["t"] for e in stops for r in rollbacks), "a service stopped first"


def test_the_experiment_rolled_itself_back_when_its_owner_died(killed_run):
    timeline = events(killed_run["run_dir"])
    ended = [e for e in timeline if e["kind"] == "experiment" and e["action"] == "end"]
    assert ended and ended[-1]["detail"]["status"] == "interrupted", ended
    faults = [e for e in timeline if e["kind"] == "fault"]
    assert {e["name"] for e in faults if e["action"] == "start"} == {
        e["name"] for e in faults if e["action"] == "end"
    }, "a fault window never closed"


def test_the_run_and_its_stack_say_crashed(killed_run):
    run_dir = killed_run["run_dir"]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "crashed" and manifest["ended_at"]
    assert str(killed_run["state"]["supervisor"]["pid"]) in manifest["problem"]
    assert json.loads((run_dir / "stack.json").read_text())["status"] == "crashed"
    result = cli("report", str(run_dir), cwd=killed_run["tmp"])
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "crashed"
    assert "crashed" in (run_dir / "report.html").read_text().lower()


def test_a_report_of_a_run_still_marked_running_whose_owner_is_gone_says_crashed(killed_run):
    """As if the owner watch had died with the owner: run.json still says running."""
    run_dir = killed_run["run_dir"]
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest.update(status="running", ended_at=None, problem=None)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    result = cli("report", str(run_dir), "--format", "json,md", cwd=killed_run["tmp"])
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "crashed"
    summary = (run_dir / "summary.md").read_text().lower()
    assert "crashed" in summary and "running" not in summary


# --- a stack whose owner and owner watch were both killed ------------------------------------


@pytest.fixture
def orphaned_stack(tmp_path):
    """`aichaos stack up --detach` in ``tmp_path``, then its owner watch and its supervisor
    killed with SIGKILL: the services keep running with nobody to stop them."""
    up = cli("stack", "up", "--topology", str(SMALL_TOPOLOGY), "--detach", "--no-prometheus",
             cwd=tmp_path)  # fmt: skip
    assert up.returncode == 0, up.stderr
    run_dir = Path(json.loads((tmp_path / ".aichaos" / "stack.json").read_text())["run_dir"])
    state = json.loads((run_dir / "stack.json").read_text())
    services = [psutil.Process(s["pid"]) for s in state["services"].values()]
    owners = [psutil.Process(state[role]["pid"]) for role in ("watchdog", "supervisor")]
    for p in owners:
        p.kill()
    wait_for(lambda: not alive(owners), 10, "the supervisor and its owner watch gone")
    assert len(alive(services)) == len(services)
    try:
        yield run_dir, services
    finally:
        stop(services)


def test_stack_status_reports_a_stack_left_by_a_dead_owner(orphaned_stack, tmp_path):
    run_dir, _ = orphaned_stack
    shown = cli("stack", "status", cwd=tmp_path)
    assert shown.returncode == 3
    assert "orphaned" in shown.stdout and f"aichaos stack down --run-dir {run_dir}" in shown.stdout
    (tmp_path / ".aichaos" / "stack.json").unlink()  # no pointer: found among the run dirs
    shown = cli("stack", "status", cwd=tmp_path)
    assert shown.returncode == 3
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 1 and "dead owner" in lines[0], shown.stdout
    assert f"aichaos stack down --run-dir {run_dir}" in lines[0]


@pytest.mark.parametrize("command", ["stack up", "run"])
def test_the_next_command_stops_a_stack_left_by_a_dead_owner_and_says_so(
    orphaned_stack, tmp_path, command
):
    run_dir, services = orphaned_stack
    if command == "run":  # an unreachable target: it stops at once, after the clean-up
        args = ["run", "--target", f"http://127.0.0.1:{free_port()}", "--quick",
                "--out", str(tmp_path / "runs")]  # fmt: skip
    else:
        args = ["stack", "up", "--topology", str(SMALL_TOPOLOGY), "--detach", "--no-prometheus"]
    result = cli(*args, cwd=tmp_path)
    try:
        said = [line for line in result.stderr.splitlines() if "dead owner" in line]
        assert len(said) == 1 and str(run_dir) in said[0] and "stopped" in said[0], result.stderr
        assert not alive(services)
        assert json.loads((run_dir / "stack.json").read_text())["status"] == "crashed"
        assert any(e["kind"] == "owner_gone" for e in events(run_dir))
    finally:
        if command == "stack up":
            assert cli("stack", "down", cwd=tmp_path).returncode == 0


def planted_stack(run_dir: Path, victim: subprocess.Popen) -> None:
    """A stack.json nobody's supervisor wrote: a dead owner, and a 'service' that is really
    another process group leader of this user (as root: of anybody)."""
    run_dir.mkdir(parents=True)
    ref = ProcessRef.of(victim.pid)
    state = {
        "status": "running",
        "supervisor": {"pid": victim.pid, "start_time": ref.start_time + 1},  # long gone
        "services": {"gateway": {"pid": ref.pid, "start_time": ref.start_time,
                                 "kind": "gateway", "url": f"http://127.0.0.1:{free_port()}"}},
        "proxies": {},
    }  # fmt: skip
    (run_dir / "stack.json").write_text(json.dumps(state))


@pytest.mark.parametrize("mode", [0o644, 0o666])
def test_a_planted_state_file_never_gets_a_process_killed(tmp_path, mode):
    """Our own file (0644) whose 'service' lacks the stack's marker, or a file anybody may
    write (0666, not read at all): the next `aichaos run`'s orphan removal leaves the process
    alone, saying so in one line for the first."""
    victim = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        planted_stack(tmp_path / "runs" / "planted", victim)
        (tmp_path / "runs" / "planted" / "stack.json").chmod(mode)
        result = cli("run", "--target", f"http://127.0.0.1:{free_port()}", "--quick",
                     "--out", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert victim.poll() is None, "a process named by a planted stack.json was killed"
        said = [line for line in result.stderr.splitlines() if "left alone" in line]
        assert len(said) == (1 if mode == 0o644 else 0), result.stderr
    finally:
        victim.kill()
        victim.wait(timeout=10)


def disabled_proxies(api_url: str) -> set[str]:
    """What toxiproxy-python reads from the stack's proxy server: the proxies turned off."""
    from toxiproxy import Toxiproxy

    server = Toxiproxy()
    host, port = api_url.removeprefix("http://").rsplit(":", 1)
    server.update_api_consumer(host, int(port))
    return {name for name, proxy in server.proxies().items() if not proxy.enabled}


def test_kill_9_of_aichaos_chaos_in_its_fault_window_restores_the_faults(tmp_path):
    """`aichaos chaos` against a detached stack, whose owner (`stack up`) stays alive: when
    the chaos process is killed with its fault in place, its own watch restores the proxies
    within the bound, and the stack keeps serving."""
    up = cli("stack", "up", "--detach", "--no-prometheus", cwd=tmp_path, timeout=240)
    assert up.returncode == 0, up.stderr
    experiment = json.loads((LIBRARY / "provider-outage.json").read_text())
    experiment["method"][0]["x-aichaos"] = {"at": 1, "duration": 120, "rollback": "primary-pool-up"}
    path = tmp_path / "outage.json"
    path.write_text(json.dumps(experiment))
    out = tmp_path / "chaos"
    run_dir = Path(json.loads((tmp_path / ".aichaos" / "stack.json").read_text())["run_dir"])
    state = json.loads((run_dir / "stack.json").read_text())
    (api,) = [s["url"] for s in state["services"].values() if s["kind"] == "proxy"]
    proc = subprocess.Popen([AICHAOS, "chaos", str(path), "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        opened = ("fault", "start", "primary-pool-down")

        def window_open() -> bool:
            assert proc.poll() is None, "aichaos chaos ended before its fault window"
            if not (out / "events.jsonl").exists():
                return False
            return opened in {(e["kind"], e["action"], e["name"]) for e in events(out)}

        wait_for(window_open, 120, "the fault window opens")
        disabled = wait_for(lambda: disabled_proxies(api), 10, "a proxy disabled")
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not disabled_proxies(api), CLEAN_UP_S, f"{disabled} enabled again")
        assert cli("stack", "status", cwd=tmp_path).returncode == 0  # the stack still runs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert cli("stack", "down", cwd=tmp_path).returncode == 0
