"""Request records as numpy columns, sorted by the time that places them in a phase, so a
phase is one contiguous slice and every SLI is a vectorised expression over it.

A record is placed by when its event reached the client, as a server's counters count it
(DESIGN "Metric definitions"): a request, good or bad, by when it ended (``t_done``: the
answer's last byte, the error, the cut or the timeout), a TTFT sample by when its first token
came (``t_first``). ``Views`` holds the records in each of those orders; a request sent in
the baseline and cut by the fault belongs to the fault. Records written before ``done_s``
existed are placed by their send time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
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
    intended_prompt_tokens: np.ndarray  # -1 where null (records written before the column)
    served_prompt_tokens: np.ndarray  # -1 where the server did not report usage
    length_source: Coded
    length_capped: np.ndarray
    turn: np.ndarray  # a conversation's turn, 1 for the first; 0 outside conversations
    t_done: np.ndarray  # when the request ended for the client; t_sent on older records
    t_at: np.ndarray  # the time the rows are sorted by and phases sliced on

    @property
    def n(self) -> int:
        return int(self.t_sent.size)

    @property
    def t_first(self) -> np.ndarray:
        """When the first token reached the client; when the request ended if none did."""
        return np.where(np.isnan(self.ttft), self.t_done, self.t_sent + self.ttft)

    def slice_of(self, start: float, end: float, inclusive_end: bool = False) -> slice:
        """The rows placed in [start, end) (or [start, end]) by ``t_at``."""
        i0 = int(np.searchsorted(self.t_at, start, side="left"))
        i1 = int(np.searchsorted(self.t_at, end, side="right" if inclusive_end else "left"))
        return slice(i0, max(i0, i1))

    def by(self, times: np.ndarray, itl: bool = True) -> Records:
        """These records placed by ``times`` (one per row): sorted by them, ``t_at`` = them;
        without their ITL gaps (the bulk of a run's bytes) when ``itl`` is False."""
        if self.n < 2 or not np.any(np.diff(times) < 0):
            return replace(self, t_at=times) if itl else replace(self.without_itl(), t_at=times)
        order = np.argsort(times, kind="stable")
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Coded):
                out[f.name] = Coded(value.codes[order], value.names)
            elif f.name not in ("itl_values", "itl_offsets", "t_at"):
                out[f.name] = value[order]
        if not itl:
            return Records(**out, **_no_itl(self.n), t_at=times[order])
        values, offsets = _reorder_itl(self.itl_values, self.itl_offsets, order)
        return Records(**out, itl_values=values, itl_offsets=offsets, t_at=times[order])

    def without_itl(self) -> Records:
        return replace(self, **_no_itl(self.n))

    def itl(self, rows: slice, mask: np.ndarray | None = None) -> np.ndarray:
        """Pooled ITL gaps of the requests in ``rows`` (and ``mask`` within them)."""
        a, b = self.itl_offsets[rows.start], self.itl_offsets[rows.stop]
        values = self.itl_values[a:b]
        if mask is None:
            return values
        lengths = np.diff(self.itl_offsets[rows.start : rows.stop + 1])
        return values[np.repeat(mask, lengths)]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    # pyarrow turns null floats into NaN on the way to numpy
    col = table.column(name).to_numpy()
    return col.astype(np.float64, copy=False)


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


# what the evaluator reads: the free-text and id columns are left on disk
COLUMNS = (
    "tier",
    "t_scheduled",
    "t_sent",
    "ttft_s",
    "e2e_s",
    "done_s",
    "tpot_s",
    "itl_s",
    "prompt_tokens",
    "output_tokens",
    "status",
    "http_status",
    "error_kind",
    "served_by",
    "cached",
    "degraded",
    "intended_prompt_tokens",
    "served_prompt_tokens",
    "length_source",
    "length_capped",
    "turn",
)


def _no_itl(n: int) -> dict[str, np.ndarray]:
    return {"itl_values": np.zeros(0), "itl_offsets": np.zeros(n + 1, dtype=np.int64)}


def _reorder_itl(values: np.ndarray, offsets: np.ndarray, order: np.ndarray):
    """The ITL gaps regrouped so request ``order[i]``'s gaps come i-th, in blocks of requests
    so the gather index never holds more than one block."""
    lengths = np.diff(offsets)[order]
    new_offsets = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty_like(values)
    starts = offsets[:-1][order]
    block = 8192  # requests per step: the index arrays stay cache-sized
    for b in range(0, order.size, block):
        e = min(b + block, order.size)
        ln = lengths[b:e]
        a, z = new_offsets[b], new_offsets[e]
        if z == a:
            continue
        # each gap's source index: its request's old start + its place within the request
        shift = np.repeat(starts[b:e] - new_offsets[b:e], ln)
        out[a:z] = values[np.arange(a, z) + shift]
    return out, new_offsets


