"""The run directory: the contract every folder of aichaos writes to and reads from.

DESIGN.md names the files; this module fixes their exact shape so that ``scenarios`` (request
records), ``experiments`` and the supervisor (events), ``harness`` (manifest, server metrics),
``slo`` (evaluation) and ``reports`` (rendering) agree without importing one another. It sits at
the package root because every folder depends on it and it depends on none of them.

Files (all timestamps Unix epoch seconds, float):

- ``run.json``         manifest (``RunManifest``), written by harness.
- ``requests/*.parquet`` request records in chunks (``RequestRecord``, which defines
  ``REQUEST_SCHEMA``), written by scenarios.
- ``events.jsonl``     timeline, one JSON object a line (``EventLog``).
- ``metrics.parquet``  server-side samples in long form (``METRICS_SCHEMA``), written by harness.
- ``journal.json``     the Chaos Toolkit journal, unchanged.
- ``slo.json``         the evaluation (shape in ``slo/`` — ``SLO_SCHEMA_VERSION`` there).
- ``report.html``, ``summary.md``, ``junit.xml``, ``summary.json`` — reports.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypedDict, get_args, get_origin, get_type_hints

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, JsonValue, field_validator

from .errors import InputError as InputError  # every reader's error, re-exported
from .files import write_json as write_json  # the contract's writer, re-exported
from .processes import ProcessRef
from .validation import read_json_model

RUN_JSON = "run.json"
REQUESTS_DIR = "requests"
EVENTS_JSONL = "events.jsonl"
METRICS_PARQUET = "metrics.parquet"
JOURNAL_JSON = "journal.json"
SLO_JSON = "slo.json"
REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"
JUNIT_XML = "junit.xml"
SUMMARY_JSON = "summary.json"

# ``crashed``: the run's owner died without finishing (``kill -9``, OOM); a run.json still
# saying ``running`` whose owner is gone is read as crashed (``RunManifest.settled_status``).
RunStatus = Literal["running", "completed", "aborted", "failed", "crashed"]


class FaultProxy(BaseModel):
    """The local fault proxy ``aichaos run --target`` put in front of the user's endpoint."""

    url: str
    upstream: str


class RunManifest(BaseModel):
    """``run.json``: the one shape of every run directory's manifest, whichever command wrote
    it (``aichaos run``, ``load``, ``chaos``). The resolved inputs are kept as the documents
    they are (enough for ``--replay``); a field an older or newer aichaos wrote is kept. Every
    writer fills ``owner``, ``command``, ``versions`` and ``started_at``; a run.json written
    by hand (or before owners were recorded) may lack them, and is read all the same."""

    model_config = ConfigDict(extra="allow")

    id: str  # run id, also the directory name
    kind: Literal["run", "load", "chaos"] = "run"  # the command that wrote it
    status: RunStatus = "running"  # see ``recorded_status`` for a file that has none
    problem: str | None = None  # why it did not complete, in one line
    owner: ProcessRef | None = None  # the process running it: read as crashed once it is gone
    command: list[str] = []  # argv
    versions: dict[str, str] = {}  # aichaos, python, locust, chaostoolkit-lib...
    seed: int | None = None
    started_at: float | None = None  # epoch seconds
    t0: float | None = None  # the load's time 0, once it started
    ended_at: float | None = None  # None while running
    scenario: dict[str, JsonValue] | None = None  # resolved, its file under "source"
    experiment: dict[str, JsonValue] | None = None  # resolved
    slo: dict[str, JsonValue] | None = None  # the resolved SLO spec
    warmup_s: float = 0.0  # seconds at the start excluded from every phase but "all"
    duration_s: float | None = None
    target: str | None = None  # URL the load was sent to
    fault_proxy: FaultProxy | None = None
    # {"topology": path, "services": {...}, "proxies": {...}}; None for --target
    stack: dict[str, JsonValue] | None = None
    options: dict[str, JsonValue] | None = None  # aichaos run's options
    workers: int | None = None
    prometheus_url: str | None = None
    metrics_rows: dict[str, int] | None = None  # metrics.parquet rows by metric

    @field_validator("owner", mode="before")
    @classmethod
    def _usable_owner(cls, value: Any) -> Any:
        # an owner recorded in a shape no ProcessRef has is no owner: never read as crashed
        return value if value is None or isinstance(value, ProcessRef) else ProcessRef.parse(value)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_as_text(cls, value: Any) -> Any:
        # a hand-written run.json may give a version as a number or a flag
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else str(v) for k, v in value.items()}
        return value

    @property
    def recorded_status(self) -> RunStatus | None:
        """``status`` as run.json has it; None for a file without one (written by hand), which
        is judged by its objectives alone."""
        return self.status if "status" in self.model_fields_set else None

    def settled_status(self) -> RunStatus | None:
        """The run's status as it really is: ``running`` only while its owner lives, ``crashed``
        once the owner is gone (a run.json written before owners were recorded stays as it
        is); None when run.json records no status."""
        status = self.recorded_status
        if status == "running" and self.owner is not None and not self.owner.alive():
            return "crashed"
        return status

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RUN_JSON, self.model_dump(mode="json"))


