"""Trace replay reproduces the trace's (scaled, windowed) timestamps and token lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aichaos.rundir import InputError
from aichaos.scenarios.payload import prompt_parts
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.spec import Scenario

TRACES = Path(__file__).parent / "data" / "traces"


def replay(fmt: str, name: str, **trace) -> Scenario:
    return Scenario.from_dict(
        {"seed": 1, "trace": {"format": fmt, "path": str(TRACES / name), **trace}}
    )


def test_azure_trace_replays_timestamps_and_lengths():
    df = pd.read_csv(TRACES / "azure_code_sample.csv")
    stamps = pd.to_datetime(df.TIMESTAMP)
    want_t = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy()
    s = replay("azure", "azure_code_sample.csv", time_scale=0.5)
    sched = build_schedule(s)
    assert np.allclose(sched.t, want_t * 0.5, atol=1e-6)
    assert sched.prompt_tokens.tolist() == df.ContextTokens.tolist()
    assert sched.output_tokens.tolist() == df.GeneratedTokens.tolist()
    assert s.duration_s == pytest.approx(want_t[-1] * 0.5, abs=0.01)  # the trace's span


def test_burstgpt_window_and_scale():
    df = pd.read_csv(TRACES / "burstgpt_sample.csv")
    s = replay("burstgpt", "burstgpt_sample.csv", start=40, end=165, time_scale=0.1)
    sched = build_schedule(s)
    t = df.Timestamp.to_numpy(dtype=float) - df.Timestamp.iloc[0]
    keep = (t >= 40) & (t < 165)
    assert np.allclose(sched.t, (t[keep] - 40) * 0.1)
    assert sched.prompt_tokens.tolist() == df["Request tokens"][keep].tolist()
    # a failed request in the trace (0 response tokens) still asks for one token
    assert sched.output_tokens.tolist() == np.maximum(df["Response tokens"][keep], 1).tolist()


def test_mooncake_hash_ids_become_shared_prefixes():
    s = replay("mooncake", "mooncake_sample.jsonl")
    sched = build_schedule(s)
    assert np.allclose(sched.t, [0, 0.4, 0.9, 1.5, 2.3, 3.1])
    assert sched.prompt_tokens.tolist() == [1100, 1600, 700, 1200, 300, 1050]
    parts = [prompt_parts(sched, i, s.seed) for i in range(len(sched))]
    # requests 0, 1 and 3 share blocks 0 and 1; request 1 also has block 3
    block = len(parts[3][0]) // 2
    assert parts[0][0] == parts[3][0] and len(parts[0][0]) > 0
    assert parts[1][0].startswith(parts[0][0]) and len(parts[1][0]) == 3 * block
    assert parts[2][0] != parts[0][0] and parts[5][0].startswith(parts[2][0])
    assert parts[4][0] == ""  # one partial block: nothing shared


def test_a_bad_trace_is_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,prompt\n1,2\n")
    with pytest.raises(InputError) as info:
        build_schedule(
            Scenario.from_dict({"duration": 5, "trace": {"format": "azure", "path": str(bad)}})
        )
    assert "TIMESTAMP,ContextTokens,GeneratedTokens" in str(info.value)
