"""Server-side series: PromQL's histogram_quantile semantics and the exposition parsing."""

from __future__ import annotations

import math

import pyarrow.parquet as pq

from aichaos.harness.server_metrics import histogram_quantile, scrape_rows, write_metrics
from aichaos.rundir import METRICS_SCHEMA

EXPOSITION = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 30.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 40.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 40.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 9.0
# HELP other_metric Not kept.
# TYPE other_metric gauge
other_metric 1.0
"""


def test_histogram_quantile_interpolates_inside_the_bucket():
    buckets = [(0.1, 10.0), (0.5, 30.0), (math.inf, 40.0)]
    # rank 0.5 * 40 = 20: halfway through the (0.1, 0.5] bucket
    assert math.isclose(histogram_quantile(0.5, buckets), 0.3)
    assert math.isclose(histogram_quantile(0.25, buckets), 0.1)
    # in the +Inf bucket Prometheus answers the highest finite bound
    assert histogram_quantile(0.95, buckets) == 0.5
    assert histogram_quantile(0.95, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_scrape_keeps_the_contract_series_only():
    rows, buckets = scrape_rows("llm-1", EXPOSITION, 100.0)
    assert [(r[1], r[2], r[4]) for r in rows] == [("llm-1", "vllm:num_requests_running", 3.0)]
    assert buckets == [(0.1, 10.0), (0.5, 30.0), (math.inf, 40.0)]


def test_metrics_parquet_follows_the_schema(tmp_path):
    rows, _ = scrape_rows("llm-1", EXPOSITION, 100.0)
    path = write_metrics(tmp_path, rows)
    assert pq.read_table(path).schema.equals(METRICS_SCHEMA)
    assert write_metrics(tmp_path / "none", []) is None
