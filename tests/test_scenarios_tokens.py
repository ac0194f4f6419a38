"""Workloads in the target's tokens: prompts built to the intended count by the target's
/tokenize (the simulator here), capped by its max_model_len, or by a tokenizer file the scenario
names; records carry the intended and the served counts and where the length came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import free_port

from aichaos.reports.tables import prompt_length_lines
from aichaos.rundir import read_requests
from aichaos.scenarios.payload import prompt_fields, prompt_parts
from aichaos.scenarios.runner import LoadRunner
from aichaos.scenarios.schedule import build_schedule
from aichaos.scenarios.spec import Scenario, load_scenario
from aichaos.slo.lengths import prompt_lengths
from aichaos.slo.records import load as load_records

CONTEXT = 512


def scenario(**workload) -> Scenario:
    return Scenario.from_dict(
        {
            "name": "tokens",
            "duration": 3,
            "seed": 7,
            "rate": {"shape": "constant", "rps": 8},
            "target": {"timeout": 20},
            "workload": {
                "prompt_tokens": {"dist": "lognormal", "mean": 250, "sigma": 0.9, "max": 3000},
                "output_tokens": {"dist": "uniform", "low": 8, "high": 40},
                **workload,
            },
        }
    )


def run(runner: LoadRunner) -> None:
    runner.start()
    assert runner.wait(timeout=60, kill=True) == 0, runner.log_tail()


@pytest.fixture(scope="module")
def sim(module_sims):
    return module_sims("--profile", "fixed-latency", "--max-model-len", str(CONTEXT))


@pytest.mark.parametrize("workers", [1, 2])  # 2: each worker's share carries its sizes
def test_prompts_hit_the_intended_count_and_fit_the_context(sim, tmp_path, workers):
    s = scenario(shared_prefix={"groups": 2, "tokens": 60, "share": 0.5})
    run(LoadRunner(s, sim.url, tmp_path, workers=workers))
    table, _ = read_requests(tmp_path)
    rows = table.to_pylist()
    assert len(rows) == len(build_schedule(s)) > 10
    # nothing refused for its length: the lognormal tail was capped, not sent over
    assert all(r["status"] == "ok" and r["http_status"] == 200 for r in rows), rows[:2]
    assert {r["length_source"] for r in rows} == {"tokenize"}
    for r in rows:
        assert r["served_prompt_tokens"] == r["intended_prompt_tokens"] == r["prompt_tokens"]
        assert r["intended_prompt_tokens"] + r["output_tokens"] <= CONTEXT
    capped = [r for r in rows if r["length_capped"]]
    assert capped and len(capped) < len(rows)
    sizing = json.loads((tmp_path / "load" / "load.sizing.json").read_text())
    assert sizing["max_model_len"] == CONTEXT and sizing["capped"] == len(capped)
    # slo's figure and the report's lines
    figure = prompt_lengths(load_records(tmp_path)[0])
    assert figure.share_within == 1.0 and figure.capped == len(capped)
    assert figure.sources == {"tokenize": len(rows)} and figure.worst == []
    lines = prompt_length_lines(figure)
    assert any("within ±1%" in line and "(100.0%)" in line for line in lines)
    assert not any("APPROXIMATE" in line for line in lines)


def _tokenizer(path: Path) -> Path:
    """A small byte-level BPE: the synthetic words cost one to three tokens each."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["kalo mine ruvo sati zepa dofe " * 20, "the model answers"], trainer)
    tok.save(str(path))
    return path


def test_a_named_tokenizer_sizes_prompts_when_the_target_has_no_tokenize(tmp_path):
    tok = _tokenizer(tmp_path / "tokenizer.json")
    file = tmp_path / "scenario.yaml"
    data = scenario().to_dict()
    data.pop("source")
    data["target"]["path"] = "/v1/completions"
    data["workload"]["tokenizer"] = "tokenizer.json"  # relative to the scenario file
    file.write_text(yaml.safe_dump(data))
    s = load_scenario(file)
    assert s.tokenizer == str(tok.resolve())
    # nothing listens there: no /tokenize and no /v1/models, so the file counts
    url = f"http://127.0.0.1:{free_port()}"
    runner = LoadRunner(s, url, tmp_path / "run")
    summary = runner.size_prompts()
    assert summary["source"] == "tokenizer" and summary["off_after_sizing"] == 0
    schedule = build_schedule(s, runner.sizing)
    from tokenizers import Tokenizer

    counter = Tokenizer.from_file(str(tok))
    for i in range(len(schedule)):
        prompt = prompt_fields(False, *prompt_parts(schedule, i, s.seed))["prompt"]
        assert len(counter.encode(prompt).ids) == schedule.prompt_tokens[i]
    words = [len(prompt_parts(schedule, i, s.seed)[1].split()) for i in range(len(schedule))]
    # the words are fewer than the tokens: the old word count was the bug
    assert np.mean(words) < 0.8 * np.mean(schedule.prompt_tokens)
    run(runner)  # every request fails to connect; the records still say where lengths came from
    rows = read_requests(tmp_path / "run")[0].to_pylist()
    assert rows and {r["length_source"] for r in rows} == {"tokenizer"}
    assert all(r["served_prompt_tokens"] is None for r in rows)


def test_without_tokenize_or_tokenizer_lengths_are_flagged_approximate(tmp_path):
    s = scenario()
    run(LoadRunner(s, f"http://127.0.0.1:{free_port()}", tmp_path))
    figure = prompt_lengths(load_records(tmp_path)[0])
    assert figure.approximate == figure.sources["estimate"] > 0
    assert figure.compared == 0 and figure.share_within is None
    assert any("APPROXIMATE" in line for line in prompt_length_lines(figure))
