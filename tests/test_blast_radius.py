"""The blast-radius policy: the reproductions of experiment files that escaped it, refused
alike by ``aichaos experiments validate``, ``aichaos chaos`` and ``aichaos run`` with no side
effect; what the ``--allow-*`` flags widen; nothing is imported before it is approved."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aichaos.experiments import catalog, policy
from aichaos.experiments.policy import Permissions
from aichaos.experiments.runner import ChaosRun
from aichaos.harness.cli import app
from aichaos.rundir import InputError

BASE = "retrieval-latency"


def experiment_with(step: dict) -> dict:
    """A shipped experiment whose first method step is ``step`` (its schedule kept)."""
    experiment = copy.deepcopy(catalog.load_experiment(BASE))
    first = experiment["method"][0]
    experiment["method"][0] = {**first, **step}
    return experiment


def shell(marker: Path) -> dict:
    return {"type": "process", "path": "sh", "arguments": f"-c 'id > {marker}'"}


def bypass(marker: Path) -> dict:
    """chaoslib's run_activity, re-exported by the runner module, running a nested command:
    it passed the old module-prefix guard."""
    nested = {"type": "action", "name": "nested", "provider": shell(marker)}
    return {
        "provider": {
            "type": "python",
            "module": "aichaos.experiments.runner",
            "func": "run_activity",
            "arguments": {"activity": nested, "configuration": {}, "secrets": {}},
        }
    }


def variants(marker: Path) -> dict[str, tuple[dict, str]]:
    """name -> (method step, the flag the refusal must name)."""
    return {
        "bypass": (bypass(marker), "aichaos is not an extension"),
        "process": ({"provider": shell(marker)}, "--allow-process"),
        "os-system": (
            {
                "provider": {
                    "type": "python",
                    "module": "os",
                    "func": "system",
                    "arguments": {"command": f"id > {marker}"},
                }
            },
            "--allow-extension os",
        ),
        # never contacted: refused before anything runs (.invalid cannot resolve anyway)
        "http": (
            {"provider": {"type": "http", "url": "http://outside.invalid/hook"}},
            "--allow-http outside.invalid",
        ),
    }


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.mark.parametrize("name", ["bypass", "process", "os-system", "http"])
def test_escaping_experiments_are_refused_by_validate_chaos_and_run(tmp_path, name):
    marker = tmp_path / "pwned"
    step, flag = variants(marker)[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(experiment_with(step)))
    runner = CliRunner()
    commands = {
        "validate": ["experiments", "validate", str(path)],
        "chaos": ["chaos", str(path), "--out", str(tmp_path / "chaos-out")],
        "run": ["run", "--experiment", str(path), "--out", str(tmp_path / "runs")],
    }
    for command, args in commands.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (command, result.output)
        assert one_line(result.output), (command, result.output)
        assert str(path) in result.output and flag in result.output, (command, result.output)
        assert "method[0]" in result.output, (command, result.output)
    assert not marker.exists()  # nothing ran
    assert not (tmp_path / "runs").exists() and not (tmp_path / "chaos-out").exists()


def test_each_flag_allows_exactly_its_kind(tmp_path):
    marker = tmp_path / "pwned"
    steps = variants(marker)
    process = experiment_with(steps["process"][0])
    policy.check(process, "p.json", Permissions(process=True))
    http = experiment_with(steps["http"][0])
    policy.check(http, "h.json", Permissions(http_hosts=("outside.invalid",)))
    with pytest.raises(InputError, match="--allow-http"):
        policy.check(http, "h.json", Permissions(http_hosts=("other.invalid",)))
    # aichaos's and chaoslib's own modules are never extensions, whatever the flags say
    runner = experiment_with(steps["bypass"][0])
    everything = Permissions(
        extensions=("aichaos", "aichaos.experiments.runner", "chaoslib"), process=True
    )
    with pytest.raises(InputError, match="an activity aichaos exports"):
        policy.check(runner, "b.json", everything)
    assert not marker.exists()  # a check never runs anything
    refused = CliRunner().invoke(
        app, ["experiments", "validate", BASE, "--allow-extension", "aichaos.experiments"]
    )
    assert refused.exit_code == 2 and one_line(refused.output)
    assert "--allow-extension: expected a Chaos Toolkit extension" in refused.output


def test_http_providers_reach_only_the_stacks_endpoints_once_it_runs(tmp_path):
    stack = tmp_path / "stack.json"
    stack.write_text(
        json.dumps(
            {
                "services": {"gateway": {"kind": "gateway", "url": "http://127.0.0.1:18090"}},
                "proxies": {"retriever": {"url": "http://127.0.0.1:18001"}},
            }
        )
    )
    configuration = {"aichaos_stack_file": str(stack)}

    def probe(url: str) -> dict:
        return {"provider": {"type": "http", "url": url}}

    own = experiment_with(probe("http://localhost:18090/health"))
    ChaosRun(own, tmp_path / "run", configuration=configuration, t0=0.0)
    via = experiment_with(probe("${aichaos_target}/health"))
    policy.check(via, "v.json", Permissions())  # before the stack is known: its own URL
    other = experiment_with(probe("http://127.0.0.1:22/"))  # loopback, but not the stack
    policy.check(other, "o.json", Permissions())  # validate: loopback could be the stack
    with pytest.raises(InputError) as info:
        ChaosRun(other, tmp_path / "run", configuration=configuration, t0=0.0)
    assert "stack's endpoints" in str(info.value) and "--allow-http 127.0.0.1" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_controls_tolerances_and_dynamic_configuration_are_checked(tmp_path):
    marker = tmp_path / "pwned"
    base = catalog.load_experiment(BASE)
    control = {**base, "controls": [{"name": "c", "provider": {"type": "python", "module": "x"}}]}
    with pytest.raises(InputError, match=r"controls\[0\]\.provider\.module.*--allow-extension x"):
        policy.check(control, "c.json", Permissions())
    policy.check(control, "c.json", Permissions(extensions=("x",)))
    inner = copy.deepcopy(base)
    inner["method"][0]["controls"] = control["controls"]
    with pytest.raises(InputError, match=r"method\[0\]\.controls\[0\]"):
        policy.check(inner, "c.json", Permissions())

    tolerance = copy.deepcopy(base)
    probe = tolerance["steady-state-hypothesis"]["probes"][0]
    probe["tolerance"] = {"type": "probe", "name": "t", "provider": shell(marker)}
    with pytest.raises(InputError, match=r"tolerance\.provider.*--allow-process"):
        policy.check(tolerance, "t.json", Permissions())

    dynamic = {**base, "configuration": {"x": {"type": "probe", "provider": shell(marker)}}}
    with pytest.raises(InputError, match=r"configuration\.x\.provider"):
        policy.check(dynamic, "d.json", Permissions())


def test_exported_activities_get_their_argument_types_checked():
    experiment = copy.deepcopy(catalog.load_experiment("retrieval-latency"))
    step = experiment["method"][0]["provider"]
    assert step["module"] == "aichaos.experiments.actions.network"
    step["func"], step["arguments"] = "disable_proxies", {"proxies": ["llm-1"]}
    step["arguments"]["proxies"] = 7
    with pytest.raises(InputError, match=r"arguments\.proxies"):
        policy.check(experiment, "e.json", Permissions())
    step["arguments"] = {"proxies": ["llm-1"], "shell": "id"}
    with pytest.raises(InputError, match=r"arguments\.shell .*: expected an argument of"):
        policy.check(experiment, "e.json", Permissions())
    step["arguments"] = {}
    with pytest.raises(InputError, match=r"arguments\.proxies .*: expected this argument"):
        policy.check(experiment, "e.json", Permissions())
    helper = copy.deepcopy(catalog.load_experiment("slow-provider"))
    helper["method"][0]["provider"]["func"] = "inject_fault"  # a helper, not an activity
    with pytest.raises(InputError, match="an activity aichaos exports"):
        policy.check(helper, "e.json", Permissions())


def test_validating_never_imports_a_module_it_has_not_approved(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    module = tmp_path / "sideeffect_mod.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('ran')\n\ndef act():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    step = {"provider": {"type": "python", "module": "sideeffect_mod", "func": "act"}}
    path = tmp_path / "import.json"
    path.write_text(json.dumps(experiment_with(step)))
    result = CliRunner().invoke(app, ["experiments", "validate", str(path)])
    assert result.exit_code == 2 and "--allow-extension sideeffect_mod" in result.output
    assert not marker.exists() and "sideeffect_mod" not in sys.modules
    # named as an extension, it is approved, and only then does chaoslib import it
    allowed = ["experiments", "validate", str(path), "--allow-extension", "sideeffect_mod"]
    result = CliRunner().invoke(app, allowed)
    assert marker.exists(), result.output
    sys.modules.pop("sideeffect_mod", None)


def test_deep_nesting_is_walked_without_overflow():
    experiment = copy.deepcopy(catalog.load_experiment(BASE))
    node: dict = {"type": "process", "path": "true"}
    for _ in range(5000):
        node = {"arguments": {"inner": node}}
    experiment["method"][0]["provider"]["arguments"]["nested"] = {"provider": node}
    with pytest.raises(InputError):
        policy.check(experiment, "deep.json", Permissions())


def test_a_url_is_judged_by_where_the_request_would_go(tmp_path):
    """urlsplit reads ``http://a\\@127.0.0.1/`` as loopback; requests sends it to ``a``."""
    for url in (
        "http://outside.invalid\\@127.0.0.1:8080/x",
        "http://user@127.0.0.1:8080/x",
        "http://127.0.0.1:8080 /x",
    ):
        experiment = experiment_with({"provider": {"type": "http", "url": url}})
        with pytest.raises(InputError, match="plain http"):
            policy.check(experiment, "u.json", Permissions())


