"""Other LLM backends in place of the simulators: vLLM (validated offline) and any URL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO

from aichaos.harness.stack import Stack
from aichaos.harness.targets import with_llm_url, with_vllm
from aichaos.harness.topology import TopologyError, load_topology

DEFAULT = REPO / "fixtures" / "topology" / "default.yaml"


def test_vllm_backend_runs_vllm_serve_for_every_replica():
    topo = with_vllm(load_topology(DEFAULT), "meta-llama/Llama-3.1-8B-Instruct")
    llm = [s for s in topo.services if s.kind == "llm"]
    assert len(llm) == 2
    for service in llm:
        assert service.command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert "meta-llama/Llama-3.1-8B-Instruct" in service.command and "{port}" in service.command
        assert service.ready == "/health" and service.ready_timeout >= 600
    fallback = next(s for s in topo.services if s.name == "fallback")
    assert "aichaos.fixtures.llm_sim" in fallback.command  # the fallback stays a provider profile


def test_llm_url_replaces_the_pool():
    topo = with_llm_url(load_topology(DEFAULT), "http://127.0.0.1:9999/")
    assert not [s for s in topo.services if s.kind == "llm"]
    gateway = next(s for s in topo.services if s.kind == "gateway")
    assert gateway.command[-2:] == ["--llm", "external=http://127.0.0.1:9999"]
    assert not any("{proxy:llm-" in arg for arg in gateway.command)
    assert {p.name for p in topo.proxies} == {"fallback", "retriever"}
    with pytest.raises(TopologyError, match="expected http"):
        with_llm_url(load_topology(DEFAULT), "localhost:1")


def test_stack_up_refuses_vllm_without_vllm_or_gpu(tmp_path):
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "aichaos"),
            "stack",
            "up",
            "--backend",
            "vllm",
            "--model",
            "m",
            "--run-dir",
            str(tmp_path / "r"),
            "--pointer",
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--backend vllm:" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_llm_url_stack_answers_from_a_separately_started_server(start_sim, tmp_path):
    outside = start_sim("--seed", "9")
    topo = with_llm_url(load_topology(DEFAULT), outside.url)
    with Stack.up(topo, tmp_path / "run", prometheus=False) as stack:
        resp = httpx.post(
            f"{stack.url('gateway')}/v1/chat/completions",
            timeout=30,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        )
    assert resp.status_code == 200 and resp.headers["x-served-by"] == "external"
