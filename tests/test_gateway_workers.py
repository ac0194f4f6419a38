"""The gateway with ``--workers 2``: two processes on one port, as a client sees them.

Every request goes on a new connection (httpx.post without a client), so the kernel's
SO_REUSEPORT hash spreads them over both workers; limits and shedding must hold across the
workers, and /metrics must show both workers' counts whichever worker answers it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import ServiceProcess, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_gateway import GATEWAY, ask, write_config


def gateway(start_sim, tmp_path, config: str, *llm: str) -> ServiceProcess:
    cfg = write_config(tmp_path, config)
    fb = start_sim("--profile", "hosted-api")
    gw = start_sim.service(GATEWAY, *llm, "--fallback", fb.url, "--config", cfg, "--workers", "2")
    workers = psutil.Process(gw.proc.pid).children()
    assert len(workers) == 2
    deadline = time.monotonic() + 20  # the gateway is ready once one worker listens: wait for both
    while not all(listening(w, gw.port) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(listening(w, gw.port) for w in workers)
    return gw


def listening(worker: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in worker.net_connections("tcp"))  # fmt: skip


def samples(url: str, name: str) -> list:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_a_tier_limit_holds_across_workers_and_metrics_add_up(start_sim, tmp_path):
    sim = start_sim("--seed", "1")
    gw = gateway(start_sim, tmp_path, "rate_limits_per_min: {free: 10}\n", "--llm", f"r1={sim.url}")
    codes = [ask(gw.url, f"q{i}", tier="free").status_code for i in range(20)]
    assert sorted(codes) == [200] * 10 + [429] * 10 and codes[:10] == [200] * 10
    for _ in range(5):  # whichever worker answers the scrape
        refused = [s.value for s in samples(gw.url, "gateway_requests_total")
                   if s.labels == {"tier": "free", "status": "429", "served_by": "gateway"}
                   ]  # fmt: skip
        assert refused == [10]
        breaker = [s for s in samples(gw.url, "gateway_breaker_state")
                   if s.labels["dependency"] == "r1"]  # fmt: skip
        assert len(breaker) == 1 and breaker[0].value == 0


def test_shedding_counts_the_streams_of_every_worker(start_sim, tmp_path):
    slow = start_sim("--profile", "fixed-latency")
    gw = gateway(start_sim, tmp_path, "shed_in_flight: {free: 2, pro: 50, enterprise: 50}\n",
                 "--llm", f"r1={slow.url}")  # fmt: skip
    holders = [threading.Thread(target=ask, args=(gw.url, f"long {i}", "pro", 150))
               for i in range(2)]  # fmt: skip
    for holder in holders:
        holder.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = sum(s.value for s in samples(gw.url, "gateway_in_flight"))
        if held == 2:
            break
        time.sleep(0.05)
    assert held == 2  # both streams counted, in whichever worker they run
    shed = [ask(gw.url, f"x{i}", tier="free") for i in range(8)]
    for holder in holders:
        holder.join(30)
    assert all(a.status_code == 429 and "overloaded" in a.text for a in shed)


def test_stopping_the_parent_stops_every_worker(start_sim, tmp_path):
    sim = start_sim()
    gw = gateway(start_sim, tmp_path, "{}\n", "--llm", f"r1={sim.url}")
    workers = psutil.Process(gw.proc.pid).children()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == []


def test_a_worker_that_dies_takes_the_service_down(start_sim, tmp_path):
    sim = start_sim()
    gw = gateway(start_sim, tmp_path, "{}\n", "--llm", f"r1={sim.url}")
    first, second = psutil.Process(gw.proc.pid).children()
    first.kill()
    assert gw.proc.wait(10) != 0  # for the supervisor to log and restart
    _gone, alive = psutil.wait_procs([second], timeout=5)
    assert alive == []
    assert "exited with" in gw.log_path.read_text()


def test_workers_stop_when_their_parent_is_killed(start_sim, tmp_path):
    sim = start_sim()
    gw = gateway(start_sim, tmp_path, "{}\n", "--llm", f"r1={sim.url}")
    workers = psutil.Process(gw.proc.pid).children()
    cmdline = workers[0].cmdline()
    shared = Path(cmdline[cmdline.index("--shared-dir") + 1])
    assert shared.is_dir()
    gw.kill(signal.SIGKILL)
    _gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [] and not shared.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_line_and_exit_3(start_sim, workers):
    sim = start_sim()
    port = free_port()
    holder = ServiceProcess(GATEWAY, ["--llm", f"r1={sim.url}"], start_sim.log_dir / "h.log",
                            port=port)  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", GATEWAY, "serve", "--port", str(port), "--llm",
             f"r1={sim.url}", "--workers", workers],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        holder.stop()
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
