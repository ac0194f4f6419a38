"""The Chaos Toolkit control that puts an experiment's method on the run's clock.

``ChaosRun`` adds it to the experiment's ``controls``; chaoslib calls it around every activity.
A method action may carry::

    "x-aichaos": {"at": 30, "duration": 45, "rollback": "remove-latency"}

``at``: seconds after the run's ``t0`` when the action starts (it waits until then);
``duration``: how long the fault stays, after which the rollback named ``rollback`` (one of the
experiment's ``rollbacks``) ends it; without a duration the fault lasts until the rollbacks.
Every wait here returns at once when the run is stopped, and the stop then interrupts the
method (``InterruptExecution``) so chaoslib goes straight to the rollbacks.
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import InterruptExecution

from aichaos.rundir import SCHEDULE_EXTENSION

from .context import RUN_KEY

CONTROL = {
    "name": "aichaos-clock",
    "provider": {"type": "python", "module": "aichaos.experiments.clock"},
}
# ChaosRun instances by key, so the control (called by module path) finds its run.
RUNS: dict[str, Any] = {}


def _run(configuration: dict | None) -> Any:
    return RUNS.get((configuration or {}).get(RUN_KEY, ""))


def before_activity_control(context: dict, configuration: dict | None = None, **kw: Any) -> None:
    run = _run(configuration)
    if run is None or run.phase == "rollback":
        return
    if run.stopping():
        raise InterruptExecution("aichaos: the run was stopped")
    if run.phase == "method":
        run.wait_for_start(context)
        if run.stopping():
            raise InterruptExecution("aichaos: the run was stopped")


def after_activity_control(
    context: dict, state: Any = None, configuration: dict | None = None, **kw: Any
) -> None:
    run = _run(configuration)
    if run is None or run.phase == "rollback":
        return
    if run.phase == "method":
        run.hold_window(context, configuration)
    if run.stopping():
        raise InterruptExecution("aichaos: the run was stopped")


def after_method_control(context: dict, configuration: dict | None = None, **kw: Any) -> None:
    run = _run(configuration)
    if run is not None and not run.stopping():
        run.settle()


def scale_schedule(experiment: dict[str, Any], factor: float) -> dict[str, Any]:
    """The experiment with every method action's ``at`` and ``duration`` multiplied by
    ``factor``: an experiment written for a scenario's full length keeps its shape in a run
    shortened (or lengthened) with ``--duration`` or ``--quick``."""
    import copy

    scaled = copy.deepcopy(experiment)
    for activity in scaled.get("method", []):
        timing = activity.get(SCHEDULE_EXTENSION)
        if isinstance(timing, dict):
            for key in ("at", "duration"):
                if isinstance(timing.get(key), int | float):
                    timing[key] = round(timing[key] * factor, 3)
    return scaled


def hold_through(experiment: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The experiment with every scheduled method action starting at time 0 and held for
    ``seconds``: the fault is in place for a whole step of ``aichaos sweep``."""
    import copy

    held = copy.deepcopy(experiment)
    for activity in held.get("method", []):
        timing = activity.get(SCHEDULE_EXTENSION)
        if isinstance(timing, dict):
            timing["at"] = 0
            timing["duration"] = round(seconds, 3)
    return held
