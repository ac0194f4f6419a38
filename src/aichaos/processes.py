"""Processes identified by PID *and* start time (``/proc/PID/stat``), so a PID the kernel has
since given to an unrelated process is never taken for the one started earlier. Shared by the
supervisor (harness) and the replica-kill activities (experiments), which must not import
each other."""

from __future__ import annotations

from pathlib import Path


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int | None, start_time: int | None = None) -> bool:
    """``pid`` runs and, when ``start_time`` is given, is the process that started then."""
    if not pid:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    return start_time is None or started == start_time


__all__ = ["process_alive", "process_start_time"]
