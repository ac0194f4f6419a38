"""Every shipped local experiment run by ChaosRun against the embedded stack under light load:
its fault shows in the request records inside its window and is gone after it, and nothing is
left behind (toxic, disabled proxy, dead replica, simulator fault) — also after Ctrl-C in the
middle of a fault of ``aichaos chaos``. One stack for the module; windows of a few seconds."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos_load import LightLoad
from conftest import REPO, interrupt

from aichaos.experiments import catalog
from aichaos.experiments.actions import load as neighbour
from aichaos.experiments.probes import stack as stack_probes
from aichaos.experiments.proxies import ToxiproxyClient
from aichaos.experiments.runner import ChaosRun
from aichaos.experiments.safety import restore_all
from aichaos.harness.stack import Stack
from aichaos.rundir import read_events
from aichaos.waiting import wait_until

TOPOLOGY = REPO / "fixtures" / "topology" / "default.yaml"
SIMULATORS = ("llm-1", "llm-2", "fallback")
AICHAOS = Path(sys.executable).parent / "aichaos"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with Stack.up(TOPOLOGY, tmp_path_factory.mktemp("stack"), prometheus=False) as running:
        yield running


def config(stack: Stack, run_dir: Path) -> dict[str, Any]:
    return {
        "aichaos_run_dir": str(run_dir),
        "aichaos_stack_file": str(stack.run_dir / "stack.json"),
    }


def short(name: str, at: float = 2.5, duration: float = 3.0) -> dict[str, Any]:
    """A shipped experiment with its windows shrunk to seconds (opening late enough that a
    slow machine has answered a few requests before it, to compare with)."""
    experiment = copy.deepcopy(catalog.load_experiment(name))
    for activity in experiment["method"]:
        if "x-aichaos" in activity:
            activity["x-aichaos"].update(at=at, duration=duration)
    experiment["x-aichaos"] = {"settle": 0}
    return experiment


def sim_state(stack: Stack, name: str) -> dict[str, Any]:
    return httpx.get(f"{stack.admin_url(name)}/admin/faults", timeout=5).json()


def assert_clean(stack: Stack) -> None:
    """No toxic, no disabled proxy, no simulator fault, every replica ready in a live process."""
    proxies = ToxiproxyClient(stack.url("toxiproxy")).proxies()
    assert {name: p.enabled for name, p in proxies.items()} == dict.fromkeys(proxies, True)
    assert {name: list(p.toxics()) for name, p in proxies.items()} == {name: [] for name in proxies}
    for name in SIMULATORS:
        state = sim_state(stack, name)
        assert state["faults"] == [] and not state["engine"]["dead"], name
    for name in SIMULATORS:
        stack.wait_ready(name, timeout=30)
    assert not neighbour._RUNNING


def fresh_gateway(stack: Stack) -> None:
    """Breakers stay open for a minute after a provider fault: a new gateway starts closed."""
    old = stack.kill("gateway")
    stack.wait_ready("gateway", timeout=30, not_pid=old)


class Outcome:
    def __init__(self, run: ChaosRun, rows: list[dict[str, Any]], during: list[Any]):
        self.run, self.rows, self.during = run, rows, during
        self.window = run.windows()[0]

    def inside(self, margin_end: float = 0.0) -> list[dict[str, Any]]:
        start, end = self.window.start, self.window.end - margin_end
        return [r for r in self.rows if start <= r["t_sent"] <= end]

    def before(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["t_sent"] < self.window.start]

    def after(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["t_sent"] > self.window.end]


def run_experiment(
    stack: Stack,
    tmp_path: Path,
    experiment: dict[str, Any],
    watch=None,
    after: int = 3,
    **load_options: Any,
) -> Outcome:
    """Run under light load; ``watch()`` is sampled while a fault window is open."""
    run_dir = tmp_path / "run"
    during: list[Any] = []
    with LightLoad(stack.url("gateway"), run_dir, **load_options) as load:
        run = ChaosRun(experiment, run_dir, configuration=config(stack, run_dir), t0=time.time())
        run.start()
        for _ in range(600):
            status = run.wait(0.1)
            if status != "running":
                break
            windows = run.windows()
            if watch is not None and windows and windows[0].end is None:
                during.append(watch())
        # requests sent after the window, to show the fault is gone (at most 15 s)
        windows = run.windows()
        end = (windows[-1].end if windows else None) or time.time()
        for _ in range(150):
            if len([r for r in load.rows if r["t_sent"] > end]) >= after:
                break
            time.sleep(0.1)
    assert status in ("completed", "failed"), status
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["status"] == run.journal["status"]
    events, _ = read_events(run_dir)
    faults = [e for e in events if e["kind"] == "fault"]
    name = experiment["method"][0]["name"]
    assert [(e["name"], e["action"]) for e in faults] == [(name, "start"), (name, "end")]
    assert faults[0]["detail"]["experiment"] == experiment["title"]
    assert faults[0]["detail"]["arguments"] == experiment["method"][0]["provider"]["arguments"]
    assert any(e["kind"] == "rollback" for e in events)
    return Outcome(run, load.rows, during)


def ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def test_retrieval_latency(stack, tmp_path):
    outcome = run_experiment(stack, tmp_path, short("retrieval-latency"))
    # retrieval happens first: a request sent just before the end may retrieve after it
    inside = [r["ttft_s"] for r in ok(outcome.inside(margin_end=0.7))]
    before = [r["ttft_s"] for r in ok(outcome.before())]
    after = [r["ttft_s"] for r in ok(outcome.after())]
    assert inside and before and after
    assert min(inside) >= 0.4  # 500 ms ± 100 ms added to every retrieval
    assert statistics.median(before) < statistics.median(inside)
    assert statistics.median(after) < statistics.median(inside)
    assert_clean(stack)


def test_kv_exhaustion(stack, tmp_path):
    def blocks() -> int:
        return sim_state(stack, "llm-1")["engine"]["num_gpu_blocks"]

    normal = blocks()
    experiment = short("kv-exhaustion")
    # the shipped 64 blocks (1024 tokens) bite under game-day concurrency; this light load
    # needs a smaller pool to contend: 32 blocks hold one RAG prompt per replica
    experiment["method"][0]["provider"]["arguments"]["blocks"] = 32
    outcome = run_experiment(stack, tmp_path, experiment, watch=blocks, workers=4)
    assert 32 in outcome.during and normal > 32
    assert blocks() == normal
    # fewer sequences fit: requests running during the window (a closed loop sends few new
    # ones while they wait) are served slower than those that ended before it
    start, end = outcome.window.start, outcome.window.end
    done = ok(outcome.rows)
    during = [r["e2e_s"] for r in done if r["t_sent"] <= end and r["t_sent"] + r["e2e_s"] > start]
    before = [r["e2e_s"] for r in done if r["t_sent"] + r["e2e_s"] <= start]
    assert during and before
    assert statistics.median(during) > statistics.median(before)
    assert ok(outcome.after())
    assert_clean(stack)


def test_noisy_neighbour(stack, tmp_path):
    experiment = short("noisy-neighbour")
    experiment["method"][0]["provider"]["arguments"]["rate"] = 50.0
    outcome = run_experiment(stack, tmp_path, experiment)
    events, _ = read_events(tmp_path / "run")
    stopped = [e for e in events if e["kind"] == "rollback" and e["action"] == "end"]
    answers = stopped[0]["detail"]["output"]["free"]
    assert sum(answers.values()) >= 100 and answers.get("200", 0) > 0  # 50/s for 3 s
    # the neighbour's traffic shares the gateway, retriever and pool with the measured tier
    inside = [r["e2e_s"] for r in ok(outcome.inside())]
    before = [r["e2e_s"] for r in ok(outcome.before())]
    assert inside and before
    assert statistics.median(inside) > statistics.median(before)
    assert_clean(stack)


def test_provider_outage(stack, tmp_path):
    outcome = run_experiment(stack, tmp_path, short("provider-outage"))
    inside = ok(outcome.inside())
    assert inside and {r["served_by"] for r in inside} == {"fallback"}
    assert all(r["status"] == "ok" for r in outcome.after())
    assert_clean(stack)


def test_replica_kill(stack, tmp_path):
    fresh_gateway(stack)  # the outage before opened the pool's breakers
    restarts = stack.status().services["llm-1"].restarts
    outcome = run_experiment(stack, tmp_path, short("replica-kill"))
    killed = outcome.run.journal["run"][0]["output"][0]
    assert killed["signal"] == "SIGKILL" and killed["name"] in ("llm-1", "llm-2")
    survivor = {"llm-1": "llm-2", "llm-2": "llm-1"}[killed["name"]]
    served = {r["served_by"] for r in ok(outcome.inside())}
    assert served and served <= {survivor, "fallback"}  # the pool absorbed it
    after = stack.status().services[killed["name"]]
    assert after.pid != killed["pid"] and after.state == "ready"
    assert after.restarts >= 1 and (killed["name"] != "llm-1" or after.restarts > restarts)
    assert_clean(stack)


def test_mid_stream_failure(stack, tmp_path):
    fresh_gateway(stack)
    outcome = run_experiment(stack, tmp_path, short("mid-stream-failure"))
    broken = [r for r in outcome.inside() if r["error_kind"] == "stream_error"]
    assert broken and all(r["served_by"] in ("llm-1", "llm-2") for r in broken)
    assert outcome.after() and not [r for r in outcome.after() if r["status"] != "ok"]
    assert_clean(stack)


def test_slow_provider(stack, tmp_path):
    fresh_gateway(stack)
    configuration = config(stack, tmp_path / "run")

    def breakers() -> dict[str, str]:
        return stack_probes.breaker_states(configuration)

    experiment = short("slow-provider", duration=5)
    outcome = run_experiment(
        stack, tmp_path, experiment, watch=breakers, workers=4, deadline_ms=1000
    )
    inside = outcome.inside()
    # first the answers time out, then the breakers open and the fallback serves
    assert [r for r in inside if r["status"] == "error"]
    assert [r for r in inside if r["status"] == "ok" and r["served_by"] == "fallback"]
    assert any(b.get("llm-1") == "open" and b.get("llm-2") == "open" for b in outcome.during)
    direct = httpx.post(f"{stack.url('llm-1')}/v1/chat/completions", timeout=10, json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})  # fmt: skip
    assert direct.status_code == 200  # the replica answers at once again
    assert_clean(stack)


def action(name, module, func, rollback, at, **arguments):
    provider = {"type": "python", "module": module, "func": func, "arguments": arguments}
    schedule = {"at": at, "rollback": rollback}
    return {"type": "action", "name": name, "provider": provider, "x-aichaos": schedule}


def undo(name, module, func, **arguments):
    provider = {"type": "python", "module": module, "func": func, "arguments": arguments}
    return {"type": "action", "name": name, "provider": provider}


def test_engine_death_then_slow_start(stack, tmp_path):
    replicas = "aichaos.experiments.actions.replicas"
    old_pid = stack.pid("llm-2")
    death = action("llm-1-engine-dead", replicas, "engine_death", "llm-1-revived", 1,
                   service="llm-1", stay=True)  # fmt: skip
    death["x-aichaos"]["duration"] = 2
    slow = action("llm-2-slow-start", replicas, "slow_start", "llm-2-loaded", 0, service="llm-2")
    slow["x-aichaos"]["duration"] = 2
    experiment = {
        "title": "engine faults",
        "description": "the engine of llm-1 dies, then llm-2 restarts slowly",
        "method": [death, slow],
        "rollbacks": [
            undo("llm-1-revived", replicas, "revive_replicas", service="llm-1", timeout_s=30),
            undo("llm-2-loaded", replicas, "finish_slow_start", service="llm-2", timeout_s=30),
        ],
    }
    run_dir = tmp_path / "run"
    with LightLoad(stack.url("gateway"), run_dir) as load:
        run = ChaosRun(experiment, run_dir, configuration=config(stack, run_dir), t0=time.time())
        run.start()
        assert run.wait(60) == "completed"
        time.sleep(1.0)
    first, second = run.windows()
    assert first.end <= second.start  # the method's windows come one after the other
    served = {name: {r["served_by"] for r in ok(load.rows) if w.start <= r["t_sent"] <= w.end}
              for name, w in (("death", first), ("slow", second))}  # fmt: skip
    assert served["death"] and "llm-1" not in served["death"]
    assert served["slow"] and "llm-2" not in served["slow"]
    assert stack.pid("llm-2") != old_pid  # killed, then back once its edge opened
    assert_clean(stack)


def test_stop_before_the_fault_runs_the_rollbacks_only(stack, tmp_path):
    experiment = short("provider-outage", at=30)
    run = ChaosRun(experiment, tmp_path, configuration=config(stack, tmp_path), t0=time.time())
    run.start()
    time.sleep(0.5)
    run.stop()
    assert run.wait(30) == "interrupted"
    assert run.windows() == []
    events, _ = read_events(tmp_path)
    assert not [e for e in events if e["kind"] == "fault"]
    assert [e["action"] for e in events if e["kind"] == "rollback"] == ["start", "end"]
    assert_clean(stack)


def test_restore_all_undoes_every_fault_kind(stack, tmp_path):
    proxies = ToxiproxyClient(stack.url("toxiproxy"))
    proxies.add_toxic("retriever", "latency", attributes={"latency": 100})
    proxies.disable("llm-2")
    fault = {"kind": "error", "status": 529}
    httpx.post(f"{stack.admin_url('fallback')}/admin/faults", json=fault, timeout=5)
    notes = restore_all(config(stack, tmp_path))
    assert any("proxies reset" in n for n in notes)
    assert "fallback: 1 fault(s) cleared" in notes
    assert_clean(stack)


def test_ctrl_c_in_the_middle_of_faults_leaves_nothing_behind(stack, tmp_path):
    actions = "aichaos.experiments.actions."
    net, sim, rep = (actions + m for m in ("network", "provider", "replicas"))
    act = action

    experiment = {
        "title": "everything at once",
        "description": "a toxic, an outage, a provider fault and a replica kill, then Ctrl-C",
        "method": [
            act("slow-retrieval", net, "add_latency", "no-toxics", 0.5, proxy="retriever"),
            act("fallback-529", sim, "error_storm", "no-faults", 0.5, services="fallback"),
            act("llm-2-killed", rep, "kill_replica", "llm-back", 0.5, service="llm-2"),
            act("llm-1-down", net, "disable_proxies", "llm-1-up", 0.5, proxies=["llm-1"]),
        ],
        "rollbacks": [
            undo("no-toxics", net, "remove_toxics", proxies=["retriever"]),
            undo("no-faults", sim, "clear_faults", services="fallback"),
            undo("llm-back", rep, "wait_replicas_ready", service="llm", timeout_s=30),
            undo("llm-1-up", net, "enable_proxies", proxies=["llm-1"]),
        ],
    }
    experiment["method"][-1]["x-aichaos"]["duration"] = 60  # Ctrl-C comes inside this window
    path = tmp_path / "everything.json"
    path.write_text(json.dumps(experiment))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(AICHAOS), "chaos", str(path), "--run-dir", str(stack.run_dir), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def faults_on() -> bool:  # all four faults on, or the command ended
        events, _ = read_events(out) if (out / "events.jsonl").exists() else ([], [])
        return len([e for e in events if e["kind"] == "fault"]) >= 4 or proc.poll() is not None

    wait_until(faults_on, 30, 0.1)
    mid_fault = not ToxiproxyClient(stack.url("toxiproxy")).proxy("llm-1").enabled
    output = interrupt(proc)
    assert mid_fault
    assert proc.returncode == 3, output  # interrupted: not completed, as for run and load
    assert "interrupted" in output and "Traceback" not in output
    journal = json.loads((out / "journal.json").read_text())
    assert journal["status"] == "interrupted"
    manifest = json.loads((out / "run.json").read_text())  # the one run lifecycle's manifest
    assert manifest["kind"] == "chaos" and manifest["status"] == "aborted", manifest
    assert manifest["ended_at"] >= manifest["started_at"]
    assert manifest["experiment"]["title"] == "everything at once"
    events, _ = read_events(out)
    ends = {e["name"] for e in events if e["kind"] == "fault" and e["action"] == "end"}
    assert ends == {"slow-retrieval", "fallback-529", "llm-2-killed", "llm-1-down"}
    assert_clean(stack)