def test_a_file_cannot_set_the_runs_own_configuration(tmp_path):
    """The file's ``aichaos_target`` never replaces the run's: unset by the run, it is unset."""
    step = {"provider": {"type": "http", "url": "${aichaos_target}/hook"}}
    experiment = experiment_with(step)
    experiment["configuration"] = {
        "aichaos_target": "http://outside.invalid",
        "aichaos_stack_file": str(tmp_path / "planted.json"),
    }
    policy.check(experiment, "c.json", Permissions())  # validate: the stack's own URL
    with pytest.raises(InputError, match="url"):
        ChaosRun(experiment, tmp_path / "run", configuration={}, t0=0.0)
    assert not (tmp_path / "run").exists()


def test_dynamic_configuration_cannot_name_a_host_or_a_namespace():
    probe = {"type": "probe", "provider": {"type": "python", "module": BASE, "func": "f"}}
    experiment = experiment_with({"provider": {"type": "http", "url": "http://${dyn}/x"}})
    experiment["configuration"] = {"dyn": {**probe, "name": "a@127.0.0.1:8080#"}}
    with pytest.raises(InputError, match="a URL whose host the file names"):
        policy.check(experiment, "d.json", Permissions(extensions=(BASE,)))
    k8s = copy.deepcopy(catalog.read_experiment("k8s-scale-down"))
    k8s["method"][0]["provider"]["arguments"]["ns"] = {"not": "a name"}
    with pytest.raises(InputError, match=r"arguments\.ns"):
        policy.check(k8s, "k.json", Permissions(extensions=("chaosk8s",), targets=("aichaos",)))


