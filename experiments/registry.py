"""The activities aichaos exports to experiment files: module, function and argument types.

An experiment may name only these (and the activities of Chaos Toolkit extensions the user
allows); the blast-radius policy (``policy.py``) looks them up here. A public function of an
aichaos module is not an activity by being importable: helpers and names re-exported from
chaoslib (``runner.run_activity`` runs any nested provider) are not listed, so they cannot be
called.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .actions import load, network, provider, replicas
from .probes import run, stack

# Arguments chaoslib fills in itself; an experiment never passes them.
INJECTED = ("configuration", "secrets")

EXPORTED = {
    replicas: (
        "kill_replica",
        "terminate_replica",
        "kill_engine_core",
        "replicas_state",
        "wait_replicas_ready",
        "engine_death",
        "revive_replicas",
        "slow_start",
        "finish_slow_start",
    ),
    network: (
        "disable_proxies",
        "enable_proxies",
        "add_toxic",
        "add_latency",
        "remove_toxics",
        "reset",
    ),
    provider: (
        "inject_llm_fault",
        "error_storm",
        "mid_stream_error",
        "stall_stream",
        "slow_responses",
        "slow_tokens",
        "hang",
        "outage",
        "end_outage",
        "kv_exhaustion",
        "clear_faults",
    ),
    load: ("noisy_neighbour", "stop_noisy_neighbours"),
    run: ("request_count", "error_ratio", "ttft_p95", "fallback_share"),
    stack: (
        "replicas_ready",
        "all_replicas_ready",
        "breaker_states",
        "breakers_open",
        "breaker_state",
    ),
}


# Activities that need an instance aichaos runs: a process to signal, or the simulator's own
# fault API. Against an endpoint given by url (``aichaos run --target``) they are refused.
NEED_A_PROCESS = {
    (replicas, name)
    for name in (
        "kill_replica",
        "terminate_replica",
        "kill_engine_core",
        "engine_death",
        "revive_replicas",
        "slow_start",
        "finish_slow_start",
    )
} | {(provider, "inject_llm_fault"), (provider, "kv_exhaustion")}
# Modules whose activities act on a stack's services or proxies: with --target, a run whose
# experiment uses one gets a fault proxy in front of the target.
STACK_MODULES = tuple(m.__name__ for m in (network, provider, replicas, stack))


@dataclass(frozen=True)
class Parameter:
    name: str
    required: bool
    adapter: TypeAdapter[Any]

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter, or None."""
        try:
            self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            error = exc.errors()[0]
            return str(error.get("msg", "a value of another type"))
        return None


@dataclass(frozen=True)
class Activity:
    module: str
    func: str
    parameters: dict[str, Parameter]
    needs_a_process: bool = False  # see NEED_A_PROCESS

    @property
    def name(self) -> str:
        return f"{self.module}.{self.func}"

    def argument_problem(self, arguments: dict[str, Any]) -> tuple[str, str] | None:
        """``(argument, expected)`` for the first bad or missing argument, or None. Values
        still holding a ``${...}`` placeholder are checked when they are known."""
        for key, value in arguments.items():
            parameter = self.parameters.get(key)
            if parameter is None:
                names = ", ".join(self.parameters) or "none"
                return key, f"an argument of {self.func} ({names})"
            if isinstance(value, str) and "${" in value:
                continue
            problem = parameter.problem(value)
            if problem is not None:
                return key, f"a valid {key} ({problem})"
        for parameter in self.parameters.values():
            if parameter.required and parameter.name not in arguments:
                return parameter.name, "this argument (it has no default)"
        return None


def _activity(module: Any, func: str) -> Activity:
    function = getattr(module, func)
    hints = typing.get_type_hints(function)
    parameters = {}
    for p in inspect.signature(function).parameters.values():
        if p.name in INJECTED:
            continue
        annotation = hints.get(p.name, Any)
        required = p.default is inspect.Parameter.empty
        parameters[p.name] = Parameter(p.name, required, TypeAdapter(annotation))
    return Activity(module.__name__, func, parameters, (module, func) in NEED_A_PROCESS)


@cache
def activities() -> dict[tuple[str, str], Activity]:
    """Every exported activity by ``(module, func)``."""
    return {
        (module.__name__, func): _activity(module, func)
        for module, funcs in EXPORTED.items()
        for func in funcs
    }


def lookup(module: str, func: str) -> Activity | None:
    return activities().get((module, func))
