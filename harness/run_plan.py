"""Everything ``aichaos run`` needs, resolved and validated before anything starts.

``plan_run`` turns the command line (or a previous run's ``run.json`` with ``--replay``) into a
``RunPlan``: the scenario, the experiment, the SLO spec, and either a topology to bring up or a
target to check. Every problem is one ``InputError`` / ``TopologyError`` line; nothing is
written or started until the whole plan stands.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos import exits
from aichaos.experiments import policy
from aichaos.experiments.catalog import load_experiment
from aichaos.experiments.catalog import validate as validate_experiment
from aichaos.experiments.clock import scale_schedule
from aichaos.experiments.policy import Permissions, check_endpoint_only
from aichaos.rundir import InputError, read_manifest
from aichaos.scenarios.spec import Scenario, load_scenario
from aichaos.slo.decide import requests_to_decide
from aichaos.slo.spec import SloSpec, load_spec

from .targets import vllm_backend, with_vllm
from .topology import DEFAULT_TOPOLOGY, Topology, load_topology
from .urls import check_url
from .vllm_env import VllmUnavailable

DEFAULT_SCENARIO = "tiered"
DEFAULT_EXPERIMENT = "provider-outage"
DEFAULT_SLO = "tiered"
QUICK_SLO = "quick"  # what a one-minute game day can decide (slo/specs/quick.yaml)
QUICK_DURATION_S = 60.0
NO_EXPERIMENT = ("none", "")


@dataclass
class RunOptions:
    """The command line of ``aichaos run``, as typed."""

    scenario: str | None = None
    experiment: str | None = None
    slo: str | None = None
    duration_s: float | None = None
    target: str | None = None
    topology: Path | None = None
    backend: str = "sim"
    model: str | None = None
    workers: int = 1
    prometheus_url: str | None = None
    baseline: Path | None = None
    out: Path | None = None
    seed: int | None = None
    quick: bool = False
    ci: bool = False
    promote: bool = False
    replay: Path | None = None
    open_report: bool = False
    permissions: Permissions = field(default_factory=Permissions)  # the --allow* flags
    command: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    run_id: str
    run_dir: Path
    scenario: Scenario
    experiment: dict[str, Any] | None
    slo: SloSpec
    topology: Topology | None  # None with --target
    topology_source: str | None
    target: str | None
    options: RunOptions

    def sizing_note(self) -> str | None:
        """A line when the scenario sends too few requests for the SLO spec's key objectives
        to be shown to hold (the verdict would be inconclusive however well the stack does)."""
        expected = self.scenario.expected_requests()
        shares = {t.name: t.share for t in self.scenario.tier_list}
        need, which = requests_to_decide(self.slo, shares)
        if expected is None or expected >= need:
            return None
        return (f"note: the SLO spec {self.slo.name} needs about {need:,} requests for its "
                f"key objective {which} to be shown to hold; scenario {self.scenario.name} "
                f"sends about {expected:,.0f}: expect an inconclusive verdict (exit "
                f"{exits.INCONCLUSIVE}) unless it fails; a longer --duration or a higher rate "
                f"decides it")  # fmt: skip

    def manifest_inputs(self) -> dict[str, Any]:
        """The resolved inputs for ``run.json``: enough for ``--replay`` to run them again."""
        o = self.options
        return {
            "scenario": self.scenario.to_dict(),
            "experiment": self.experiment,
            "slo": self.slo.to_dict(),
            "seed": self.scenario.seed,
            "warmup_s": self.scenario.warmup_s,
            "duration_s": self.scenario.duration_s,
            "target": self.target,
            "options": {
                "topology": self.topology_source,
                "backend": o.backend,
                "model": o.model,
                "workers": o.workers,
                "prometheus_url": o.prometheus_url,
                "baseline": str(o.baseline) if o.baseline else None,
                "quick": o.quick,
                "ci": o.ci,
                "permissions": o.permissions.model_dump(mode="json"),
            },
        }


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def plan_run(options: RunOptions) -> RunPlan:
    """Resolve and validate every input; raises ``InputError`` or ``TopologyError``."""
    if options.replay is not None:
        return _plan_replay(options)
    _check_options(options)
    duration = options.duration_s or (QUICK_DURATION_S if options.quick else None)
    scenario = load_scenario(
        options.scenario or DEFAULT_SCENARIO, duration_s=duration, seed=options.seed
    )
    experiment = None
    default = NO_EXPERIMENT[0] if options.target else DEFAULT_EXPERIMENT
    if (options.experiment or default).lower() not in NO_EXPERIMENT:
        experiment = load_experiment(options.experiment or default, options.permissions)
        if options.target is not None:
            check_endpoint_only(experiment, options.experiment or default)
        declared = load_scenario(options.scenario or DEFAULT_SCENARIO).duration_s
        if duration and declared:  # faults keep their place in a shortened run
            experiment = scale_schedule(experiment, scenario.duration_s / declared)
    slo = load_spec(options.slo or (QUICK_SLO if options.quick else DEFAULT_SLO))
    slo.check_tiers(scenario.tiers, f"scenario {scenario.name}")
    topology, source = _topology(options)
    return _plan(options, scenario, experiment, slo, topology, source)


def _plan(
    options: RunOptions,
    scenario: Scenario,
    experiment: dict[str, Any] | None,
    slo: SloSpec,
    topology: Topology | None,
    source: str | None,
) -> RunPlan:
    run_id = new_run_id()
    run_dir = (options.out or Path("runs")) / run_id
    if run_dir.exists():
        raise InputError("--out", "run directory", "a directory that does not exist yet", run_dir)
    return RunPlan(
        run_id, run_dir, scenario, experiment, slo, topology, source, options.target, options
    )


def _check_options(o: RunOptions) -> None:
    if o.target is not None:
        check_url("--target", o.target)
        if o.topology is not None or o.backend != "sim":
            raise InputError("command line", "--target", "no --topology or --backend with it")
    if o.prometheus_url is not None:
        check_url("--prometheus-url", o.prometheus_url)
    if o.workers < 1:
        raise InputError("command line", "--workers", "an integer >= 1", o.workers)
    if o.duration_s is not None and o.duration_s <= 0:
        raise InputError("command line", "--duration", "a positive duration", o.duration_s)
    if o.backend not in ("sim", "vllm"):
        raise InputError("command line", "--backend", "sim or vllm", o.backend)
    if o.model and o.backend != "vllm":
        raise InputError("command line", "--model", "--backend vllm with it")
    if o.baseline is not None and o.baseline.exists() and not o.baseline.is_dir():
        raise InputError("command line", "--baseline", "a directory", str(o.baseline))
    if o.promote and o.baseline is None:
        raise InputError("command line", "--promote", "a --baseline directory to promote into")


def _topology(o: RunOptions) -> tuple[Topology | None, str | None]:
    if o.target is not None:
        return None, None
    path = o.topology or DEFAULT_TOPOLOGY
    topology = load_topology(path)
    if o.backend == "vllm":
        try:
            backend = vllm_backend(o.model)
        except VllmUnavailable as exc:
            raise InputError(
                "command line", "--backend vllm", f"vLLM usable here ({exc})"
            ) from None
        topology = with_vllm(topology, backend)
    return topology, str(path)


def _plan_replay(options: RunOptions) -> RunPlan:
    """The inputs of an earlier run, as its ``run.json`` recorded them."""
    manifest = read_manifest(options.replay)
    where = f"{options.replay}/run.json"
    if manifest is None:
        raise InputError(where, "run.json", "the manifest of an earlier aichaos run")
    for key in ("scenario", "slo", "options"):
        if getattr(manifest, key) is None:
            raise InputError(where, key, "the resolved input recorded by aichaos run")
    scenario = Scenario.from_dict(manifest.scenario)
    slo = SloSpec.from_dict(manifest.slo)
    recorded = manifest.options
    replayed = RunOptions(
        target=manifest.target,
        topology=Path(recorded["topology"]) if recorded.get("topology") else None,
        backend=recorded.get("backend", "sim"),
        model=recorded.get("model"),
        workers=int(recorded.get("workers", 1)),
        prometheus_url=recorded.get("prometheus_url"),
        baseline=options.baseline,
        out=options.out,
        ci=options.ci,
        promote=options.promote,
        open_report=options.open_report,
        # never the recorded ones: a run.json must not widen its own blast radius
        permissions=options.permissions,
        command=options.command,
    )
    _check_options(replayed)
    experiment = manifest.experiment
    if experiment is not None:
        policy.check(experiment, where, replayed.permissions)
        validate_experiment(experiment, where)
    topology, source = _topology(replayed)
    return _plan(replayed, scenario, experiment, slo, topology, source)
