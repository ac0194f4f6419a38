"""The shipped experiments (``experiments/library/*.json``) and loading any experiment file:
parsed (JSON or YAML), approved by the blast-radius policy (before anything it names is
imported), checked by chaoslib (activities resolvable), and aichaos's schedule fields checked;
any problem is one ``InputError`` line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from chaoslib.exceptions import ChaosException
from chaoslib.experiment import ensure_experiment_is_valid
from pydantic import BaseModel, ValidationError

from aichaos.documents import read_document
from aichaos.rundir import SCHEDULE_EXTENSION, InputError
from aichaos.schedule import ActionTiming, ExperimentTiming
from aichaos.validation import describe

from . import policy
from .policy import Permissions
from .registry import lookup

LIBRARY = Path(__file__).parent / "library"
SUFFIXES = (".json", ".yaml", ".yml")


T = TypeVar("T", bound=BaseModel)


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


def check_schedule(experiment: dict[str, Any], source: str | Path) -> None:
    """``x-aichaos`` fields (``schedule.py``): ``settle`` on the experiment; ``at`` and
    ``duration`` seconds and ``rollback`` the name of one of the experiment's rollbacks on a
    method action; every aichaos method action names its rollback."""
    rollbacks = {
        str(r.get("name")) for r in _list(experiment.get("rollbacks")) if isinstance(r, dict)
    }
    _timing(ExperimentTiming, experiment.get(SCHEDULE_EXTENSION) or {}, source, SCHEDULE_EXTENSION)
    for i, activity in enumerate(_list(experiment.get("method"))):
        if not isinstance(activity, dict):
            continue  # chaoslib's own checks name it
        where = f"method[{i}].{SCHEDULE_EXTENSION}"
        ext = activity.get(SCHEDULE_EXTENSION)
        provider = activity.get("provider")
        provider = provider if isinstance(provider, dict) else {}
        # one of aichaos's own actions (a fault it knows how to undo), by the registry
        ours = lookup(str(provider.get("module", "")), str(provider.get("func", "")))
        local = activity.get("type") == "action" and ours is not None
        if ext is None:
            if local:
                raise InputError(source, where, "an object naming the action's rollback")
            continue
        timing = _timing(ActionTiming, ext, source, where)
        if (local or timing.duration is not None) and timing.rollback not in rollbacks:
            names = ", ".join(sorted(rollbacks)) or "none"
            raise InputError(
                source, f"{where}.rollback", f"one of the rollbacks ({names})", timing.rollback
            )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _timing(model: type[T], raw: Any, source: str | Path, where: str) -> T:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        field, _, rest = describe(exc, model, where).partition(": expected ")
        raise InputError(source, field, rest) from None


def validate(experiment: dict[str, Any], source: str | Path) -> dict[str, Any]:
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(
            source, "experiment", f"a valid Chaos Toolkit experiment: {message}"
        ) from None
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        # chaoslib's checks assume the shapes they check (an env default of null, a key that
        # is a list): what trips them is a malformed file, said in one line like the rest
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise InputError(
            source, "experiment", f"a valid Chaos Toolkit experiment (chaoslib: {message})"
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
