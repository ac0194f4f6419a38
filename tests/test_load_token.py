"""Distributed load with a token: only workers holding the run's token get the scenario and
have their rows recorded; the load processes do not outlive the process that owns the run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, wait_for

from aichaos.load_health import read_load_health
from aichaos.reports.rundata import load_run
from aichaos.rundir import read_events, read_requests
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.spec import Scenario
from aichaos.scenarios.worker_gate import TOKEN_ENV

AICHAOS = str(Path(sys.executable).with_name("aichaos"))


def scenario(duration: float = 3.0) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "t",
            "duration": duration,
            "seed": 3,
            "rate": {"shape": "constant", "rps": 6},
            "tiers": [{"name": "free", "share": 1, "headers": {"X-Api-Key": "secret-key"}}],
            "workload": {"prompt_tokens": 16, "output_tokens": 5},
        }
    )


@pytest.fixture(scope="module")
def sim(module_sims):
    return module_sims("--profile", "fixed-latency")


def env_with(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def worker_cmd(port: int) -> list[str]:
    return [AICHAOS, "worker", "--master", "127.0.0.1", "--master-port", str(port)]


def test_a_worker_without_the_token_is_refused_and_its_rows_are_dropped(sim, tmp_path):
    s = scenario()
    runner = LoadRunner(s, sim.url, tmp_path, workers=1, remote_workers=1)
    # far enough ahead for the strangers to be turned away before the legitimate worker joins
    runner.start(t0=time.time() + 15)
    port = runner.master_port
    try:
        rogue_out = tmp_path / "rogue.json"
        rogue = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "rogue_worker.py"), "127.0.0.1", str(port),
             str(rogue_out)], env=env_with(None), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)  # fmt: skip
        wrong = subprocess.run(worker_cmd(port), env=env_with("not-the-token-of-this-run"),
                               capture_output=True, text=True, timeout=40)  # fmt: skip
        rogue_log = rogue.communicate(timeout=40)[0]
        # the right token: this one gets a share and contributes rows
        right = subprocess.Popen(worker_cmd(port), env=env_with(runner.token), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        assert runner.wait(timeout=60, kill=True) == 0, runner.log_tail()
        right_log = right.communicate(timeout=30)[0]
    finally:
        runner.stop()
    assert wrong.returncode == 2, wrong.stderr
    assert "refused this worker: wrong token" in wrong.stderr
    assert right.returncode == 0, right_log
    # the rogue never saw the scenario nor was given a user, and was sent away
    assert rogue_out.exists(), rogue_log
    seen = json.loads(rogue_out.read_text())
    kinds = {m["type"] for m in seen["received"]}
    assert "aichaos_refused" in kinds and "aichaos_assign" not in kinds, (seen, rogue_log)
    assert seen["most_users"] == 0 and seen["quit_by_master"]
    # every scheduled request is recorded once, by the two workers holding the token; none of
    # the rogue's rows (which claimed to come from load-w0)
    df = read_requests(tmp_path)[0].to_pandas()
    assert len(df) == len(build_schedule(s)) and df.request_id.is_unique
    assert not df.request_id.str.startswith("rogue").any()
    assert set(df.worker) == {"load-w0", "load-w1"} and (df.status == "ok").all()
    # counted in the load health file, on the timeline, and in the report's notes
    health = read_load_health(tmp_path)
    assert health.refused_workers == 2 and health.dropped_rows >= 3
    assert {r.why for r in health.refused} <= {
        "wrong token", "sent request rows without the run's token"}  # fmt: skip
    events, _ = read_events(tmp_path)
    assert sum(e["name"] == "worker_refused" for e in events if e["source"] == "load") == 2
    notes = load_run(tmp_path).notes  # what the report's data notes list
    assert any("2 worker connection(s) refused" in n for n in notes), notes
    # the token never reaches a log, and the config holding it is private to this user
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "load").glob("*.log"))
    assert runner.token not in logs + right_log
    assert (tmp_path / "load" / "load.config.json").stat().st_mode & 0o077 == 0


def trusted_ids(run_dir: Path) -> list[str]:
    """The Locust client ids of the workers that joined, as the master logs them."""
    log = (run_dir / "load" / "load.log").read_text(errors="replace")
    return re.findall(r"(\S+) \(index \d+\) reported as ready", log)


def test_a_stranger_claiming_a_trusted_workers_id_is_refused_and_its_rows_dropped(sim, tmp_path):
    s = scenario(duration=6.0)
    runner = LoadRunner(s, sim.url, tmp_path, workers=2)
    runner.start(t0=time.time() + 10)
    try:
        # both workers proved the token and hold a share (the master reports ready after that)
        assert runner.wait_ready(timeout=40), runner.log_tail()
        claimed = wait_for(lambda: trusted_ids(tmp_path), 10, "the workers' ids in the log")[0]
        # a stranger that read the log names that worker as the sender of all it sends:
        # request rows, "done", a hello and a made-up proof
        rogue_out = tmp_path / "rogue.json"
        rogue = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "rogue_worker.py"), "127.0.0.1",
             str(runner.master_port), str(rogue_out), claimed], env=env_with(None), cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        rogue_log = rogue.communicate(timeout=40)[0]
        assert runner.wait(timeout=60, kill=True) == 0, runner.log_tail()
    finally:
        runner.stop()
    seen = json.loads(rogue_out.read_text()) if rogue_out.exists() else None
    assert seen is not None, rogue_log
    kinds = {m["type"] for m in seen["received"]}
    assert "aichaos_refused" in kinds and "aichaos_assign" not in kinds, (seen, rogue_log)
    assert seen["quit_by_master"], seen
    # the run went on to its end (the rogue's "done" did not stop it) with the real workers'
    # rows only, and the worker it impersonated was not refused
    df = read_requests(tmp_path)[0].to_pandas()
    assert not df.request_id.str.startswith("rogue").any()
    assert len(df) == len(build_schedule(s)) and df.request_id.is_unique
    assert set(df.worker) == {"load-w0", "load-w1"} and (df.status == "ok").all()
    health = read_load_health(tmp_path)
    assert health.refused_workers == 1 and health.dropped_rows >= 3
    assert claimed[:80] not in {r.client for r in health.refused}


def test_a_master_beyond_loopback_needs_a_token(sim, tmp_path):
    # the Locust process itself refuses before it binds anything
    cfg = {"runner_id": "load", "run_dir": str(tmp_path), "target_url": sim.url,
           "scenario": scenario().to_dict(), "t0": time.time() + 5, "workers": 2,
           "master": True, "master_bind": "0.0.0.0", "master_port": 5557}  # fmt: skip
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "aichaos.scenarios.locust_proc", "run",
                           str(config)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "token is required" in proc.stderr
    assert not (tmp_path / "load").exists()
    # 'aichaos load' refuses a token too short to be a secret, before starting anything
    out = tmp_path / "run"
    cmd = [AICHAOS, "load", "steady", "--target", sim.url, "--workers", "2",
           "--master-bind", "0.0.0.0", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env_with("short"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert TOKEN_ENV in proc.stderr and not out.exists()
    # and a worker needs one
    proc = subprocess.run(worker_cmd(5557), env=env_with(None), capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "token" in proc.stderr


def test_killing_the_owner_stops_every_load_process(sim, tmp_path):
    out = tmp_path / "run"
    owner = subprocess.Popen(
        [AICHAOS, "load", "steady", "--target", sim.url, "--duration", "120", "--workers", "2",
         "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((out / "requests").glob("*.parquet")):
            assert owner.poll() is None, "the load ended before it was killed"
            time.sleep(0.2)
        children = psutil.Process(owner.pid).children(recursive=True)
        assert len(children) == 3  # the Locust master and two local workers
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
    finally:  # whatever this test started and is still running
        for proc in [psutil.Process(owner.pid), *children] if owner.poll() is None else children:
            if proc.is_running():
                proc.kill()
    # what they had recorded was flushed on the way out
    progress = json.loads((out / "load" / "load.progress.json").read_text())
    assert progress["finished"]
    df = read_requests(out)[0].to_pandas()
    assert len(df) > 0 and set(df.worker) == {"load-w0", "load-w1"}