# run.json keys every reader may rely on (more may be present).
RUN_FIELDS = tuple(RunManifest.model_fields)
RUN_STATUSES = get_args(RunStatus)

# The key, on an experiment and on each of its method activities, of aichaos's schedule
# (``at``, ``duration``, ``rollback``; ``settle`` on the experiment). experiments writes and
# runs it; slo reads it from run.json's ``experiment`` for the planned phases.
SCHEDULE_EXTENSION = "x-aichaos"


class RequestRecord(TypedDict):
    """One row per request (DESIGN "Request record"): the stopwatch fills it, the record
    writer turns it into a Parquet row, ``REQUEST_SCHEMA`` is derived from it. Latencies in
    seconds; None (null) when not reached. A TypedDict, not a class: the stopwatch fills one
    per request on the load's hot path, where a plain dict costs least."""

    request_id: str
    worker: str
    scenario: str
    tier: str
    t_scheduled: float
    t_sent: float | None
    ttft_s: float | None
    e2e_s: float | None
    # seconds from t_sent to when the request ended for the client: the answer's last
    # byte, the error, the cut or the timeout (a bad event happens then)
    done_s: float | None
    tpot_s: float | None
    itl_s: list[float]
    # the server's usage.prompt_tokens when it reports it, else the intended count
    prompt_tokens: int | None
    output_tokens: int | None
    token_source: str | None  # usage | counted
    status: str  # ok | error
    http_status: int | None  # None when no response (connect error, timeout)
    # one of ERROR_KINDS; None when ok
    error_kind: str | None
    error_detail: str | None
    served_by: str | None  # X-Served-By, None when the target does not say
    cached: bool | None
    degraded: bool | None
    # prompt lengths (DESIGN "Metric definitions"): what the load meant to send, in the
    # target's tokens, and what the server said it got (None when it did not say)
    intended_prompt_tokens: int | None
    served_prompt_tokens: int | None
    length_source: str  # one of LENGTH_SOURCES
    length_capped: bool  # cut so prompt + max output fit max_model_len
    # a conversation's turn (scenario ``workload.sessions``): the conversation's id and the
    # turn's number in it, 1 for the first; None for a request outside conversations (and in
    # chunks written before these columns)
    session: str | None
    turn: int | None


_ARROW_TYPES = {
    str: pa.string(),
    float: pa.float64(),
    int: pa.int64(),
    bool: pa.bool_(),
    list[float]: pa.list_(pa.float64()),
}


def _arrow_type(hint: Any) -> pa.DataType:
    args = (
        [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) is UnionType else []
    )
    return _ARROW_TYPES[args[0] if args else hint]


# every column nullable: a chunk written by an older aichaos may lack a column (read as nulls)
REQUEST_SCHEMA = pa.schema(
    [(name, _arrow_type(hint)) for name, hint in get_type_hints(RequestRecord).items()]
)
# where a record's intended lengths were counted: the server's /tokenize, the scenario's
# tokenizer file, or one token per word (approximate)
LENGTH_SOURCES = ("tokenize", "tokenizer", "estimate")
REQUEST_COLUMNS = tuple(REQUEST_SCHEMA.names)
ERROR_KINDS = (
    "connect",
    "timeout",
    "reset",
    "http_4xx",
    "http_429",
    "http_5xx",
    "stream_error",
    "incomplete_stream",
)