def test_yaml_aliases_repeating_one_node_are_walked_once(tmp_path):
    levels = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 60)]
    bomb = yaml.safe_load("\n".join(levels))  # 2**60 leaves if expanded
    experiment = copy.deepcopy(catalog.load_experiment(BASE))
    experiment["x-notes"] = bomb
    policy.check(experiment, "bomb.yaml", Permissions())  # returns: every node seen once


def test_engine_faults_on_an_endpoint_aichaos_did_not_start_are_refused(tmp_path):
    """A topology service given by url is no process and no simulator: kills and the
    simulator's faults cannot act on it, faults through its proxy can."""
    stack = tmp_path / "stack.json"
    stack.write_text(json.dumps({
        "services": {"provider": {"kind": "fallback", "service": "provider", "external": True,
                                  "url": "https://api.example.com"}},
        "proxies": {"provider": {"upstream": "provider", "url": "http://127.0.0.1:18002"},
                    "retriever": {"upstream": "retriever", "url": "http://127.0.0.1:18001"}},
    }))  # fmt: skip
    configuration = {"aichaos_stack_file": str(stack)}

    def step(func: str, **arguments) -> dict:
        module = "aichaos.experiments.actions.provider"
        return {"type": "action", "name": func,
                "provider": {"type": "python", "module": module, "func": func,
                             "arguments": arguments}}  # fmt: skip

    storm = experiment_with(step("error_storm", services="provider", status=429))
    policy.check(storm, "s.json", Permissions(), configuration)
    shrink = experiment_with(step("kv_exhaustion", services="fallback", blocks=8))
    with pytest.raises(InputError, match="fallback is an endpoint aichaos did not start"):
        policy.check(shrink, "k.json", Permissions(), configuration)
    with pytest.raises(InputError, match="acts through a proxy"):
        policy.check_endpoint_only(shrink, "k.json")
    policy.check_endpoint_only(storm, "s.json")
