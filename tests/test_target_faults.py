"""``aichaos run --target URL --experiment E`` against a server aichaos did not start: a
local fault proxy goes in front of it, the load goes through the proxy, the library's LLM
experiments act there; experiments that need an instance aichaos runs are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
AICHAOS = [str(Path(sys.executable).with_name("aichaos"))]
LIBRARY = REPO / "experiments" / "library"
SCENARIO = """
name: storm-light
duration: 14s
warmup: 1s
seed: 3
target: {path: /v1/chat/completions, stream: true}
arrival: {process: poisson}
rate: {shape: constant, rps: 6}
workload:
  prompt_tokens: {dist: uniform, low: 20, high: 60}
  output_tokens: {dist: fixed, value: 8}
"""
FAULT_AT, FAULT_FOR = 4.0, 5.0


def aichaos(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*AICHAOS, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=os.environ.copy())  # fmt: skip


@pytest.fixture(scope="module")
def sim(module_sims):
    return module_sims("--profile", "fixed-latency")


def storm(tmp_path: Path) -> Path:
    """The library's rate-limit storm, on every request, for a few seconds of a short run."""
    experiment = json.loads((LIBRARY / "rate-limit-storm.json").read_text())
    action = experiment["method"][0]
    action["provider"]["arguments"]["rate"] = 1.0
    action["x-aichaos"].update({"at": FAULT_AT, "duration": FAULT_FOR})
    path = tmp_path / "storm.json"
    path.write_text(json.dumps(experiment))
    return path


def test_a_rate_limit_storm_in_front_of_a_server_aichaos_did_not_start(sim, tmp_path):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "runs"
    done = aichaos("run", "--target", sim.url, "--scenario", str(scenario), "--slo", "default",
                   "--experiment", str(storm(tmp_path)), "--out", str(out), "--ci")  # fmt: skip
    # the verdict may fail or be undecided; the run completed
    assert done.returncode in (0, 1, 4), done.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["target"] == sim.url
    proxy_url = manifest["fault_proxy"]["url"]
    assert manifest["fault_proxy"]["upstream"] == sim.url and proxy_url != sim.url
    assert "Fault proxy" in (run_dir / "report.html").read_text()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    window = [e for e in events if e["kind"] == "fault"]
    start = next(e["t"] for e in window if e["action"] == "start")
    end = next(e["t"] for e in window if e["action"] == "end")
    rows = pq.read_table(run_dir / "requests").to_pandas()
    limited = rows[rows.http_status == 429]
    assert len(limited) >= 10, rows.http_status.value_counts()
    slack = 0.5  # the toxic is added and removed around the events' timestamps
    assert limited.t_sent.between(start - slack, end + slack).all()
    outside = rows[(rows.t_sent < start - slack) | (rows.t_sent > end + slack)]
    assert len(outside) >= 20 and (outside.status == "ok").all()
    # the proxy is gone with the run; the server aichaos did not start is not
    port = int(proxy_url.rsplit(":", 1)[1].split("/")[0])
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
    assert port not in listening
    assert httpx.get(f"{sim.url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("experiment", ["replica-kill", "kv-exhaustion"])
def test_an_experiment_needing_an_instance_aichaos_runs_is_refused(sim, tmp_path, experiment):
    done = aichaos("run", "--target", sim.url, "--experiment", experiment, "--quick",
                   "--out", str(tmp_path), timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "acts through a proxy" in lines[0], done.stderr
    assert not list(tmp_path.iterdir())  # nothing started, no run directory