# Server-side samples, long form: one row per (time, series). ``labels`` is a JSON object
# string with the series' labels (sorted keys); ``source`` names the scraped service.
METRICS_SCHEMA = pa.schema(
    [
        ("t", pa.float64()),
        ("source", pa.string()),
        ("metric", pa.string()),
        ("labels", pa.string()),
        ("value", pa.float64()),
    ]
)

# The series the harness collects into metrics.parquet (Prometheus range queries or direct
# scrapes of every /metrics give the same names). Counters are cumulative values; ``:p95``
# series are derived from histogram buckets over a 15 s window, as histogram_quantile does.
SERVER_SERIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:time_to_first_token_seconds:p95",
    "gateway_breaker_state",  # labels {"dependency": ...}: 0 closed, 1 half-open, 2 open
    "gateway_in_flight",
)

# events.jsonl: {t, source, kind, name, action, detail}
EVENT_ACTIONS = ("start", "end", "instant")


class EventKind(StrEnum):
    """Every kind of event written to ``events.jsonl``, shared by its writers and readers."""

    RUN = "run"  # harness: the game day, start (t0) and end
    LOAD = "load"  # the load: start and end (``aichaos load``), warnings, refused workers
    EVALUATION = "evaluation"  # harness: the SLO evaluation, start and end
    # harness, when Ctrl-C or SIGTERM stops a run: ``t`` is when the signal came, ``name`` the
    # signal, ``detail.during`` the stage it came in (load, evaluation, rendering...)
    INTERRUPT = "interrupt"
    # the owner watch, when the process owning a run or stack dies: detail says who died,
    # which faults were rolled back and which processes were stopped
    OWNER_GONE = "owner_gone"
    EXPERIMENT = "experiment"  # experiments: the Chaos Toolkit run, start and end
    FAULT = "fault"  # experiments: a fault window, start and end (the phases come from them)
    ROLLBACK = "rollback"  # experiments and the owner watch: a rollback ran
    STACK = "stack"  # supervisor: the stack, start, ready and end
    PROMETHEUS = "prometheus"  # supervisor: Prometheus skipped
    EXTERNAL = "external"  # supervisor: a service given by url, never started
    START = "start"  # supervisor: a process started
    READY = "ready"  # supervisor: a service answers its readiness check
    NOT_READY = "not_ready"  # supervisor: a service that did not get ready
    PROXIES = "proxies"  # supervisor: the fault proxies configured
    EXIT = "exit"  # supervisor: a process exited
    RESTART = "restart"  # supervisor: a process restarted
    KILL = "kill"  # supervisor: a process killed on purpose (a replica-kill fault)
    STOP = "stop"  # supervisor and the owner watch: a process stopped


# the names the readers of how a run stopped know them by
OWNER_GONE = EventKind.OWNER_GONE
INTERRUPT = EventKind.INTERRUPT


