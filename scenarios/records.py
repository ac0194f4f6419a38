"""Request records to Parquet chunks in ``RUN_DIR/requests/``.

A chunk is written every couple of seconds (and at the end), through a temporary name and a
rename, so a reader (a live probe, the SLO evaluation) never sees half a file and a crash
loses at most the rows of one chunk. Chunk names carry the writer's prefix (runner id and
worker) and the process id, so several runners writing into one run directory never collide.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from aichaos.rundir import REQUEST_SCHEMA, REQUESTS_DIR, RequestRecord


def rows_to_table(rows: list[RequestRecord]) -> pa.Table:
    columns = {name: [row.get(name) for row in rows] for name in REQUEST_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=REQUEST_SCHEMA)


def warm_up() -> None:
    """Encode one throw-away chunk: pyarrow's first Parquet write spends ~0.3 s initialising,
    which must happen before the schedule starts, not in the middle of it."""
    from .stopwatch import Planned, new_record

    row = new_record(Planned("warm-up", "", 0.0, 0), "", "")
    pq.write_table(rows_to_table([row]), io.BytesIO(), compression="zstd")


class RecordWriter:
    def __init__(self, run_dir: Path, prefix: str):
        self.folder = Path(run_dir) / REQUESTS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = f"{prefix}-{os.getpid()}"
        self.pending: list[RequestRecord] = []
        self.chunks = 0
        self.rows = 0

    def add(self, row: RequestRecord) -> None:
        self.pending.append(row)

    def extend(self, rows: list[RequestRecord]) -> None:
        self.pending.extend(rows)

    def flush(self) -> Path | None:
        if not self.pending:
            return None
        rows, self.pending = self.pending, []
        table = rows_to_table(rows)
        path = self.folder / f"{self.prefix}-{self.chunks:05d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        self.chunks += 1
        self.rows += len(rows)
        return path
