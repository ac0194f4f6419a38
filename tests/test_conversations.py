"""Conversations (scenario ``workload.sessions``): turns that carry their history, records
with session and turn, the simulator's prefix cache in later turns, SLIs scoped by turn, and a
conversation longer than the target's context refused before any load."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gevent
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aichaos.rundir import REQUESTS_DIR, InputError, read_requests
from aichaos.scenarios.calibrate import read_served
from aichaos.scenarios.engine import Dispatcher
from aichaos.scenarios.prompts import count_tokens
from aichaos.scenarios.records import RecordWriter
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.spec import Scenario, load_scenario
from aichaos.scenarios.stopwatch import Planned, new_record
from aichaos.slo.evaluate import evaluate_run
from aichaos.slo.spec import SloSpec

AICHAOS = str(Path(sys.executable).with_name("aichaos"))
SYSTEM, FIRST, FOLLOW_UP, ANSWER = 64, 600, 30, 16  # tokens
THINK_S = 0.3
SIM_BLOCK = 16  # the small-gpu profile's KV block


def conversation(duration: float = 8.0, rps: float = 1.0, turns: object = 3,
                 think: object = THINK_S, **workload: object) -> dict:  # fmt: skip
    """A scenario of conversations: a system prompt, a long first question, short follow-ups."""
    return {
        "name": "conversations",
        "duration": duration,
        "seed": 3,
        "arrival": {"process": "constant"},
        "rate": {"shape": "constant", "rps": rps},
        "tiers": [{"name": "free", "share": 1}],
        "workload": {
            "prompt_tokens": FIRST,
            "output_tokens": ANSWER,
            "shared_prefix": {"groups": 1, "tokens": SYSTEM, "share": 1.0},
            "sessions": {"turns": turns, "think": think, "prompt_tokens": FOLLOW_UP},
            **workload,
        },
        "target": {"timeout": 20},
    }


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# --- the scenario's fields ----------------------------------------------------------------


def test_a_conversation_scenario_round_trips_and_plans_growing_turns():
    s = Scenario.from_dict(conversation(
        turns={"dist": "uniform", "low": 2, "high": 4},
        think={"dist": "lognormal", "mean": "500ms", "sigma": 0.5, "max": "2s"},
    ))  # fmt: skip
    again = Scenario.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.to_dict() == s.to_dict()
    sched, same = build_schedule(s), build_schedule(again)
    assert np.array_equal(sched.t, same.t) and np.array_equal(sched.think, same.think)
    previous, following = sched.turn_links()
    assert set(sched.turn.tolist()) >= {1, 2} and (sched.session_id >= 0).all()
    for i in np.nonzero(sched.turn > 1)[0]:
        j = previous[i]
        assert sched.session_id[j] == sched.session_id[i] and sched.turn[j] == sched.turn[i] - 1
        assert following[j] == i
        assert 0 < sched.think[i] <= 2.0  # durations, capped by max
        assert sched.t[i] == pytest.approx(sched.t[j] + sched.think[i])
        # the history grows by the earlier answer, and this turn asks a question of its own
        assert sched.prompt_tokens[i] - sched.prompt_tokens[j] == ANSWER + FOLLOW_UP
    # two workers split whole conversations
    halves = [sched.split(w, 2) for w in (0, 1)]
    assert not set(halves[0].session_id) & set(halves[1].session_id)
    assert len(halves[0]) + len(halves[1]) == len(sched)


BAD = [
    ({"turns": {"dist": "fixed", "value": 2, "min": 0}}, "workload.sessions.turns"),
    ({"turns": 2, "think": "soon"}, "workload.sessions.think"),
    ({"turns": 2, "think": {"dist": "uniform", "low": "5s", "high": "2s"}},
     "workload.sessions.think.high"),
    ({"turns": 2, "think": {"dist": "empirical", "trace": "t.csv"}},
     "workload.sessions.think.values"),
    ({"turns": 2, "prompt_tokens": {"dist": "zipf"}}, "workload.sessions.prompt_tokens.dist"),
    ({"turns": 2, "thinking": 3}, "workload.sessions.thinking"),
    ({"think": 3}, "workload.sessions.turns"),
]  # fmt: skip


@pytest.mark.parametrize(("sessions", "field"), BAD)
def test_a_bad_conversation_field_is_one_line_naming_it(tmp_path, sessions, field):
    data = conversation()
    data["workload"]["sessions"] = sessions
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(InputError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    assert f"{field}: expected" in message


def test_conversations_need_open_arrivals(tmp_path):
    data = conversation()
    data["arrival"] = {"mode": "closed", "concurrency": 2}
    with pytest.raises(InputError, match=r"workload\.sessions: expected no conversations"):
        load_scenario(write_yaml(tmp_path / "closed.yaml", data))


def test_cli_validate_refuses_a_bad_conversation_with_exit_2(tmp_path):
    data = conversation()
    data["workload"]["sessions"]["think"] = {"dist": "normal", "mean": "2s"}
    bad = write_yaml(tmp_path / "bad.yaml", data)
    proc = subprocess.run([AICHAOS, "scenarios", "validate", "chat-sessions", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout.startswith("ok: chat-sessions")
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "workload.sessions.think.std" in errors[0], proc.stderr


# --- the dispatcher, against a client that records what it is sent -----------------------


class Response:
    """A streamed chat answer (``data:`` lines), or an error status."""

    def __init__(self, status: int, words: list[str]):
        self.status_code = status
        lines = [json.dumps({"choices": [{"delta": {"content": w}}]}) for w in words]
        usage = {"prompt_tokens": 1, "completion_tokens": len(words)}
        lines += [json.dumps({"choices": [], "usage": usage}), "[DONE]"]
        self.lines = [f"data: {line}\n".encode() for line in lines] + [b""]

    def get(self, name: str, default=None):
        return default

    def readline(self, _sep: bytes) -> bytes:
        return self.lines.pop(0)

    def read(self, _n: int = -1) -> bytes:
        return b"boom"


class Client:
    """Answers each request with words of its own; fails the requests named in ``fail``."""

    def __init__(self, fail: set[str]):
        self.fail = fail
        self.bodies: dict[str, dict] = {}
        self.answers: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        rid = headers["X-Request-Id"]
        self.bodies[rid] = json.loads(body)
        words = [f" {rid}", " says", " hello", "."]  # fewer tokens than the 16 planned
        self.answers[rid] = "".join(words)
        return Response(500 if rid in self.fail else 200, words)


def test_each_turn_carries_the_questions_and_the_answers_as_streamed():
    s = Scenario.from_dict(conversation(duration=3.0, rps=2.0, think=0.05))
    schedule = build_schedule(s)
    first = [i for i in range(len(schedule)) if schedule.turn[i] == 1]
    failing = f"load-w0-{schedule.index[first[1]]}"  # the second conversation fails at once
    client, rows = Client({failing}), []
    t0 = time.time() + 0.2
    dispatcher = Dispatcher(s, schedule, client, "load-w0", t0, rows.append)
    gevent.spawn(dispatcher.run).join(timeout=30)
    assert dispatcher.finished.is_set()
    by_session: dict[str, list[dict]] = {}
    for row in rows:
        by_session.setdefault(row["session"], []).append(row)
    failed = [r for r in rows if r["request_id"] == failing]
    assert len(failed) == 1 and len(by_session[failed[0]["session"]]) == 1  # nothing after it
    chats = [v for v in by_session.values() if len(v) == 3]
    assert len(chats) >= 3
    planned = dict(zip(schedule.index.tolist(), schedule.prompt_tokens.tolist(), strict=True))
    for turns in chats:
        turns.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in turns] == [1, 2, 3] and all(r["status"] == "ok" for r in turns)
        messages = [client.bodies[r["request_id"]]["messages"] for r in turns]
        assert [len(m) for m in messages] == [2, 4, 6]  # system, then (user, assistant)...
        for k in (1, 2):
            earlier = turns[k - 1]["request_id"]
            # the earlier question, then the answer exactly as it was streamed
            assert messages[k][: 2 * k] == messages[k - 1][: 2 * k]
            assert messages[k][2 * k] == {"role": "assistant", "content": client.answers[earlier]}
            # sent its think time after that answer came
            done = turns[k - 1]["t_sent"] + turns[k - 1]["done_s"]
            assert turns[k]["t_scheduled"] == pytest.approx(done + 0.05, abs=1e-6)
            assert turns[k]["t_sent"] >= turns[k]["t_scheduled"]
        # the intended length moves by what the real answers cost against the planned 16
        drift = 0
        for r in turns:
            index = int(r["request_id"].rsplit("-", 1)[1])
            assert r["intended_prompt_tokens"] == planned[index] + drift
            drift += count_tokens(client.answers[r["request_id"]]) - ANSWER


# --- against the simulator: records, the prefix cache, TTFT by turn ------------------------


def counter_total(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)  # fmt: skip


def test_later_turns_hit_the_simulators_prefix_cache_and_answer_sooner(start_sim, tmp_path):
    log = tmp_path / "served.jsonl"
    sim = start_sim("--profile", "small-gpu", "--request-log", str(log))
    s = Scenario.from_dict(conversation())
    runner = LoadRunner(s, sim.url, tmp_path / "run")
    assert runner.size_prompts()["source"] == "tokenize"
    runner.start()
    assert runner.wait(timeout=90, kill=True) == 0, runner.log_tail()
    df = read_requests(tmp_path / "run")[0].to_pandas()
    assert len(df) >= 20 and (df.status == "ok").all(), df.error_detail.dropna().tolist()[:3]
    assert df.session.notna().all() and df.turn.notna().all()
    assert (df.intended_prompt_tokens == df.served_prompt_tokens).all()  # answers counted too
    served = read_served(log)
    df["cached"] = [served[rid]["cached_tokens"] for rid in df.request_id]
    for _, turns in df.sort_values("t_sent").groupby("session"):
        assert turns.turn.tolist() == list(range(1, len(turns) + 1))  # in order, none missing
        assert turns.prompt_tokens.is_monotonic_increasing and turns.prompt_tokens.is_unique
        first = turns.iloc[0]
        # a first turn can only find the shared system prompt in the cache
        assert first.cached <= SYSTEM
        for k in range(1, len(turns)):
            before, now = turns.iloc[k - 1], turns.iloc[k]
            # the whole earlier prompt, but for its last partial block, was cached
            assert now.cached >= (before.prompt_tokens // SIM_BLOCK - 1) * SIM_BLOCK
    later = df.turn > 1
    assert later.sum() >= 10
    hits = counter_total(sim.url, "vllm:prefix_cache_hits_total")
    cached = counter_total(sim.url, "vllm:prompt_tokens_cached_total")
    assert cached == df.cached.sum() and hits >= df.cached[later].sum() > 0
    ttft_first, ttft_later = df.ttft_s[~later].mean(), df.ttft_s[later].mean()
    print(f"TTFT turn 1 {ttft_first * 1000:.1f} ms, later turns {ttft_later * 1000:.1f} ms; "
          f"cached tokens {int(df.cached[later].sum())} of "
          f"{int(df.prompt_tokens[later].sum())} in later turns, hits {hits:.0f}",
          file=sys.stderr)  # fmt: skip
    # longer prompts, yet answered sooner: only the new part is prefilled
    assert df.prompt_tokens[later].mean() > df.prompt_tokens[~later].mean()
    assert ttft_later < ttft_first


def test_a_conversation_longer_than_the_context_is_refused_before_any_load(start_sim, tmp_path):
    log = tmp_path / "served.jsonl"
    sim = start_sim("--profile", "small-gpu", "--max-model-len", "900", "--request-log", str(log))
    path = write_yaml(tmp_path / "long.yaml", conversation(turns=12))
    out = tmp_path / "run"
    proc = subprocess.run([AICHAOS, "load", str(path), "--target", sim.url, "--out", str(out)],
                          capture_output=True, text=True, timeout=90)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{path}: workload.sessions: expected" in lines[0]
    assert "context of 900 tokens" in lines[0] and "Traceback" not in proc.stderr
    assert not log.read_text().strip()  # nothing was generated
    assert not list((out / REQUESTS_DIR).glob("*.parquet"))
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    # the same conversations fit when they are short enough
    ok = Scenario.from_dict(conversation(turns=3))
    runner = LoadRunner(ok, sim.url, tmp_path / "short")
    summary = runner.size_prompts()
    assert summary["conversation_peak"] <= 900


# --- SLIs scoped by turn ------------------------------------------------------------------


def write_turns(run_dir: Path, columns: bool = True) -> None:
    """Four-turn conversations: turn 1 answers its first token in 300 ms, later turns in 50 ms,
    and every third turn fails; plus requests outside conversations at 150 ms."""
    writer = RecordWriter(run_dir, "load")
    t = 1_800_000_000.0
    for n in range(60):
        for turn in (1, 2, 3, 4, None):
            t += 0.1
            rid = f"r{n}-{turn}"
            session = f"s{n}" if turn else None
            row = new_record(Planned(rid, "free", t, 100, "tokenize", False, session, turn),
                             "load-w0", "t")  # fmt: skip
            ttft = {1: 0.3, None: 0.15}.get(turn, 0.05) + 0.001 * (n % 7)
            row.update(t_sent=t, ttft_s=ttft, e2e_s=ttft + 0.1, done_s=ttft + 0.1, status="ok",
                       http_status=200, output_tokens=10)  # fmt: skip
            if turn == 3:
                row.update(status="error", error_kind="http_5xx", ttft_s=None, e2e_s=None)
            writer.add(row)
    path = writer.flush()
    if not columns:  # a chunk written before conversations existed
        table = pq.read_table(path).drop_columns(["session", "turn"])
        pq.write_table(table, path)


def test_an_sli_scoped_by_turn_measures_only_those_turns(tmp_path):
    write_turns(tmp_path)
    spec = SloSpec.from_dict({"name": "turns", "objectives": [
        {"sli": "ttft", "percentile": 50, "threshold": "500ms", "turns": 1},
        {"sli": "ttft", "percentile": 50, "threshold": "100ms", "turns": "2+"},
        {"sli": "ttft", "percentile": 50, "threshold": "1s", "id": "all"},
        {"sli": "error_rate", "threshold": "1%", "turns": "2-3"},
        {"sli": "error_rate", "threshold": "1%", "turns": "4", "id": "errors-4"},
    ]}, "turns.yaml")  # fmt: skip
    assert [o.id for o in spec.objectives][:2] == ["ttft-p50-turn1", "ttft-p50-turn2+"]
    rows = {r.objective: r for r in evaluate_run(tmp_path, spec).objectives if r.phase == "all"}
    first, later = rows["ttft-p50-turn1"], rows["ttft-p50-turn2+"]
    assert first.samples == 60 and first.value == pytest.approx(0.303, abs=0.0035)
    assert later.samples == 120 and later.value == pytest.approx(0.053, abs=0.0035)
    assert rows["all"].samples == 240  # turns 1, 2, 4 and the 60 outside conversations
    errors = rows["error_rate-turn2-3"]
    assert errors.samples == 120 and errors.value == pytest.approx(0.5)
    assert rows["errors-4"].samples == 60 and rows["errors-4"].value == 0.0
    assert first.status == "pass" and errors.status == "fail"


def test_records_written_before_conversations_read_as_no_turn(tmp_path):
    write_turns(tmp_path, columns=False)
    table, notes = read_requests(tmp_path)
    assert not notes and table.num_rows == 300
    assert table.column("turn").null_count == 300 and table.column("session").null_count == 300
    spec = SloSpec.from_dict({"name": "t", "objectives": [
        {"sli": "ttft", "percentile": 50, "threshold": "500ms", "turns": 1},
        {"sli": "ttft", "percentile": 50, "threshold": "500ms"},
    ]}, "t.yaml")  # fmt: skip
    rows = {r.objective: r for r in evaluate_run(tmp_path, spec).objectives if r.phase == "all"}
    assert rows["ttft-p50-turn1"].samples == 0
    assert rows["ttft-p50-turn1"].status == "insufficient_data"
    assert rows["ttft-p50"].samples == 240


@pytest.mark.parametrize(
    ("objective", "field"),
    [
        ({"sli": "ttft", "percentile": 95, "threshold": "1s", "turns": 0}, "turns"),
        ({"sli": "ttft", "percentile": 95, "threshold": "1s", "turns": "5-2"}, "turns"),
        ({"sli": "ttft", "percentile": 95, "threshold": "1s", "turns": "late"}, "turns"),
        ({"sli": "promql", "query": "up", "threshold": 1, "turns": 1}, "turns"),
        ({"sli": "time_to_recover", "threshold": "10s", "turns": "2+"}, "turns"),
    ],
)
def test_a_bad_turns_scope_is_one_line(objective, field):
    with pytest.raises(InputError) as info:
        SloSpec.from_dict({"name": "t", "objectives": [objective]}, "spec.yaml")
    assert str(info.value).startswith(f"spec.yaml: objectives[0].{field}: expected")
