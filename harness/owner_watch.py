"""The owner watch: a small process that outlives the owner of a stack, to clean up after it.

The supervisor runs inside its owner (``aichaos run``'s thread, or ``aichaos stack up``), and
the services run in their own sessions so that a Ctrl-C reaches the owner alone; a ``kill -9``
of the owner therefore leaves every service running, with whatever fault was in place. So the
supervisor starts this watch, in a session of its own, before any service: when the owner is
gone it rolls every fault back, stops the services and records the crash
(``orphans.clean_up``). When the stack stops normally the supervisor ends the watch (and the
watch also ends by itself once ``stack.json`` says the stack is over).

    python -m aichaos.harness.owner_watch RUN_DIR --owner-pid PID --owner-start-time TICKS

``aichaos chaos`` runs faults against a stack someone else owns (``stack up --detach``), whose
own watch sees a live owner; so it starts this watch on itself with ``--restore CONFIG``
(the experiment's configuration, JSON): when it dies, ``restore_all(CONFIG)`` undoes every
fault it knows of, and the stack keeps running. ``aichaos chaos`` ends the watch when done.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from aichaos.processes import ProcessRef, wait_until_gone

from .stack_state import StackNotFound, read_state  # lean: stdlib and aichaos.processes

FINISHED = ("stopped", "failed", "crashed")
LOG_NAME = "owner-watch.log"


def spawn(
    run_dir: Path, owner: ProcessRef, restore: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """Start the watch for ``owner``'s stack in ``run_dir`` (or, with ``restore``, for its
    faults only: ``restore_all(restore)``); its log is ``logs/owner-watch.log``."""
    command = [
        sys.executable,
        "-m",
        "aichaos.harness.owner_watch",
        str(run_dir),
        "--owner-pid",
        str(owner.pid),
        "--owner-start-time",
        str(owner.start_time),
        *(["--restore", json.dumps(restore)] if restore is not None else []),
    ]
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "logs" / LOG_NAME, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # neither the owner's kill nor its terminal's Ctrl-C reach it
        )


def _stack_over(run_dir: Path) -> bool:
    try:
        state = read_state(run_dir)
    except StackNotFound:
        return False  # not written yet, or being replaced
    return state.status in FINISHED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aichaos-owner-watch")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--owner-pid", type=int, required=True)
    parser.add_argument("--owner-start-time", type=float, required=True)
    parser.add_argument("--restore", help="JSON configuration: restore_all it, nothing else")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the owner's death or SIGTERM end it
    owner = ProcessRef(pid=args.owner_pid, start_time=args.owner_start_time)
    if args.restore is not None:
        return _restore_when_gone(owner, json.loads(args.restore))
    if not wait_until_gone(owner, stop=lambda: _stack_over(args.run_dir)):
        return 0
    if _stack_over(args.run_dir):  # it died after stopping the stack: nothing left to do
        return 0
    from .orphans import clean_up

    print(f"owner pid {owner.pid} is gone: rolling back and stopping the stack", flush=True)
    result = clean_up(args.run_dir, f"owner pid {owner.pid} died while the stack was running")
    for note in result.rollback:
        print(f"rollback: {note}", flush=True)
    print(f"stopped: {result.stopped}; run marked crashed: {result.run_marked}", flush=True)
    return 0


def _restore_when_gone(owner: ProcessRef, configuration: dict[str, Any]) -> int:
    """The faults of ``aichaos chaos`` outlive it only until this notices it died."""
    wait_until_gone(owner)
    from aichaos.experiments.safety import restore_all

    print(f"owner pid {owner.pid} is gone: restoring its faults", flush=True)
    for note in restore_all(configuration):
        print(f"restore: {note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
