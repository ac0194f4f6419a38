"""The one way to kill a service on purpose (a replica-kill fault, ``aichaos stack``'s own
kill, the supervisor's): signal its process group only while its leader is still the process
recorded, and say so in the run's timeline (a ``kill`` event), whoever did it.
"""

from __future__ import annotations

import signal

from .processes import signal_group
from .rundir import EventKind, EventLog


def kill_service(events: EventLog | None, name: str, pid: int, start_time: float | None,
                 sig: int = signal.SIGKILL) -> bool:  # fmt: skip
    """Signal the group of service ``name`` (led by ``pid``, started at ``start_time``) and
    write the ``kill`` event; False, and no event, when that process is gone."""
    if not signal_group(pid, sig, start_time):
        return False
    if events is not None:
        detail = {"pid": pid, "signal": signal.Signals(sig).name}
        events.emit(EventKind.KILL, name, "instant", detail)
    return True