class EventLog:
    """Appends timeline events to ``events.jsonl``: one ``write`` per event, so lines from the
    supervisor, the experiments and the harness interleave whole."""

    def __init__(self, path: Path, source: str):
        self.path = Path(path)
        self.source = source
        self._lock = threading.Lock()

    def emit(
        self,
        kind: EventKind,
        name: str,
        action: str = "instant",
        detail: dict[str, Any] | None = None,
        t: float | None = None,
    ) -> dict[str, Any]:
        if action not in EVENT_ACTIONS:
            raise ValueError(f"event action must be one of {EVENT_ACTIONS}, got {action!r}")
        kind = EventKind(kind)  # a kind no reader knows is a writer's bug
        event = {
            "t": time.time() if t is None else t,
            "source": self.source,
            "kind": kind.value,
            "name": name,
            "action": action,
            "detail": detail or {},
        }
        line = json.dumps(event, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        return event


def read_events(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every whole event in time order, and notes on lines that could not be read (a run
    killed mid-write leaves a truncated last line)."""
    path = Path(run_dir) / EVENTS_JSONL
    if not path.exists():
        return [], [f"{path}: missing"]
    events, notes = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            notes.append(f"{path}:{n}: unreadable line skipped")
    # a hand-edited or foreign line may lack a numeric time: it sorts first instead of failing
    events.sort(key=lambda e: e["t"] if isinstance(e.get("t"), int | float) else 0.0)
    return events, notes


@dataclass
class FaultWindow:
    """One fault window from ``events.jsonl``: a ``fault`` start event and the next ``fault``
    end event of the same name (epoch seconds). ``end`` is None while the fault is on;
    ``open`` marks a fault still on when a finished run stopped (its end is the run's end)."""

    name: str
    start: float
    end: float | None = None
    open: bool = False
    activity: str | None = None
    experiment: str | None = None
    at: float | None = None  # the schedule's offset from the run's time 0
    duration: float | None = None
    rollback: str | None = None  # the rollback the schedule names to end it
    arguments: dict[str, Any] = field(default_factory=dict)


def fault_windows(
    events: Sequence[dict[str, Any]], run_end: float | None = None, since: float | None = None
) -> tuple[list[FaultWindow], list[str]]:
    """The fault windows in start order, and notes; the one derivation of them (the verdict's
    phases, the charts' shading, a running experiment's progress). Events before ``since``
    are left out. With ``run_end``, a window never ended runs to it and is ``open``; without,
    its ``end`` stays None (still on)."""
    notes: list[str] = []
    started: dict[str, list[FaultWindow]] = {}
    windows: list[FaultWindow] = []
    for e in events:
        if e.get("kind") != EventKind.FAULT or (since is not None and float(e["t"]) < since):
            continue
        detail = e.get("detail") or {}
        name = str(e.get("name"))
        if e.get("action") == "start":
            window = FaultWindow(
                name,
                float(e["t"]),
                activity=detail.get("activity"),
                experiment=detail.get("experiment"),
                at=detail.get("at"),
                duration=detail.get("duration"),
                rollback=detail.get("rollback"),
                arguments=dict(detail.get("arguments") or {}),
            )
            started.setdefault(name, []).append(window)
            windows.append(window)
        elif e.get("action") == "end":
            if started.get(name):
                started[name].pop(0).end = float(e["t"])
            else:
                notes.append(f"events.jsonl: fault {name!r} ended without a start; ignored")
    if run_end is not None:
        for window in windows:
            if window.end is None:
                window.end, window.open = max(run_end, window.start), True
                notes.append(
                    f"events.jsonl: fault {window.name!r} never ended; window runs to the run's end"
                )
    windows.sort(key=lambda w: w.start)
    return windows, notes


def read_requests(
    run_dir: Path, columns: Sequence[str] | None = None
) -> tuple[pa.Table, list[str]]:
    """The request chunks as one table with ``REQUEST_SCHEMA`` (or its ``columns`` only, in
    that order), and notes on what could not be read: a truncated or unreadable chunk is
    skipped with a note, a column a chunk lacks (written by an older aichaos) is nulls. The
    only reader of the records: every other module takes its table."""
    import pyarrow.parquet as pq

    schema = pa.schema([REQUEST_SCHEMA.field(c) for c in columns]) if columns else REQUEST_SCHEMA
    folder = Path(run_dir) / REQUESTS_DIR
    if not folder.is_dir():
        return schema.empty_table(), [f"{folder}: missing"]
    tables, notes = [], []
    # one chunk at a time: a thread pool over files cost more CPU than it saved on 2 cores
    for path in sorted(folder.glob("*.parquet")):
        try:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[f.name for f in schema if f.name in present])
        except (OSError, pa.ArrowException) as exc:
            notes.append(f"{path.name}: unreadable chunk skipped ({exc})")
            continue
        tables.append(_conform(table, schema))
    if not tables:
        return schema.empty_table(), notes
    return pa.concat_tables(tables), notes


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for column in schema:
        if column.name in table.column_names:
            columns.append(table.column(column.name).cast(column.type))
        else:
            columns.append(pa.nulls(table.num_rows, column.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The run's run.json, or None when it has none; ``InputError`` (exit 2) for a file that is
    not JSON or not a manifest."""
    return read_json_model(Path(run_dir) / RUN_JSON, RunManifest)
