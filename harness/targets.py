"""Put other LLM backends in place of the embedded simulators of a topology.

``--backend vllm [--model M]`` runs a real vLLM OpenAI server for every ``kind: llm`` service,
with the interpreter of vLLM's own environment (``vllm_env``: ``make vllm-env``), sized by the
service's ``engine`` block; without ``--model`` it serves the small model the project builds
(``aichaos model build``). ``--llm-url URL`` drops the pool and points the gateway at any
OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from aichaos.harness.topology import (
    DEFAULT_TOPOLOGY,
    ProxySpec,
    ServiceSpec,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)

from .vllm_env import build_model, find_python

BUILT_MODEL_NAME = "aichaos-tiny"  # what the replicas answer to when they serve the built model
CPU_READY_TIMEOUT_S = 420.0  # two engines starting together on two busy cores: minutes
GPU_READY_TIMEOUT_S = 900.0  # loading real weights onto a GPU takes longer still
GATEWAY_MODULE = "aichaos.fixtures.gateway"
CPU_BLOCK_TOKENS = 128  # tokens per KV block: vLLM's CPU build, and its GPU default
GPU_BLOCK_TOKENS = 16


@dataclass(frozen=True)
class VllmBackend:
    """What every vLLM replica of a stack runs: which Python, which model, under which name."""

    python: str
    model: str
    served_name: str
    cpu: bool  # the CPU build (no NVIDIA GPU here): bfloat16, KV cache sized in GiB


def vllm_backend(model: str | None = None) -> VllmBackend:
    """The backend for ``--backend vllm``; ``VllmUnavailable`` when vLLM cannot run here.
    Without ``model``, the project's model is built (or reused from its cache)."""
    python = find_python()
    cpu = shutil.which("nvidia-smi") is None
    if model:
        return VllmBackend(python, model, model, cpu)
    return VllmBackend(python, str(build_model(python=python)), BUILT_MODEL_NAME, cpu)


def vllm_command(backend: VllmBackend, service: ServiceSpec) -> list[str]:
    """The command of a topology's replica (placeholders and literal braces as the supervisor
    reads them)."""
    engine = service.engine
    return vllm_server_args(
        _literal(backend.python), _literal(backend.model), _literal(backend.served_name), "{port}",
        max_model_len=engine.max_model_len, max_num_seqs=engine.max_num_seqs,
        kv_blocks=engine.kv_blocks, prefix_caching=engine.prefix_caching, cpu=backend.cpu,
    )  # fmt: skip


def vllm_server_args(
    python: str,
    model: str,
    served_name: str,
    port: str,
    *,
    max_model_len: int,
    max_num_seqs: int | None = None,
    kv_blocks: int | None = None,
    prefix_caching: bool = True,
    cpu: bool = True,
) -> list[str]:
    """vLLM's OpenAI server on loopback, the one way aichaos starts it (its ``vllm`` console
    script does not work in the CPU build); ``max_num_seqs`` None keeps vLLM's default."""
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", port,
               "--max-model-len", str(max_model_len)]  # fmt: skip
    if max_num_seqs is not None:
        command += ["--max-num-seqs", str(max_num_seqs)]
    if kv_blocks is not None:
        command += ["--num-gpu-blocks-override", str(kv_blocks)]
    if not prefix_caching:
        command.append("--no-enable-prefix-caching")
    if cpu:
        command += ["--dtype", "bfloat16"]
    return command


