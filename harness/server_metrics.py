"""Server-side metrics of a run into ``metrics.parquet`` (``aichaos.rundir.METRICS_SCHEMA``).

Two sources give the same series (``rundir.SERVER_SERIES``):

- ``PrometheusSource``: range queries through ``prometheus-api-client`` against the stack's own
  Prometheus or one the user names (``--prometheus-url``);
- ``Scraper``: when no Prometheus is there, a thread reads every ``/metrics`` once a second.

Histogram quantiles (TTFT p95) are derived as ``histogram_quantile`` does: from the increase
of each cumulative bucket over a window, interpolating linearly inside the bucket.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from aichaos.rundir import METRICS_PARQUET, METRICS_SCHEMA
from aichaos.waiting import wait_until

GAUGES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total",
    "gateway_breaker_state",
    "gateway_in_flight",
)
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
TTFT_P95 = f"{TTFT_HISTOGRAM}:p95"
QUANTILE_WINDOW_S = 15.0

Row = tuple[float, str, str, str, float]  # t, source, metric, labels (JSON), value


def _labels(labels: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    return json.dumps({k: v for k, v in sorted(labels.items()) if k not in drop})


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``q`` of a histogram given as ``(upper bound, cumulative count)`` pairs, as Prometheus
    computes it; None when it holds no observation."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # Prometheus answers the highest finite bound
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def scrape_rows(source: str, text: str, t: float) -> tuple[list[Row], list[tuple[float, float]]]:
    """The kept series of one exposition, and the TTFT histogram's buckets (summed over its
    label sets) for the quantile."""
    rows: list[Row] = []
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in GAUGES:
                rows.append((t, source, sample.name, _labels(sample.labels), float(sample.value)))
            elif sample.name == f"{TTFT_HISTOGRAM}_bucket":
                buckets[float(sample.labels["le"])] += float(sample.value)
    return rows, sorted(buckets.items())


class Scraper:
    """Reads each source's ``/metrics`` every ``interval`` seconds in a background thread."""

    def __init__(self, sources: dict[str, str], interval: float = 1.0):
        self.sources = sources  # name -> base URL
        self.interval = interval
        self.rows: list[Row] = []
        self._history: dict[str, list[tuple[float, list[tuple[float, float]]]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aichaos-scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> list[Row]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.rows

    def _loop(self) -> None:
        with httpx.Client(timeout=self.interval) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                for name, url in self.sources.items():
                    self._scrape(client, name, url)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _scrape(self, client: httpx.Client, name: str, url: str) -> None:
        t = time.time()
        try:
            response = client.get(f"{url}/metrics")
        except httpx.HTTPError:
            return  # a replica being killed is what the game day is about: a gap, not an error
        if response.status_code != 200:
            return
        try:
            rows, buckets = scrape_rows(name, response.text, t)
        except ValueError:
            return  # not a Prometheus exposition (an arbitrary --target)
        self.rows.extend(rows)
        if buckets:
            self._add_quantile(name, t, buckets)

    def _add_quantile(self, name: str, t: float, buckets: list[tuple[float, float]]) -> None:
        history = self._history[name]
        history.append((t, buckets))
        while history and t - history[0][0] > QUANTILE_WINDOW_S:
            history.pop(0)
        then = dict(history[0][1])
        increase = [(le, count - then.get(le, 0.0)) for le, count in buckets]
        if min((c for _, c in increase), default=0.0) < 0:  # a restarted replica reset them
            increase = buckets
        value = histogram_quantile(0.95, increase)
        if value is not None:
            self.rows.append((t, name, TTFT_P95, "{}", value))


class PrometheusSource:
    """Range queries for the run's window against a Prometheus server."""

    def __init__(self, url: str):
        from prometheus_api_client import PrometheusConnect

        self.url = url
        self.client = PrometheusConnect(url=url, disable_ssl=True)

    def wait_scraping(self, timeout: float = 15.0) -> bool:
        """Wait until every target has been scraped once: Prometheus answers ready before its
        target discovery hands the first targets over (a few seconds later), and samples of
        a run's first seconds would be missing."""
        return bool(wait_until(self._scraped_once, timeout, interval=0.25))

    def _scraped_once(self) -> bool:
        try:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        active = targets.get("data", {}).get("activeTargets", [])
        return bool(active) and all(t.get("lastScrape", "").startswith("2") for t in active)

    def queries(self) -> dict[str, str]:
        window = f"{int(QUANTILE_WINDOW_S)}s"
        bucket_rate = f"rate({TTFT_HISTOGRAM}_bucket[{window}])"
        found = {name: f'{{__name__="{name}"}}' for name in GAUGES}
        found[TTFT_P95] = f"histogram_quantile(0.95, sum by (service, le) ({bucket_rate}))"
        return found

    def collect(self, start: float, end: float, step: float = 1.0) -> list[Row]:
        from datetime import UTC, datetime

        rows: list[Row] = []
        begin = datetime.fromtimestamp(start, tz=UTC)
        finish = datetime.fromtimestamp(max(end, start + step), tz=UTC)
        for metric, query in self.queries().items():
            result = self.client.custom_query_range(
                query, start_time=begin, end_time=finish, step=f"{step:g}s"
            )
            for series in result:
                labels = dict(series.get("metric", {}))
                source = labels.get("service") or labels.get("job") or labels.get("instance", "")
                tags = _labels(labels, drop=("__name__", "service", "job", "instance"))
                for t, value in series.get("values", []):
                    number = float(value)
                    if not math.isnan(number):
                        rows.append((float(t), source, metric, tags, number))
        return rows


def write_metrics(run_dir: Path, rows: list[Row]) -> Path | None:
    """``metrics.parquet`` from ``rows``; None (no file) when there are none."""
    if not rows:
        return None
    columns = list(zip(*sorted(rows), strict=True))
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, METRICS_SCHEMA, strict=True)]
    table = pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA)
    path = Path(run_dir) / METRICS_PARQUET
    pq.write_table(table, path)
    return path


def metrics_summary(rows: list[Row]) -> dict[str, int]:
    """Row counts by metric, for the manifest."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row[2]] += 1
    return dict(counts)
