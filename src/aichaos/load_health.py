"""The load generator's progress file: ``load/<runner>.progress.json`` in the run directory.

The Locust master (or the standalone Locust process) rewrites it twice a second with its
totals (``LoadProgress``): the load runner reads it for the live progress line, and ``slo``
and ``reports`` read its health part (``LoadHealth``): the worker connections the master
refused (a wrong token, or none) and the request rows it dropped because they came from such
a client. Written by ``scenarios``, read by ``harness``, ``slo`` and ``reports``, which must not
import each other.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

LOAD_DIR = "load"
PROGRESS_SUFFIX = ".progress.json"
REFUSALS_KEPT = 20  # the file lists the first few; the count covers all


class Refusal(BaseModel):
    """One client the master would not let join (its Locust client id, which it chose)."""

    t: float
    client: str
    why: str


class LoadHealth(BaseModel):
    refused_workers: int = 0
    dropped_rows: int = 0
    refused: list[Refusal] = []

    def merged(self, other: LoadHealth) -> LoadHealth:
        return LoadHealth(
            refused_workers=self.refused_workers + other.refused_workers,
            dropped_rows=self.dropped_rows + other.dropped_rows,
            refused=(self.refused + other.refused)[:REFUSALS_KEPT],
        )


class LoadProgress(LoadHealth):
    """The totals so far, over every Locust process of one load runner."""

    scheduled: int = 0  # requests in the schedule (closed loop: as the workers report them)
    sent: int = 0
    done: int = 0
    errors_by_kind: dict[str, int] = {}
    rps: float = 0.0  # sent per second over the last 5 s
    ttft_p95_s: float | None = None  # over the most recent answers
    lag_p99_s: float | None = None  # how late requests went out against their schedule
    elapsed_s: float = 0.0
    t0: float | None = None
    workers: list[str] = []
    warnings: list[str] = []  # the latest few
    finished: bool = False
    updated_at: float | None = None


def read_load_health(run_dir: Path) -> LoadHealth:
    """Summed over every load runner of the run; a missing or unreadable file counts nothing
    (a run without distributed load has nothing to say here)."""
    total = LoadHealth()
    folder = Path(run_dir) / LOAD_DIR
    for path in sorted(folder.glob(f"*{PROGRESS_SUFFIX}")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            total = total.merged(LoadHealth.model_validate(data, strict=False))
        except (OSError, ValueError, ValidationError):
            continue
    return total


def load_health_notes(run_dir: Path) -> list[str]:
    """What a report says about the load generator's health (nothing when all is well)."""
    health = read_load_health(run_dir)
    if not health.refused_workers and not health.dropped_rows:
        return []
    return [
        f"load: {health.refused_workers} worker connection(s) refused for lacking the run's "
        f"token; {health.dropped_rows} request row(s) they sent were dropped, none recorded"
    ]


__all__ = [
    "LOAD_DIR",
    "LoadHealth",
    "Refusal",
    "load_health_notes",
    "read_load_health",
]
