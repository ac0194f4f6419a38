"""Put other LLM backends in place of the embedded simulators of a topology.

``--backend vllm --model M`` runs a real ``vllm serve`` for every ``kind: llm`` service (needs
the ``vllm`` package and a GPU: ``pip install 'aichaos[vllm]'``); ``--llm-url URL`` drops the
pool and points the gateway at any OpenAI-compatible endpoint instead.
"""

from __future__ import annotations

import importlib.util
import shutil

from aichaos.harness.topology import Topology, TopologyError, parse_topology

VLLM_READY_TIMEOUT_S = 900.0  # loading weights onto a GPU takes minutes


def vllm_available() -> str | None:
    """None when ``vllm serve`` can run here, else why not."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install 'aichaos[vllm]')"
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU found (nvidia-smi is not on PATH)"
    return None


def with_vllm(topology: Topology, model: str) -> Topology:
    """Every ``kind: llm`` service runs ``vllm serve MODEL`` on its port."""
    services = []
    for service in topology.services:
        if service.kind == "llm":
            command = [
                "{python}",
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model,
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
            ]
            service = service.model_copy(
                update={
                    "command": command,
                    "ready": "/health",
                    "ready_timeout": VLLM_READY_TIMEOUT_S,
                }
            )
        services.append(service)
    return _checked(topology.model_copy(update={"services": services}))


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
