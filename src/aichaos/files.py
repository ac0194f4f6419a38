"""Writing the small JSON files that processes share (``run.json``, ``stack.json``, the
pointer, health files). A reader must never see half a file, and two processes may write the
same file (the supervisor and the owner watch both write ``stack.json``), so each writer goes
through a temporary file of its own and an atomic rename. Standard library only: the owner
watch imports it at start-up."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["write_json"]
