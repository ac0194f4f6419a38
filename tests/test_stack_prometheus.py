"""The supervisor with the real Prometheus (Debian package, installed by `make`): it scrapes
the simulator's vLLM metrics, which PromQL then reads back."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest
from conftest import REPO

from aichaos.harness.server_metrics import TTFT_P95, PrometheusSource, Scraper, write_metrics
from aichaos.harness.stack import Stack

TOPOLOGY = REPO / "tests" / "data" / "topology" / "small.yaml"


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("CI"),
    reason="prometheus not installed (make test installs it; in CI its absence fails)",
)
def test_prometheus_scrapes_the_stack(tmp_path):
    with Stack.up(TOPOLOGY, tmp_path / "run") as stack:
        prom = stack.status().prometheus.url
        httpx.post(f"{stack.url('llm')}/v1/completions", timeout=10,
                   json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True})  # fmt: skip
        query = {"query": "vllm:generation_tokens_total"}
        deadline = time.monotonic() + 30
        result: list = []
        while time.monotonic() < deadline and not result:
            data = httpx.get(f"{prom}/api/v1/query", params=query, timeout=5).json()
            result = [r for r in data["data"]["result"] if float(r["value"][1]) >= 3]
            time.sleep(0.5)
    assert result, "Prometheus never scraped the simulator's generated tokens"
    assert result[0]["metric"]["model_name"] == "fixed-latency"


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("CI"),
    reason="prometheus not installed (make test installs it; in CI its absence fails)",
)
def test_prometheus_and_direct_scrapes_give_the_same_series(tmp_path):
    """metrics.parquet is filled from Prometheus range queries when Prometheus runs and from
    direct scrapes otherwise: both must name the same series with the same sources."""
    with Stack.up(TOPOLOGY, tmp_path / "run") as stack:
        source = PrometheusSource(stack.status().prometheus.url)
        assert source.wait_scraping()
        start = time.time()
        scraper = Scraper({"llm": stack.url("llm")}, interval=0.5).start()
        with httpx.Client(timeout=10) as client:
            for _ in range(6):
                client.post(f"{stack.url('llm')}/v1/completions",
                            json={"prompt": "hi", "max_tokens": 4, "ignore_eos": True})  # fmt: skip
                time.sleep(0.5)
        direct = scraper.stop()
        rows: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not {r[2] for r in rows} >= {TTFT_P95}:
            time.sleep(1)
            rows = source.collect(start, time.time())
    from_prometheus = {(r[1], r[2]) for r in rows if r[1] == "llm"}
    from_scrapes = {(r[1], r[2]) for r in direct}
    assert ("llm", "vllm:num_requests_running") in from_scrapes & from_prometheus
    assert ("llm", TTFT_P95) in from_scrapes & from_prometheus
    ttft_direct = [r[4] for r in direct if r[2] == TTFT_P95]
    # the fixed-latency profile answers in 100 ms: both estimates sit in the bucket around it
    assert all(0.05 <= v <= 0.25 for v in ttft_direct)
    assert write_metrics(tmp_path, direct) is not None
