"""A baseline directory: the last N accepted runs, the newest one the regression baseline.

``promote`` copies a run's evaluation inputs (run.json, requests/, events.jsonl,
metrics.parquet, journal.json, slo.json) into ``BASELINE_DIR/<run id>/`` and records the
order in ``baselines.json``; older runs beyond ``keep`` are deleted from the directory.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from aichaos.rundir import (
    EVENTS_JSONL,
    JOURNAL_JSON,
    METRICS_PARQUET,
    REQUESTS_DIR,
    RUN_JSON,
    SLO_JSON,
    InputError,
    read_manifest,
    write_json,
)

from .result import read_result

INDEX = "baselines.json"
COPIED = (RUN_JSON, EVENTS_JSONL, METRICS_PARQUET, JOURNAL_JSON, SLO_JSON)


def _index(baseline_dir: Path) -> list[dict]:
    path = Path(baseline_dir) / INDEX
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (json.JSONDecodeError, AttributeError):
        raise InputError(path, "runs", "a baselines.json written by aichaos") from None
    return [e for e in entries if (Path(baseline_dir) / e["dir"]).is_dir()]


def promote(run_dir: Path, baseline_dir: Path, keep: int = 10) -> Path:
    """Copy ``run_dir`` into ``baseline_dir`` as the newest accepted run; keep the last
    ``keep``. A run whose slo.json failed is refused (a failed run is no baseline)."""
    run_dir, baseline_dir = Path(run_dir), Path(baseline_dir)
    if keep < 1:
        raise InputError(baseline_dir, "keep", "at least 1", keep)
    if not (run_dir / REQUESTS_DIR).is_dir():
        raise InputError(run_dir, REQUESTS_DIR, "a run directory with request records")
    evaluation = read_result(run_dir)
    if evaluation is not None and evaluation.verdict == "fail":
        raise InputError(
            run_dir / SLO_JSON, "verdict", "a run that passed its SLOs to promote", "fail"
        )
    manifest = read_manifest(run_dir)
    run_id = (manifest.id if manifest is not None else None) or run_dir.name
    baseline_dir.mkdir(parents=True, exist_ok=True)
    target = baseline_dir / run_id
    if target.exists():
        shutil.rmtree(target)
    tmp = baseline_dir / f".{run_id}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(run_dir / REQUESTS_DIR, tmp / REQUESTS_DIR)
    for name in COPIED:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, tmp / name)
    tmp.rename(target)
    entries = [e for e in _index(baseline_dir) if e["dir"] != run_id]
    entries.append({"dir": run_id, "promoted_at": time.time(), "source": str(run_dir)})
    for old in entries[:-keep]:
        shutil.rmtree(baseline_dir / old["dir"], ignore_errors=True)
    write_json(baseline_dir / INDEX, {"runs": entries[-keep:]})
    return target


def runs(baseline_dir: Path) -> list[Path]:
    """Accepted runs, oldest first."""
    return [Path(baseline_dir) / e["dir"] for e in _index(Path(baseline_dir))]


def latest(baseline_dir: Path) -> Path | None:
    """The newest accepted run, or None. A plain run directory given as the baseline is
    itself the baseline."""
    baseline_dir = Path(baseline_dir)
    if (baseline_dir / REQUESTS_DIR).is_dir():
        return baseline_dir
    found = runs(baseline_dir)
    return found[-1] if found else None
