"""Everything the renderers show, read once from a run directory.

A report must render whatever a run left behind: an aborted run has no end time and maybe no
journal, a run that was never evaluated has no slo.json, a run against a bare target has no
server metrics; a run that did not finish is headlined by how it ended (``slo.completion``),
never as a pass. Missing pieces become notes in the report; only a directory that is not a run
at all (or a file that is not JSON, a run.json that is not a manifest, or a slo.json that is
not an evaluation) is an ``InputError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aichaos.reports import fmt
from aichaos.rundir import (
    JOURNAL_JSON,
    METRICS_PARQUET,
    REQUESTS_DIR,
    RUN_JSON,
    SLO_JSON,
    InputError,
    RunManifest,
    read_events,
    read_manifest,
)
from aichaos.slo.completion import Completion, run_completion
from aichaos.slo.result import ObjectiveRow, SloResult, read_result
from aichaos.slo.series import build_series


@dataclass
class RunData:
    run_dir: Path
    manifest: RunManifest | None  # None when the run directory has no run.json
    slo: SloResult | None
    journal: dict[str, Any] | None
    events: list[dict[str, Any]]
    series: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    completion: Completion | None = None  # how an unfinished run ended; None when it finished

    @property
    def run_id(self) -> str:
        slo_id = self.slo.run_id if self.slo is not None else None
        manifest_id = self.manifest.id if self.manifest is not None else None
        return manifest_id or slo_id or self.run_dir.name

    @property
    def status(self) -> str:
        """run.json's status as slo settled it (``running`` with a dead owner is crashed)."""
        if self.completion is not None:
            return self.completion.status
        status = self.manifest.recorded_status if self.manifest is not None else None
        return status or "unknown"

    @property
    def evaluated(self) -> bool:
        return self.slo is not None

    @property
    def incomplete(self) -> bool:
        """Aborted, still running, or the evaluator saw missing data."""
        return self.status != "completed" or (self.slo is not None and self.slo.incomplete)

    @property
    def verdict(self) -> str:
        """How the run ended when it did not finish (run.json may say so only after slo.json
        was written), else the evaluation's verdict."""
        if self.completion is not None:
            return self.completion.verdict
        return self.slo.verdict if self.slo is not None else "not_evaluated"

    @property
    def score(self) -> float | None:
        """The run's score; an unfinished run has none, whatever its recorded part scored."""
        if self.completion is not None or self.slo is None:
            return None
        return self.slo.score

    @property
    def phases_ran(self) -> str | None:
        """What of an unfinished run ran; None when it finished."""
        return None if self.completion is None else fmt.phases_ran(self.completion)

    @property
    def headline(self) -> str:
        """One line every view opens with: "ABORTED — baseline ran, fault:x ran 7 s of 30 s,
        recovery did not run" or "PASS — score 97/100"."""
        word = fmt.status_label(self.verdict).upper()
        if self.phases_ran is not None:
            return f"{word} — {self.phases_ran}"
        if fmt.is_number(self.score):
            return f"{word} — score {fmt.number(self.score)}/100"
        return word

    @property
    def has_server_metrics(self) -> bool:
        return self.series.get("server") is not None

    @property
    def objectives(self) -> list[ObjectiveRow]:
        return self.slo.objectives if self.slo is not None else []


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(run_dir, "RUN_DIR", "an existing run directory")
    present = [n for n in (RUN_JSON, SLO_JSON, REQUESTS_DIR) if (run_dir / n).exists()]
    if not present:
        raise InputError(run_dir, "RUN_DIR", f"a run directory holding {RUN_JSON} or {SLO_JSON}")
    notes: list[str] = []
    manifest = read_manifest(run_dir)
    if manifest is None:
        notes.append(f"{RUN_JSON} missing: run facts unknown")
    slo = read_result(run_dir)
    if slo is None:
        notes.append(f"{SLO_JSON} missing: this run was not evaluated")
    journal = _journal(run_dir / JOURNAL_JSON, notes)
    events, _ = read_events(run_dir)
    if not (run_dir / METRICS_PARQUET).exists():
        notes.append(f"{METRICS_PARQUET} missing: no server metrics")
    phases = [p.model_dump(mode="json") for p in slo.phases] if slo is not None else []
    series = build_series(run_dir, phases or None)
    notes += series.get("notes", [])
    notes += slo.data_notes if slo is not None else []
    done = run_completion(manifest, slo, events)  # slo judges how it ended; we render it
    return RunData(run_dir, manifest, slo, journal, events, series, notes, done)


def _journal(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """The Chaos Toolkit journal is the toolkit's own file: a broken one is a note, not a
    reason to refuse the whole report."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        notes.append(f"{JOURNAL_JSON}: unreadable, not shown")
        return None
    return data if isinstance(data, dict) else None
