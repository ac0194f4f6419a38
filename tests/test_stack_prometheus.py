"""The supervisor with the real Prometheus (Debian package, installed by `make`): it scrapes
the simulator's vLLM metrics, which PromQL then reads back."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest
from conftest import REPO

from aichaos.harness.stack import Stack

TOPOLOGY = REPO / "tests" / "data" / "topology" / "small.yaml"


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("CI"),
    reason="prometheus not installed (make test installs it; in CI its absence fails)",
)
def test_prometheus_scrapes_the_stack(tmp_path):
    with Stack.up(TOPOLOGY, tmp_path / "run") as stack:
        prom = stack.status()["prometheus"]["url"]
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
