"""Server-side SLIs: PromQL objectives read through prometheus-api-client from a real
Prometheus (Debian package) scraping a real simulator, evaluated at the phase's end."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
import yaml
from conftest import free_port
from synthetic_run import make_run_dir

from aichaos.slo.evaluate import evaluate_run
from aichaos.slo.spec import SloSpec

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("CI"),
    reason="prometheus not installed (make test installs it; in CI its absence fails)",
)
REQUESTS, TOKENS = 12, 5
TTFT_P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[$window])))"
)


def _query(url: str, q: str) -> list:
    data = httpx.get(f"{url}/api/v1/query", params={"query": q}, timeout=5).json()
    return data["data"]["result"]


@pytest.fixture
def prometheus(tmp_path, start_sim):
    sim = start_sim("--profile", "fixed-latency", "--seed", "1")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": "llm", "static_configs": [{"targets": [f"127.0.0.1:{sim.port}"]}]}
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _query(url, 'up{job="llm"} == 1'):
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"Prometheus never scraped the simulator: {proc.poll()}")
        yield url, sim
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_promql_objectives_against_a_real_prometheus(prometheus, tmp_path):
    url, sim = prometheus
    t0 = time.time()
    time.sleep(1.2)  # one scrape before the traffic: rate() needs the counters' start
    with httpx.Client(timeout=10) as client:
        for _ in range(REQUESTS):
            body = {"prompt": "hi", "max_tokens": TOKENS, "ignore_eos": True}
            assert client.post(f"{sim.url}/v1/completions", json=body).status_code == 200
            time.sleep(0.15)
    want = REQUESTS * TOKENS
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = _query(url, "sum(vllm:generation_tokens_total)")
        if got and float(got[0]["value"][1]) >= want:
            break
        time.sleep(0.5)
    time.sleep(1.2)
    duration = time.time() - t0
    run = make_run_dir(
        tmp_path / "run",
        started_at=t0,
        duration_s=duration,
        rps=5,
        warmup_s=0,
        faults=[],
        with_metrics=False,
    )
    spec = SloSpec.from_dict(
        {
            "name": "server",
            "objectives": [
                {
                    "id": "tokens",
                    "sli": "promql",
                    "query": "sum(vllm:generation_tokens_total)",
                    "op": ">=",
                    "threshold": want,
                },
                {"id": "server-ttft-p95", "sli": "promql", "query": TTFT_P95, "threshold": "500ms"},
            ],
        },
        "test",
    )
    res = evaluate_run(run, spec, prometheus_url=url)
    rows = {r.id: r for r in res.objectives}
    assert rows["tokens@all"].value == want and rows["tokens@all"].status == "pass"
    ttft = rows["server-ttft-p95@all"]
    # the fixed-latency profile answers in 100 ms: the estimate sits in the bucket around it
    assert 0.05 <= ttft.value <= 0.25 and ttft.status == "pass"
    assert "[" in ttft.promql and "$window" not in ttft.promql
    assert {s.name for s in res.server} == {"tokens", "server-ttft-p95"}
    # without Prometheus (or with one that does not answer) the objective cannot be judged
    res = evaluate_run(run, spec, prometheus_url=f"http://127.0.0.1:{free_port()}")
    assert {r.status for r in res.objectives} == {"insufficient_data"}
    assert any("Prometheus" in n for n in res.data_notes)
    res = evaluate_run(run, spec)
    assert res.verdict == "insufficient_data"
