"""Whether a run's stack kept up with the load it was offered (``aichaos sweep``'s saturation
test), from the request records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aichaos.rundir import read_requests

SATURATED_BELOW = 0.9  # ended under this share of those sent in the window: saturated
BACKLOG_MIN = 3  # ... and by more than this many requests (noise at the window's edges)


@dataclass(frozen=True)
class Throughput:
    ended_rps: float  # requests that ended in the window, per second
    sent: int  # requests sent in the window
    ended: int  # requests that ended in the window
    errors: int  # requests of the whole run that ended in error
    saturated: bool


def keeping_up(run_dir: Path, t0: float, start: float, end: float) -> Throughput:
    """Requests sent and ended between ``start`` and ``end`` seconds after time 0 ``t0``: a
    stack that keeps up ends as many as it is sent, give or take those in flight at either
    edge; one that fell behind ends clearly fewer (by more than ``1 - SATURATED_BELOW`` of
    those sent and more than ``BACKLOG_MIN``): its queue grew."""
    table, _notes = read_requests(run_dir, ["t_scheduled", "t_sent", "done_s", "status"])
    if table.num_rows == 0 or end <= start:
        return Throughput(0.0, 0, 0, 0, False)
    frame = table.to_pandas()
    sent_at = frame["t_scheduled"] - t0
    ended_at = frame["t_sent"] + frame["done_s"] - t0
    sent = int(((sent_at >= start) & (sent_at <= end)).sum())
    ended = int(((ended_at >= start) & (ended_at <= end)).sum())
    saturated = sent - ended > max(BACKLOG_MIN, (1 - SATURATED_BELOW) * sent)
    errors = int((frame["status"] != "ok").sum())
    return Throughput(ended / (end - start), sent, ended, errors, saturated)