def _itl_arrays(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """All gaps in one float array (one copy, chunk by chunk) and per-request offsets."""
    lengths, parts = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
    for chunk in column.chunks:
        raw = chunk.offsets.to_numpy().astype(np.int64)
        lengths.append(np.diff(raw))
        # the values the offsets point at (flatten() would drop those under null slots)
        part = chunk.values.slice(int(raw[0]), int(raw[-1] - raw[0]))
        parts.append(part.to_numpy(zero_copy_only=False))
    all_lengths = np.concatenate(lengths)
    offsets = np.zeros(all_lengths.size + 1, dtype=np.int64)
    np.cumsum(all_lengths, out=offsets[1:])
    return np.concatenate(parts).astype(np.float64, copy=False), offsets


def from_table(table: pa.Table) -> Records:
    # rows with no send time cannot be placed in any phase (filtering copies every column,
    # ITL lists included, so only when there are such rows)
    if table.column("t_sent").null_count:
        table = table.filter(pc.is_valid(table.column("t_sent")))
    values, offsets = _itl_arrays(table.column("itl_s"))
    t_sent = _floats(table, "t_sent")
    t_sched = _floats(table, "t_scheduled")
    done = _floats(table, "done_s")
    t_done = np.where(np.isnan(done), t_sent, t_sent + done)
    records = Records(
        t_sent=t_sent,
        t_scheduled=np.where(np.isnan(t_sched), t_sent, t_sched),
        ok=pc.fill_null(pc.equal(table.column("status"), "ok"), False)
        .to_numpy(zero_copy_only=False)
        .astype(bool),
        ttft=_floats(table, "ttft_s"),
        e2e=_floats(table, "e2e_s"),
        tpot=_floats(table, "tpot_s"),
        itl_values=values,
        itl_offsets=offsets,
        tier=_coded(table, "tier"),
        served_by=_coded(table, "served_by"),
        error_kind=_coded(table, "error_kind"),
        http_status=_ints(table, "http_status", -1),
        cached=_bools(table, "cached"),
        degraded=_bools(table, "degraded"),
        prompt_tokens=_ints(table, "prompt_tokens", 0),
        output_tokens=_ints(table, "output_tokens", 0),
        intended_prompt_tokens=_ints(table, "intended_prompt_tokens", -1),
        served_prompt_tokens=_ints(table, "served_prompt_tokens", -1),
        length_source=_coded(table, "length_source"),
        length_capped=_bools(table, "length_capped"),
        turn=_ints(table, "turn", 0),
        t_done=t_done,
        t_at=t_sent,
    )
    return records.by(t_sent)


class Views:
    """One run's records in each order that places them in phases: ``sent`` (by send time:
    the schedule, failover), ``ended`` (by ``t_done``: requests, errors and every SLI but
    TTFT) and ``first`` (by ``t_first``: TTFT samples). A request still open at the run's
    ``end`` is placed at the end, so it counts in the run and in the phase that closes it."""

    def __init__(self, records: Records, end: float | None = None):
        self.end = end if end is not None else math.inf
        self.ended = records.by(np.minimum(records.t_done, self.end))
        # the ITL gaps are read in one order only: one copy of them, not three
        self.first = records.by(np.minimum(records.t_first, self.end), itl=False)
        self.sent = records.without_itl()

    def of(self, sli: str) -> Records:
        """The order a sample of ``sli`` is placed in (``requests`` for requests)."""
        return self.first if sli == "ttft" else self.ended

    def rows(self, sli: str, start: float, end: float, whole: bool = False) -> slice:
        """The rows of ``of(sli)`` placed in [start, end); the end is included for the whole
        run and for a phase that closes the run."""
        return self.of(sli).slice_of(start, end, inclusive_end=whole or end >= self.end)

    def carried_in(self, start: float, end: float, whole: bool = False) -> int:
        """Requests placed in [start, end) but sent before ``start``: they straddle the
        phase's opening boundary and count in it."""
        rows = self.rows("requests", start, end, whole)
        return int((self.ended.t_sent[rows] < start).sum())


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
    table, notes = read_requests(run_dir, COLUMNS)
    return from_table(table), notes + chunk_gaps(run_dir)
