"""The state of a running stack on disk, so another shell can find and stop it.

``RUN_DIR/stack.json`` is written by the supervisor after every change (atomically: a
reader never sees half a file). A pointer, ``./.aichaos/stack.json`` by default, names the
run directory of the stack started from this directory.

Processes are identified by PID *and* their start time (``aichaos.processes``), so a PID the
kernel has since given to an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

from aichaos.files import write_json
from aichaos.processes import process_alive, signal_group
from aichaos.stackfile import StackNotFound, StackState, read_stack_state
from aichaos.waiting import wait_until

STATE_FILE = "stack.json"
# set by the supervisor on every service it starts, to the stack's run directory: how a
# clean-up tells the stack's processes from whatever a state file names
STACK_MARKER = "AICHAOS_STACK"
DEFAULT_POINTER = Path(".aichaos") / "stack.json"
DEFAULT_RUNS = Path("runs")  # where `aichaos run` and `aichaos stack up` put run directories


# --- processes -------------------------------------------------------------------------------


def stop_groups(groups: list[tuple[int, float | None]], timeout: float = 5.0) -> None:
    """Stop process groups led by ``(pid, start_time)`` that are not our children: SIGTERM,
    then SIGKILL after ``timeout``. A leader that is not the recorded process is left alone."""
    live = [pid for pid, started in groups if process_alive(pid, started)]
    for pid in live:
        signal_group(pid, signal.SIGTERM)
    wait_until(lambda: not any(process_alive(pid) for pid in live), timeout)
    for pid in live:  # the leader's children too, if it left any
        signal_group(pid, signal.SIGKILL)


# --- files -----------------------------------------------------------------------------------


def read_state(run_dir: Path) -> StackState:
    return read_stack_state(run_dir / STATE_FILE)


def write_pointer(pointer: Path, run_dir: Path, supervisor_pid: int) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    ignore = pointer.parent / ".gitignore"
    if pointer.parent.name == ".aichaos" and not ignore.exists():
        ignore.write_text("*\n")  # local state, never committed
    write_json(pointer, {"run_dir": str(run_dir.resolve()), "supervisor_pid": supervisor_pid})


def clear_pointer(pointer: Path, run_dir: Path) -> None:
    """Remove the pointer if it still names ``run_dir`` (a newer stack may have replaced it)."""
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if data.get("run_dir") == str(run_dir.resolve()):
        pointer.unlink(missing_ok=True)


def find_run_dir(run_dir: Path | None = None, pointer: Path = DEFAULT_POINTER) -> Path:
    """The run directory of the stack to act on: ``run_dir`` if given, else the pointer's."""
    if run_dir is not None:
        return run_dir
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        return Path(data["run_dir"])
    except FileNotFoundError:
        raise StackNotFound(
            f"no stack started from this directory ({pointer} does not exist); "
            "pass --run-dir or run `aichaos stack up`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackNotFound(f"{pointer}: unreadable stack pointer: {exc}") from None


def stack_places(pointer: Path = DEFAULT_POINTER, *more: Path) -> list[Path]:
    """Where stacks started from this directory live: the pointer's run directory, the
    default runs folder, and ``more`` (run directories, or folders of them)."""
    places = [*more, DEFAULT_RUNS]
    # no pointer, or one we cannot read: the folders still count
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        places.insert(0, Path(json.loads(pointer.read_text(encoding="utf-8"))["run_dir"]))
    return [p for p in places if p.exists()]
