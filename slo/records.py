"""Request records as numpy columns, sorted by send time, so a phase is one contiguous slice
and every SLI is a vectorised expression over it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aichaos.rundir import REQUESTS_DIR, read_requests


@dataclass
class Coded:
    """A string column as integer codes (-1 for null) and the names they stand for."""

    codes: np.ndarray
    names: list[str]

    def mask(self, *values: str) -> np.ndarray:
        wanted = [i for i, n in enumerate(self.names) if n in values]
        if not wanted:
            return np.zeros(self.codes.size, dtype=bool)
        return np.isin(self.codes, wanted)

    def value(self, i: int) -> str | None:
        c = int(self.codes[i])
        return None if c < 0 else self.names[c]


@dataclass
class Records:
    t_sent: np.ndarray
    t_scheduled: np.ndarray
    ok: np.ndarray
    ttft: np.ndarray  # NaN where not reached
    e2e: np.ndarray
    tpot: np.ndarray
    itl_values: np.ndarray  # all gaps, request after request
    itl_offsets: np.ndarray  # request i's gaps are itl_values[offsets[i]:offsets[i+1]]
    tier: Coded
    served_by: Coded
    error_kind: Coded
    http_status: np.ndarray  # -1 where null
    cached: np.ndarray
    degraded: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def n(self) -> int:
        return int(self.t_sent.size)

    def slice_of(self, start: float, end: float, inclusive_end: bool = False) -> slice:
        """The rows sent in [start, end) (or [start, end])."""
        i0 = int(np.searchsorted(self.t_sent, start, side="left"))
        i1 = int(np.searchsorted(self.t_sent, end, side="right" if inclusive_end else "left"))
        return slice(i0, max(i0, i1))

    def itl(self, rows: slice, mask: np.ndarray | None = None) -> np.ndarray:
        """Pooled ITL gaps of the requests in ``rows`` (and ``mask`` within them)."""
        a, b = self.itl_offsets[rows.start], self.itl_offsets[rows.stop]
        values = self.itl_values[a:b]
        if mask is None:
            return values
        lengths = np.diff(self.itl_offsets[rows.start : rows.stop + 1])
        return values[np.repeat(mask, lengths)]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def _ints(table: pa.Table, name: str, null: int) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return pc.fill_null(col, null).to_numpy(zero_copy_only=False).astype(np.int64)


def _bools(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)


def _coded(table: pa.Table, name: str) -> Coded:
    encoded = pc.dictionary_encode(table.column(name).combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    return Coded(codes, [str(v) for v in encoded.dictionary.to_pylist()])


def from_table(table: pa.Table) -> Records:
    # rows with no send time cannot be placed in any phase
    table = table.filter(pc.is_valid(table.column("t_sent")))
    order = pc.sort_indices(table.column("t_sent"))
    if table.num_rows and not bool(
        pc.all(pc.equal(order, pa.array(np.arange(table.num_rows)))).as_py()
    ):
        table = table.take(order)
    itl = table.column("itl_s").combine_chunks()
    if isinstance(itl, pa.ChunkedArray):  # an empty table gives back a chunked array
        itl = pa.array([], type=pa.list_(pa.float64()))
    raw = itl.offsets.to_numpy().astype(np.int64)
    offsets = raw - raw[0] if raw.size else np.zeros(1, dtype=np.int64)
    # the values the offsets point at (flatten() would drop those under null slots)
    flat = itl.values.slice(int(raw[0]), int(raw[-1] - raw[0])) if raw.size else pa.array([0.0])[:0]
    values = pc.fill_null(flat, np.nan).to_numpy(zero_copy_only=False)
    t_sent = _floats(table, "t_sent")
    t_sched = _floats(table, "t_scheduled")
    return Records(
        t_sent=t_sent,
        t_scheduled=np.where(np.isnan(t_sched), t_sent, t_sched),
        ok=pc.fill_null(pc.equal(table.column("status"), "ok"), False)
        .to_numpy(zero_copy_only=False)
        .astype(bool),
        ttft=_floats(table, "ttft_s"),
        e2e=_floats(table, "e2e_s"),
        tpot=_floats(table, "tpot_s"),
        itl_values=values.astype(np.float64, copy=False),
        itl_offsets=offsets,
        tier=_coded(table, "tier"),
        served_by=_coded(table, "served_by"),
        error_kind=_coded(table, "error_kind"),
        http_status=_ints(table, "http_status", -1),
        cached=_bools(table, "cached"),
        degraded=_bools(table, "degraded"),
        prompt_tokens=_ints(table, "prompt_tokens", 0),
        output_tokens=_ints(table, "output_tokens", 0),
    )


def chunk_gaps(run_dir: Path) -> list[str]:
    """Notes for chunks missing from a numbered sequence (``chunk-0003`` absent between
    ``chunk-0002`` and ``chunk-0004``): a lost chunk leaves no file to complain about."""
    folder = Path(run_dir) / REQUESTS_DIR
    numbered: dict[str, set[int]] = {}
    for path in folder.glob("*.parquet") if folder.is_dir() else []:
        m = re.match(r"^(.*?)(\d+)\.parquet$", path.name)
        if m:
            numbered.setdefault(m.group(1), set()).add(int(m.group(2)))
    notes = []
    for prefix, numbers in numbered.items():
        width = 4
        for k in sorted(set(range(min(numbers), max(numbers) + 1)) - numbers):
            notes.append(f"{REQUESTS_DIR}/{prefix}{k:0{width}d}.parquet: missing from the sequence")
    return notes


def load(run_dir: Path) -> tuple[Records, list[str]]:
    table, notes = read_requests(run_dir)
    return from_table(table), notes + chunk_gaps(run_dir)