def check_kv_blocks(topology: Topology, backend: VllmBackend) -> None:
    """A pool of ``kv_blocks`` must hold one request of ``max_model_len`` tokens, with the
    block vLLM keeps back: a longer request would wait in the queue for ever."""
    block = CPU_BLOCK_TOKENS if backend.cpu else GPU_BLOCK_TOKENS
    for i, service in enumerate(topology.services):
        engine = service.engine
        if service.kind != "llm" or engine.kv_blocks is None:
            continue
        need = -(-engine.max_model_len // block) + 1
        if engine.kv_blocks < need:
            raise TopologyError(
                f"services[{i}].engine.kv_blocks: expected at least {need} blocks of {block} "
                f"tokens to hold one request of max_model_len {engine.max_model_len} (vLLM "
                f"keeps one block back), got {engine.kv_blocks}"
            )


def with_vllm(topology: Topology, backend: VllmBackend) -> Topology:
    """Every ``kind: llm`` service runs a vLLM server on its port; the gateway asks it for
    the model it serves."""
    check_kv_blocks(topology, backend)
    services = []
    for service in topology.services:
        if service.kind == "llm":
            env = dict(service.env)
            if backend.cpu:
                env["VLLM_CPU_KVCACHE_SPACE"] = f"{service.engine.kv_cache_gib:g}"
            service = service.model_copy(
                update={
                    "command": vllm_command(backend, service),
                    "env": env,
                    "ready": "/health",
                    "ready_timeout": CPU_READY_TIMEOUT_S if backend.cpu else GPU_READY_TIMEOUT_S,
                }
            )
        elif GATEWAY_MODULE in service.command:
            model = f"model={_literal(backend.served_name)}"
            service = service.model_copy(update={"command": [*service.command, "--set", model]})
        services.append(service)
    return _checked(topology.model_copy(update={"services": services}))


def _literal(text: str) -> str:
    """``text`` as a command part the supervisor leaves as it is (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def with_llm_url(topology: Topology, url: str) -> Topology:
    """No LLM pool: the gateway sends every request to ``url`` (the fallback stays)."""
    if not url.startswith(("http://", "https://")):
        raise TopologyError(f"--llm-url {url}: expected http://host:port")
    pool = {s.name for s in topology.services if s.kind == "llm"}
    if not pool:
        raise TopologyError("--llm-url: the topology has no service of kind 'llm' to replace")
    services = []
    for service in topology.services:
        if service.name in pool:
            continue
        command = _without_pool_flags(service.command, pool)
        if service.kind == "gateway":
            command = [*command, "--llm", f"external={url.rstrip('/')}"]
        depends = [d for d in service.depends_on if d not in pool]
        services.append(service.model_copy(update={"command": command, "depends_on": depends}))
    proxies = [p for p in topology.proxies if p.upstream not in pool]
    update: dict = {"services": services, "proxies": proxies}
    if topology.prometheus is not None:
        targets = [t for t in topology.prometheus.targets if t not in pool]
        update["prometheus"] = topology.prometheus.model_copy(update={"targets": targets})
    return _checked(topology.model_copy(update=update))


TARGET = "target"  # the endpoint's service and proxy in a fault-proxy stack


def fault_proxy_topology(url: str) -> Topology:
    """The embedded proxy server and one proxy, ``target``, in front of ``url``: an endpoint
    aichaos did not start (``aichaos run --target URL`` whose experiment acts on a stack). The
    endpoint is an ``llm`` service given by url, so the library's LLM experiments find it."""
    server = load_topology(DEFAULT_TOPOLOGY).proxy_service
    assert server is not None, "the default topology has a proxy server"
    target = ServiceSpec(name=TARGET, kind="llm", url=url)
    proxy = ProxySpec(name=TARGET, upstream=TARGET)
    return _checked(Topology(name="fault-proxy", services=[server, target], proxies=[proxy]))


def _checked(topology: Topology) -> Topology:
    """Run the topology's own checks again on the changed copy."""
    return parse_topology(topology.model_dump(), source="topology (retargeted)")


def _without_pool_flags(command: list[str], pool: set[str]) -> list[str]:
    """Drop ``--llm ID={proxy:X}`` / ``{url:X}`` pairs that point at the replaced services."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(command):
        if skip:
            skip = False
            continue
        nxt = command[i + 1] if i + 1 < len(command) else ""
        if arg == "--llm" and any(f":{name}}}" in nxt for name in pool):
            skip = True
            continue
        out.append(arg)
    return out
