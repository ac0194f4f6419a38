"""Light load for the chaos tests: a few closed-loop workers streaming unique questions to the
gateway, one request record per answer (REQUEST_SCHEMA) flushed to ``RUN_DIR/requests/``
every second so the live-run probes see them. Bounded in requests and time."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from aichaos.rundir import REQUEST_COLUMNS, REQUEST_SCHEMA, REQUESTS_DIR


def _record(**values: Any) -> dict[str, Any]:
    row = dict.fromkeys(REQUEST_COLUMNS)
    row.update(values)
    return row


class LightLoad:
    def __init__(
        self,
        gateway: str,
        run_dir: Path,
        workers: int = 2,
        max_tokens: int = 6,
        deadline_ms: int | None = None,
        max_requests: int = 2000,
        max_seconds: float = 60.0,
    ):
        self.gateway = gateway
        self.folder = Path(run_dir) / REQUESTS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.workers, self.max_tokens, self.deadline_ms = workers, max_tokens, deadline_ms
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.rows: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count()
        self._chunks = itertools.count()
        self._threads = [threading.Thread(target=self._worker, args=(i,)) for i in range(workers)]
        self._flusher = threading.Thread(target=self._flush_loop)

    def __enter__(self) -> LightLoad:
        for t in (*self._threads, self._flusher):
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        for t in (*self._threads, self._flusher):
            t.join(timeout=40)
        self._flush()
        return self.rows

    def _flush(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
        if rows:
            table = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
            pq.write_table(table, self.folder / f"chunk-{next(self._chunks):05d}.parquet")

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._flush()

    def _worker(self, worker: int) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=40) as client:
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                n = next(self._ids)
                if n >= self.max_requests:
                    return
                row = self._one(client, n, f"w{worker}")
                with self._lock:
                    self.rows.append(row)
                    self._pending.append(row)

    def _one(self, client: httpx.Client, n: int, worker: str) -> dict[str, Any]:
        # a unique question each time: the gateway's cache must not hide the fault
        body = {"messages": [{"role": "user", "content": f"chaos test question {n} {time.time()}"}],
                "max_tokens": self.max_tokens, "ignore_eos": True, "stream": True}  # fmt: skip
        headers = {"X-Tier": "enterprise"}
        if self.deadline_ms:
            headers["X-Deadline-Ms"] = str(self.deadline_ms)
        t_sent = time.time()
        start = time.monotonic()
        base = dict(request_id=str(n), worker=worker, scenario="chaos-test", tier="enterprise",
                    t_scheduled=t_sent, t_sent=t_sent)  # fmt: skip
        ttft = None
        tokens = 0
        try:
            url = f"{self.gateway}/v1/chat/completions"
            with client.stream("POST", url, json=body, headers=headers) as resp:
                served = resp.headers.get("x-served-by")
                if resp.status_code != 200:
                    resp.read()
                    kind = "http_429" if resp.status_code == 429 else (
                        "http_5xx" if resp.status_code >= 500 else "http_4xx")  # fmt: skip
                    return _record(**base, status="error", http_status=resp.status_code,
                                   error_kind=kind, served_by=served,
                                   e2e_s=time.monotonic() - start)  # fmt: skip
                for line in resp.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if "error" in data:
                        return _record(**base, status="error", http_status=200,
                                       error_kind="stream_error", served_by=served, ttft_s=ttft,
                                       e2e_s=time.monotonic() - start,
                                       error_detail=str(data["error"].get("message")))  # fmt: skip
                    for choice in data.get("choices") or []:
                        if (choice.get("delta") or {}).get("content"):
                            tokens += 1
                            if ttft is None:
                                ttft = time.monotonic() - start
            return _record(**base, status="ok", http_status=200, served_by=served, ttft_s=ttft,
                           e2e_s=time.monotonic() - start, output_tokens=tokens,
                           token_source="counted")  # fmt: skip
        except httpx.TimeoutException as exc:
            return _record(**base, status="error", error_kind="timeout", error_detail=str(exc))
        except httpx.HTTPError as exc:
            return _record(**base, status="error", error_kind="connect", error_detail=str(exc))
