"""Real vLLM replicas in the embedded stack, as a user runs them: one short game day
(``aichaos run --backend vllm``) on the project's own ``.venv-vllm`` and built model.

One run serves every test here (engines take a minute or two to start on two cores): while it
runs, the openai SDK streams through its gateway; once it is over, its run directory shows the
provider outage served by the fallback, the killed replica restarted, and real preemptions
read from the engines' ``/metrics`` (each replica's KV cache is 17 blocks of 128 tokens: several
requests are admitted, then outgrow it).

Skipped only when there is no vLLM environment and ``CI`` is not set; under CI it must run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, vllm_python, wait_for

from aichaos.harness.topology import load_topology
from aichaos.rundir import read_requests
from aichaos.slo.records import COLUMNS

DATA = REPO / "tests" / "data" / "vllm_gameday"
KV_BLOCKS = 17  # of 128 tokens on the CPU build, one kept back: 2048 tokens, a few requests
START_TIMEOUT_S = 600.0  # two engines on two busy cores, plus building the model
RUN_TIMEOUT_S = 1200.0

pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + START_TIMEOUT_S)


def _small_kv_topology(path: Path) -> Path:
    """The default topology with each replica's KV cache cut to KV_BLOCKS blocks."""
    data = load_topology(REPO / "fixtures" / "topology" / "default.yaml").model_dump()
    for service in data["services"]:
        if service["kind"] == "llm":
            # without prefix caching: the retrieved sources repeat, and shared blocks would
            # leave room for every request
            service["engine"] = {"max_model_len": (KV_BLOCKS - 1) * 128, "max_num_seqs": 32,
                                 "kv_blocks": KV_BLOCKS, "prefix_caching": False}  # fmt: skip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class GameDay:
    """``aichaos run --backend vllm`` in the background; its run directory once it exists."""

    def __init__(self, tmp: Path, python: str):
        self.out = tmp / "runs"
        command = [
            str(Path(sys.executable).parent / "aichaos"), "run", "--backend", "vllm",
            "--topology", str(_small_kv_topology(tmp / "topology.yaml")),
            "--scenario", str(DATA / "scenario.yaml"),
            "--experiment", str(DATA / "experiment.json"),
            "--slo", "default", "--out", str(self.out),
        ]  # fmt: skip
        env = {**os.environ, "AICHAOS_VLLM_PYTHON": python}
        self.log = tmp / "run.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp
            )
        self.code: int | None = None

    @property
    def run_dir(self) -> Path:
        return wait_for(lambda: next(self.out.glob("*/run.json"), None), 60, "run.json").parent

    def gateway_url(self) -> str:
        def ready() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"aichaos run exited early:\n{self.log.read_text()[-3000:]}")
            try:
                state = json.loads((self.run_dir / "stack.json").read_text())
            except (OSError, ValueError):
                return None
            gateway = state["services"]["gateway"]
            return gateway["url"] if state["status"] == "ready" else None

        return wait_for(ready, START_TIMEOUT_S, "the vLLM stack ready", interval=1.0)

    def service_url(self, name: str) -> str:
        return json.loads((self.run_dir / "stack.json").read_text())["services"][name]["url"]

    def finish(self) -> int:
        if self.code is None:
            self.code = self.proc.wait(RUN_TIMEOUT_S)
        return self.code

    def events(self) -> list[dict]:
        lines = (self.run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def game_day(tmp_path_factory):
    run = GameDay(tmp_path_factory.mktemp("vllm"), vllm_python())
    try:
        yield run
    finally:
        if run.proc.poll() is None:  # a failed test: stop the run as Ctrl-C would
            run.proc.send_signal(2)
            run.proc.wait(120)


def test_openai_sdk_streams_from_real_vllm_through_the_gateway(game_day):
    client = openai.OpenAI(base_url=f"{game_day.gateway_url()}/v1", api_key="test", timeout=60)
    text = []
    raw = client.chat.completions.with_raw_response.create(
        model="aichaos-rag",
        messages=[{"role": "user", "content": "How do I open a file in Python?"}],
        max_tokens=24,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    served_by = raw.headers.get("x-served-by")
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert text, "no token streamed"
    # the load starts after this request: a vLLM replica answers, not the fallback
    assert served_by in ("llm-1", "llm-2")
    replica = httpx.get(f"{game_day.service_url('llm-2')}/v1/models", timeout=30).json()
    assert replica["data"][0]["id"] == "aichaos-tiny" and replica["data"][0]["owned_by"] == "vllm"


def test_game_day_survives_an_outage_and_a_replica_kill(game_day):
    code = game_day.finish()
    run_dir = game_day.run_dir
    slo = json.loads((run_dir / "slo.json").read_text())
    assert code in (0, 1, 4), game_day.log.read_text()[-3000:]
    assert code == {"fail": 1, "inconclusive": 4}.get(slo["verdict"], 0)
    assert (run_dir / "report.html").exists() and (run_dir / "junit.xml").exists()
    events = game_day.events()
    killed = [
        e for e in events
        if e["kind"] == "exit" and e["name"] == "llm-1" and e["detail"].get("signal") == "SIGKILL"
    ]  # fmt: skip
    assert killed, "llm-1 never exited on SIGKILL"
    after = [e["kind"] for e in events if e["name"] == "llm-1" and e["t"] > killed[0]["t"]]
    assert "restart" in after and "ready" in after, after
    table, _ = read_requests(run_dir, COLUMNS)
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 0.9 * len(rows), f"{len(rows) - len(ok)} of {len(rows)} requests failed"
    served = {r["served_by"] for r in ok}
    assert {"llm-1", "llm-2", "fallback"} <= served, served


def test_kv_pressure_shows_real_preemptions_from_vllm_metrics(game_day):
    game_day.finish()
    metrics = pq.read_table(game_day.run_dir / "metrics.parquet").to_pylist()
    preemptions = [m["value"] for m in metrics if m["metric"] == "vllm:num_preemptions_total"]
    assert preemptions, "no vllm:num_preemptions_total series in metrics.parquet"
    assert max(preemptions) > 0, "the engines never preempted"
    # the report draws them: its preemptions panel has a figure with a rate above zero
    html = (game_day.run_dir / "report.html").read_text()
    data = html.split('<script type="application/json" id="chart-data">', 1)[1]
    figure = json.loads(data.split("</script>", 1)[0])["figures"]["server-preemptions"]
    assert any(y and y > 0 for t in figure["data"] for y in t.get("y") or []), figure["data"]
