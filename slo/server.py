"""Server-side SLIs: PromQL through ``prometheus-api-client``, and series already collected in
the run's ``metrics.parquet``.

A PromQL objective is an instant query at the phase's end; ``$window`` in it becomes the
phase's length (``[120s]``), so ``histogram_quantile(0.95, sum by (le)
(rate(vllm:time_to_first_token_seconds_bucket[$window])))`` is the phase's p95 as the server
saw it. ``$tier`` becomes the tier when the objective is scoped to tiers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aichaos.rundir import METRICS_PARQUET


def render_query(query: str, start: float, end: float, tier: str | None = None) -> str:
    window = f"{max(1, math.ceil(end - start))}s"
    out = query.replace("$window", window)
    return out.replace("$tier", tier) if tier is not None else out


def query_value(url: str, query: str, at: float, timeout: float = 10.0) -> tuple[float | None, str]:
    """The first sample of an instant query's result, and a note when there is none."""
    from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
    from urllib3.util.retry import Retry

    try:
        # one quick retry: the client's default backs off for tens of seconds on a dead URL
        retry = Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504))
        prom = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=retry)
        result = prom.custom_query(query=query, params={"time": at})
    except (PrometheusApiClientException, OSError, ValueError) as exc:
        return None, f"Prometheus query failed: {str(exc).splitlines()[0][:200]}"
    except Exception as exc:  # requests raises its own ConnectionError family
        return None, f"Prometheus unreachable: {type(exc).__name__}: {str(exc)[:200]}"
    if isinstance(result, list):
        for sample in result:
            value = float(sample.get("value", [0, "nan"])[1])
            if math.isfinite(value):
                return value, ""
        return None, "the query returned no finite sample"
    if isinstance(result, dict) or (isinstance(result, tuple | list) and len(result) == 2):
        return float(result[1]), ""  # a scalar result
    return None, "unexpected result type"


class MetricsFile:
    """``metrics.parquet`` read once, filtered per objective."""

    def __init__(self, run_dir: Path):
        path = Path(run_dir) / METRICS_PARQUET
        self.note = ""
        self.table = None
        if path.exists():
            try:
                self.table = pq.read_table(path)
            except Exception as exc:  # a truncated file: evaluated without it
                self.note = f"{METRICS_PARQUET}: unreadable ({type(exc).__name__}); skipped"
        else:
            self.note = f"{METRICS_PARQUET}: missing"

    def values(self, metric: str, labels: dict[str, str], start: float, end: float) -> np.ndarray:
        if self.table is None:
            return np.empty(0)
        t = self.table
        mask = pc.and_(
            pc.equal(t.column("metric"), metric),
            pc.and_(pc.greater_equal(t.column("t"), start), pc.less_equal(t.column("t"), end)),
        )
        rows = t.filter(mask)
        if labels and rows.num_rows:
            keep = [
                all(json.loads(lbl or "{}").get(k) == v for k, v in labels.items())
                for lbl in rows.column("labels").to_pylist()
            ]
            rows = rows.filter(keep)
        return rows.column("value").to_numpy(zero_copy_only=False)


def aggregate(values: np.ndarray, agg: str) -> float | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    if agg == "p95":
        return float(np.percentile(values, 95))
    if agg == "last":
        return float(values[-1])
    return float(getattr(np, agg)(values))
