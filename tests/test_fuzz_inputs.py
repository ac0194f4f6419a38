"""Every input kind, mutated at random from the shipped files: each mutant is accepted or
refused as one line (``InputError`` / ``TopologyError``), never a traceback, a hang or
unbounded memory. Seeded (``derandomize``) and bounded in examples, so CI runs the same
inputs every time in a few seconds per kind."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aichaos.experiments.catalog import load_experiment
from aichaos.experiments.proxies import TopologyError as ProxiesError
from aichaos.experiments.proxies import load_topology as load_proxies
from aichaos.harness.topology import TopologyError, load_topology
from aichaos.rundir import InputError
from aichaos.scenarios.spec import load_scenario
from aichaos.slo.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SEEDS = {
    "scenario": sorted((REPO / "scenarios" / "builtin").glob("*.yaml")),
    "slo": sorted((REPO / "slo" / "specs").glob("*.yaml")),
    "experiment": sorted(
        p
        for p in (REPO / "experiments" / "library").glob("*.json")
        if not p.name.startswith("k8s-")
    ),
    "topology": [REPO / "fixtures" / "topology" / "default.yaml"],
}
LOADERS = {
    "scenario": load_scenario,
    "slo": load_spec,
    "experiment": load_experiment,
    "topology": load_topology,
}
REFUSALS = (InputError, TopologyError, ProxiesError)
EXAMPLES = 400  # per kind: about 1,600 inputs a run

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "0", "500", "1e308", "-1s", "5m", "90s", "1%", "101%", "nan", "x" * 300,
                     "free", "fault:x", "${aichaos_target}", "llm", "proxy", "\u00e9\u20ac"]),
    st.text(max_size=20),
)  # fmt: skip
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in ``node`` (dict keys and list indexes)."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple, how: str, value: Any) -> Any:
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[f"extra_{last}"] = value
    elif how == "wrap":
        parent[last] = [parent[last]] if not isinstance(parent[last], list) else {"x": 1}
    return doc


@st.composite
def mutants(draw, kind: str) -> tuple[Path, Any]:
    seed = draw(st.sampled_from(SEEDS[kind]))
    text = seed.read_text(encoding="utf-8")
    doc = json.loads(text) if seed.suffix == ".json" else yaml.safe_load(text)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap"]))
        doc = _mutate(copy.deepcopy(doc), path, how, draw(VALUES))
    return seed, doc


def _write(tmp: Path, seed: Path, doc: Any) -> Path:
    path = tmp / f"mutant{seed.suffix}"
    if seed.suffix == ".json":
        path.write_text(json.dumps(doc, allow_nan=True), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_every_mutant_is_accepted_or_refused_in_one_line(kind, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz-{kind}")
    tried = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutants(kind))
    def check(case: tuple[Path, Any]) -> None:
        seed, doc = case
        path = _write(folder, seed, doc)
        tried.append(path)
        try:
            LOADERS[kind](path)
        except REFUSALS as exc:
            assert "\n" not in str(exc), str(exc)
            assert str(path) in str(exc) or kind == "slo", str(exc)

    check()
    assert len(tried) >= EXAMPLES // 2


def test_proxy_lists_too(tmp_path):
    for doc in ([], [{}], {"proxies": 5}, [{"name": "a", "listen": 1, "upstream": None}],
                [{"name": "x" * 500, "listen": "[::1]:99999", "upstream": "a:1"}]):  # fmt: skip
        path = tmp_path / "proxies.yaml"
        path.write_text(yaml.safe_dump(doc))
        try:
            load_proxies(path)
        except REFUSALS as exc:
            assert "\n" not in str(exc)
