"""Experiment files, their validation and the blast-radius guard — no stack needed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from aichaos.experiments import catalog
from aichaos.experiments.policy import Permissions
from aichaos.experiments.runner import ChaosRun
from aichaos.harness.cli import app
from aichaos.rundir import InputError

LOCAL = {
    "replica-kill",
    "retrieval-latency",
    "provider-outage",
    "replica-down",
    "slow-provider",
    "rate-limit-storm",
    "overloaded-provider",
    "stream-stalls",
    "kv-exhaustion",
    "noisy-neighbour",
    "mid-stream-failure",
}
K8S = {"k8s-replica-kill", "k8s-scale-down", "k8s-retrieval-latency", "k8s-provider-outage"}
CHAOS = Path(sys.executable).parent / "chaos"
K8S_FLAGS = ["--allow-extension", "chaosk8s", "--allow", "aichaos"]
K8S_ALLOWED = Permissions(extensions=("chaosk8s",), targets=("aichaos",))


def fake_stack(tmp_path: Path) -> Path:
    """A state file as the supervisor writes it (only what the guard reads)."""
    state = {
        "services": {
            "llm-1": {"service": "llm-1", "kind": "llm", "url": "http://127.0.0.1:9"},
            "llm-2": {"service": "llm-2", "kind": "llm", "url": "http://127.0.0.1:9"},
            "fallback": {"service": "fallback", "kind": "fallback", "url": "http://127.0.0.1:9"},
            "gateway": {"service": "gateway", "kind": "gateway", "url": "http://127.0.0.1:9"},
        },
        "proxies": {name: {"upstream": name} for name in ("llm-1", "llm-2", "retriever")},
    }
    path = tmp_path / "stack.json"
    path.write_text(json.dumps(state))
    return path


def test_every_shipped_experiment_is_listed_and_valid():
    names = {name for name, _ in catalog.list_experiments()}
    assert names >= LOCAL | K8S
    for name in names:
        # the policy, then chaoslib's validation (activities resolved)
        experiment = catalog.load_experiment(name, K8S_ALLOWED)
        assert experiment["steady-state-hypothesis"]["probes"], name
        assert experiment["method"], name


def test_kubernetes_experiments_use_chaostoolkit_kubernetes():
    pytest.importorskip("chaosk8s")  # resolution of k8s activities needs the package
    kill = catalog.load_experiment("k8s-replica-kill", K8S_ALLOWED)
    action = kill["method"][0]["provider"]
    assert action["module"] == "chaosk8s.pod.actions" and action["func"] == "terminate_pods"
    assert action["arguments"]["label_selector"] == "app=vllm"
    scale = catalog.load_experiment("k8s-scale-down", K8S_ALLOWED)
    assert scale["method"][0]["provider"]["func"] == "scale_deployment"
    assert scale["rollbacks"][0]["provider"]["arguments"]["replicas"] == 2
    probe = scale["steady-state-hypothesis"]["probes"][0]["provider"]
    assert probe["func"] == "deployment_available_and_healthy"


@pytest.mark.parametrize("name", ["provider-outage", "k8s-replica-kill"])
def test_chaos_validate_cli_accepts_shipped_files(name):
    path = catalog.resolve(name)
    result = subprocess.run(
        [str(CHAOS), "--no-log-file", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "experiment syntax and semantic look valid" in (result.stdout + result.stderr)


def write(tmp_path: Path, data: dict | str, name: str = "exp.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def one_line(message: str) -> bool:
    return "\n" not in message.strip() and "Traceback" not in message


def test_malformed_experiments_get_one_clear_line(tmp_path):
    base = catalog.load_experiment("retrieval-latency")
    action = base["method"][0]
    no_func = {**action, "provider": {**action["provider"], "func": "no_such_action"}}
    bad_at = {**action, "x-aichaos": {"at": "soon", "rollback": "remove-retriever-toxics"}}
    cases = {
        "bad-json.json": ("{ not json", "line 1"),
        "no-func.json": ({**base, "method": [no_func]}, "no_such_action"),
        "no-rollback.json": (
            {**base, "method": [{**action, "x-aichaos": {"at": 1, "duration": 2}}]},
            "x-aichaos.rollback",
        ),
        "bad-at.json": ({**base, "method": [bad_at]}, "x-aichaos.at"),
        "no-method.json": ({"title": "t", "description": "d"}, "experiment"),
    }
    for name, (data, field) in cases.items():
        path = write(tmp_path, data, name)
        with pytest.raises(InputError) as info:
            catalog.load_experiment(path)
        message = str(info.value)
        assert message.startswith(str(path)) and field in message and one_line(message), message
    result = CliRunner().invoke(app, ["experiments", "validate", str(tmp_path / "no-func.json")])
    assert result.exit_code == 2
    assert one_line(result.output) and "no_such_action" in result.output
    missing = CliRunner().invoke(app, ["experiments", "show", "no-such-experiment"])
    assert missing.exit_code == 2 and "shipped experiment" in missing.output


def test_experiments_cli_list_show_validate():
    runner = CliRunner()
    listed = runner.invoke(app, ["experiments", "list"])
    assert listed.exit_code == 0
    assert {line.split()[0] for line in listed.output.splitlines()} >= LOCAL | K8S
    shown = runner.invoke(app, ["experiments", "show", "replica-kill"])
    assert shown.exit_code == 0 and json.loads(shown.output)["method"][0]["x-aichaos"]["at"] == 10
    # Kubernetes experiments need their extension and namespace named, as chaos and run do
    local_only = runner.invoke(app, ["experiments", "validate"])
    assert local_only.exit_code == 2 and local_only.output.count("ok: ") == len(LOCAL)
    assert local_only.output.count("--allow-extension chaosk8s") == len(K8S)
    valid = runner.invoke(app, ["experiments", "validate", *K8S_FLAGS])
    assert valid.exit_code == 0 and valid.output.count("ok: ") == len(LOCAL | K8S)


def guarded(experiment: dict, stack_file: Path | None, tmp_path: Path, allowed=None) -> None:
    configuration = {"aichaos_stack_file": str(stack_file)} if stack_file else {}
    permissions = Permissions(extensions=("chaosk8s",), targets=tuple(allowed or ()))
    ChaosRun(
        experiment, tmp_path / "run", configuration=configuration, t0=0.0, permissions=permissions
    )


def test_guard_refuses_targets_outside_the_topology(tmp_path):
    stack = fake_stack(tmp_path)
    latency = catalog.load_experiment("retrieval-latency")
    guarded(latency, stack, tmp_path)  # the retriever edge is declared: accepted

    other = copy.deepcopy(latency)
    other["method"][0]["provider"]["arguments"]["proxy"] = "payments-db"
    with pytest.raises(InputError) as info:
        guarded(other, stack, tmp_path)
    assert "method[0].provider.arguments.proxy" in str(info.value)
    assert "payments-db" in str(info.value) and one_line(str(info.value))
    assert not (tmp_path / "run").exists()  # refused before anything started

    kill = catalog.load_experiment("replica-kill")
    kill["method"][0]["provider"]["arguments"]["service"] = "gateway"  # not a replica
    with pytest.raises(InputError, match=r"arguments\.service"):
        guarded(kill, stack, tmp_path)

    with pytest.raises(InputError, match="a running stack"):
        guarded(catalog.load_experiment("replica-kill"), None, tmp_path)

    shell = copy.deepcopy(latency)
    shell["method"][0]["provider"] = {"type": "process", "path": "rm", "arguments": "-rf /tmp/x"}
    with pytest.raises(InputError, match="process provider"):
        guarded(shell, stack, tmp_path)


def test_guard_needs_kubernetes_namespaces_named_explicitly(tmp_path):
    experiment = catalog.load_experiment("k8s-scale-down", K8S_ALLOWED)
    with pytest.raises(InputError) as info:
        guarded(experiment, None, tmp_path)
    assert "arguments.ns" in str(info.value) and "'aichaos'" in str(info.value)
    guarded(experiment, None, tmp_path, allowed={"aichaos"})
    with pytest.raises(InputError, match=r"arguments\.ns"):
        guarded(experiment, None, tmp_path, allowed={"default"})
    # a real Toxiproxy's proxies are allowed by name as well
    toxic = catalog.load_experiment("k8s-retrieval-latency", K8S_ALLOWED)
    with pytest.raises(InputError, match=r"arguments\.proxy"):
        guarded(toxic, None, tmp_path, allowed={"aichaos"})
    guarded(toxic, None, tmp_path, allowed={"aichaos", "retriever"})


def test_shipped_files_are_package_data():
    files = sorted(p.name for p in (REPO / "experiments" / "library").glob("*.json"))
    assert len(files) == len(LOCAL | K8S)
    assert catalog.LIBRARY.resolve() == (REPO / "experiments" / "library").resolve()
