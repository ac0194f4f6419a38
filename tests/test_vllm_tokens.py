"""The built-in scenarios sent straight at a real vLLM engine: the prompt tokens it serves are
the intended ones (within ±1% for at least 99% of requests) and no request exceeds its context.

vLLM runs from its own environment: ``$AICHAOS_VLLM_PYTHON``, else ``./.venv-vllm/bin/python``
(``make vllm-env``). Without one the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import VLLM_CONTEXT as CONTEXT
from conftest import VLLM_READY_S

from aichaos.rundir import read_requests
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.spec import builtin_names, load_scenario

REPO = Path(__file__).resolve().parents[1]
# short runs of every built-in scenario (burst: to its first burst at 20 s; soak: to a session's
# second turn; chat-sessions: conversations of several turns, 0.6 a second)
DURATIONS = {"steady": 10.0, "diurnal": 10.0, "burst": 30.0, "tiered": 10.0, "soak": 25.0,
             "chat-sessions": 30.0}  # fmt: skip

pytestmark = pytest.mark.timeout(VLLM_READY_S + 600)


@pytest.fixture
def engine(vllm_engine):
    return vllm_engine


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_scenario_served_in_the_intended_tokens(engine, name, tmp_path):
    s = load_scenario(name, duration_s=DURATIONS.get(name, 10.0))
    runner = LoadRunner(s, engine.url, tmp_path)
    summary = runner.size_prompts()
    assert summary["source"] == "tokenize" and summary["max_model_len"] == CONTEXT
    runner.start()
    assert runner.wait(timeout=s.duration_s + 120, kill=True) == 0, runner.log_tail()
    rows = read_requests(tmp_path)[0].to_pylist()
    assert len(rows) > 10
    # nothing over the context: no 400, every planned length fits
    refused = [r for r in rows if r["http_status"] == 400]
    assert not refused, refused[0]["error_detail"]
    assert all(r["intended_prompt_tokens"] + r["output_tokens"] <= CONTEXT for r in rows)
    served = [r for r in rows if r["served_prompt_tokens"] is not None]
    assert len(served) >= 0.99 * len(rows)
    within = [
        r for r in served
        if abs(r["served_prompt_tokens"] - r["intended_prompt_tokens"])
        <= 0.01 * r["intended_prompt_tokens"]
    ]  # fmt: skip
    share = len(within) / len(served)
    print(f"{name}: {len(within)}/{len(served)} within ±1% ({share:.1%}), "
          f"capped {summary['capped']}, sizing {summary['seconds']}s", file=sys.stderr)  # fmt: skip
    assert share >= 0.99
