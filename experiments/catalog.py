"""The shipped experiments (``experiments/library/*.json``) and loading any experiment file:
parsed (JSON or YAML), approved by the blast-radius policy (before anything it names is
imported), checked by chaoslib (activities resolvable), and aichaos's schedule fields checked;
any problem is one ``InputError`` line."""

from __future__ import annotations

import math
from numbers import Number
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ChaosException
from chaoslib.experiment import ensure_experiment_is_valid

from aichaos.documents import read_document
from aichaos.rundir import SCHEDULE_EXTENSION, InputError
from aichaos.units import MAX_DURATION_S

from . import policy
from .policy import Permissions
from .registry import lookup

LIBRARY = Path(__file__).parent / "library"
SUFFIXES = (".json", ".yaml", ".yml")


def _library_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(LIBRARY.iterdir()) if p.suffix in SUFFIXES}


def list_experiments() -> list[tuple[str, str]]:
    """``(name, title)`` of every shipped experiment, Kubernetes ones (``k8s-*``) included."""
    found = []
    for name, path in _library_files().items():
        try:
            title = str(_parse(path).get("title", ""))
        except InputError as exc:
            title = f"(unreadable: {exc})"
        found.append((name, title))
    return found


def resolve(ref: str | Path) -> Path:
    """A shipped experiment's file by name, else the file ``ref``."""
    text = str(ref)
    library = _library_files()
    if text in library:
        return library[text]
    path = Path(text)
    if path.is_file():
        return path
    names = ", ".join(library)
    raise InputError(text, "experiment", f"a file or a shipped experiment ({names})")


def _parse(path: Path) -> dict[str, Any]:
    data = read_document(path)
    if not isinstance(data, dict):
        raise InputError(path, "experiment", "an object with title, description and method")
    return data


def _number(value: Any) -> bool:
    """Seconds: a finite number from 0 to the longest duration any input may give."""
    if isinstance(value, bool) or not isinstance(value, Number):
        return False
    return math.isfinite(value) and 0 <= value <= MAX_DURATION_S


def check_schedule(experiment: dict[str, Any], source: str | Path) -> None:
    """``x-aichaos`` fields: ``at`` and ``duration`` seconds, ``rollback`` the name of one of
    the experiment's rollbacks; every aichaos method action names its rollback."""
    rollbacks = {r.get("name") for r in experiment.get("rollbacks") or [] if isinstance(r, dict)}
    top = experiment.get(SCHEDULE_EXTENSION) or {}
    if not isinstance(top, dict) or not _number(top.get("settle", 0)):
        raise InputError(source, f"{SCHEDULE_EXTENSION}.settle", "seconds (a number >= 0)", top)
    for i, activity in enumerate(experiment.get("method") or []):
        where = f"method[{i}].{SCHEDULE_EXTENSION}"
        ext = activity.get(SCHEDULE_EXTENSION)
        provider = activity.get("provider") or {}
        # one of aichaos's own actions (a fault it knows how to undo), by the registry
        ours = lookup(str(provider.get("module", "")), str(provider.get("func", "")))
        local = activity.get("type") == "action" and ours is not None
        if ext is None:
            if local:
                raise InputError(source, where, "an object naming the action's rollback")
            continue
        if not isinstance(ext, dict):
            raise InputError(source, where, "an object with at, duration, rollback", ext)
        unknown = set(ext) - {"at", "duration", "rollback"}
        if unknown:
            raise InputError(source, where, "only at, duration, rollback", sorted(unknown))
        for key in ("at", "duration"):
            if key in ext and not _number(ext[key]):
                raise InputError(source, f"{where}.{key}", "seconds (a number >= 0)", ext[key])
        undo = ext.get("rollback")
        if (local or "duration" in ext) and undo not in rollbacks:
            names = ", ".join(sorted(str(r) for r in rollbacks)) or "none"
            raise InputError(source, f"{where}.rollback", f"one of the rollbacks ({names})", undo)


def validate(experiment: dict[str, Any], source: str | Path) -> dict[str, Any]:
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(
            source, "experiment", f"a valid Chaos Toolkit experiment: {message}"
        ) from None
    check_schedule(experiment, source)
    return experiment


def read_experiment(ref: str | Path) -> dict[str, Any]:
    """A shipped experiment by name, or an experiment file, parsed only (nothing imported)."""
    return _parse(resolve(ref))


def load_experiment(ref: str | Path, permissions: Permissions | None = None) -> dict[str, Any]:
    """A shipped experiment by name, or an experiment file: approved by the policy with
    ``permissions`` (none beyond the default when not given), then validated."""
    path = resolve(ref)
    experiment = _parse(path)
    policy.check(experiment, path, permissions or Permissions())
    return validate(experiment, path)
