"""Other LLM backends in place of the simulators: vLLM (validated offline) and any URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO

from aichaos.harness.stack import Stack
from aichaos.harness.targets import VllmBackend, with_llm_url, with_vllm
from aichaos.harness.topology import TopologyError, load_topology, parse_topology

DEFAULT = REPO / "fixtures" / "topology" / "default.yaml"


def test_vllm_backend_runs_a_vllm_server_for_every_replica_sized_by_its_engine():
    backend = VllmBackend("/opt/v{x}/python", "/models/tiny", "aichaos-tiny", cpu=True)
    topo = with_vllm(load_topology(DEFAULT), backend)
    llm = [s for s in topo.services if s.kind == "llm"]
    assert len(llm) == 2
    for service in llm:
        args = service.command
        assert args[0] == "/opt/v{{x}}/python"  # a literal path, not a placeholder
        assert args[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
        flags = dict(zip(args[3::2], args[4::2], strict=False))
        assert flags["--model"] == "/models/tiny" and flags["--served-model-name"] == "aichaos-tiny"
        assert flags["--max-model-len"] == "2048" and flags["--max-num-seqs"] == "64"
        assert flags["--dtype"] == "bfloat16" and "--num-gpu-blocks-override" not in flags
        assert service.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
        assert service.ready == "/health" and service.ready_timeout >= 300
        assert not service.has_admin_port  # no fault API on a real engine
    gateway = next(s for s in topo.services if s.kind == "gateway")
    assert gateway.command[-2:] == ["--set", "model=aichaos-tiny"]
    fallback = next(s for s in topo.services if s.name == "fallback")
    assert "aichaos.fixtures.llm_sim" in fallback.command  # the fallback stays a provider profile


def test_engine_kv_blocks_and_gpu_build():
    data = load_topology(DEFAULT).model_dump()
    engine = {"max_model_len": 1024, "kv_blocks": 80, "prefix_caching": False}
    data["services"][1]["engine"] = engine
    topo = with_vllm(parse_topology(data), VllmBackend("py", "m", "m", cpu=False))
    args = topo.service("llm-1").command
    assert args[args.index("--num-gpu-blocks-override") + 1] == "80"
    assert args[args.index("--max-model-len") + 1] == "1024" and "--dtype" not in args
    assert "--no-enable-prefix-caching" in args
    assert "--no-enable-prefix-caching" not in topo.service("llm-2").command
    assert "VLLM_CPU_KVCACHE_SPACE" not in topo.service("llm-1").env
    # 80 blocks hold a 1024-token request (64 + 1 of 16 tokens on a GPU, 8 + 1 of 128 on
    # the CPU build); 8 do not
    assert with_vllm(parse_topology(data), VllmBackend("py", "m", "m", cpu=True))
    data["services"][1]["engine"] = {"max_model_len": 1024, "kv_blocks": 8}
    with pytest.raises(TopologyError, match=r"services\[1\]\.engine\.kv_blocks: expected at "
                       r"least 9 blocks of 128 tokens .* got 8"):  # fmt: skip
        with_vllm(parse_topology(data), VllmBackend("py", "m", "m", cpu=True))
    data["services"][1]["engine"] = {"kv_block": 48}
    with pytest.raises(TopologyError, match=r"services\[1\]\.engine\.kv_block: .*kv_blocks"):
        parse_topology(data)


def test_llm_url_replaces_the_pool():
    topo = with_llm_url(load_topology(DEFAULT), "http://127.0.0.1:9999/")
    assert not [s for s in topo.services if s.kind == "llm"]
    gateway = next(s for s in topo.services if s.kind == "gateway")
    assert gateway.command[-2:] == ["--llm", "external=http://127.0.0.1:9999"]
    assert not any("{proxy:llm-" in arg for arg in gateway.command)
    assert {p.name for p in topo.proxies} == {"fallback", "retriever"}
    with pytest.raises(TopologyError, match="expected http"):
        with_llm_url(load_topology(DEFAULT), "localhost:1")


def test_stack_up_refuses_vllm_without_a_vllm_environment(tmp_path):
    """A Python that cannot import vllm: one line naming it and the command that fixes it."""
    aichaos = str(Path(sys.executable).parent / "aichaos")
    args = ["stack", "up", "--backend", "vllm", "--run-dir", str(tmp_path / "r"),
            "--pointer", str(tmp_path / "p.json")]  # fmt: skip
    env = {**os.environ, "AICHAOS_VLLM_PYTHON": sys.executable}
    proc = subprocess.run([aichaos, *args], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "--backend vllm:" in proc.stderr
    assert "cannot import vllm" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


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
