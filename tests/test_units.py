"""One duration parser for every input: scenarios, SLO specs, topologies, command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aichaos.harness.topology import PrometheusSpec
from aichaos.rundir import InputError
from aichaos.scenarios.validate import parse_duration as scenario_duration
from aichaos.slo.spec import parse_duration as slo_duration
from aichaos.units import MAX_DURATION_S, parse_duration

AICHAOS = str(Path(sys.executable).with_name("aichaos"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("90s", 90.0), ("500ms", 0.5), ("5m", 300.0), ("1.5h", 5400.0),
     ("30d", 2592000.0), ("2w", 1209600.0), (" 10s ", 10.0), (0, 0.0)],
)  # fmt: skip
def test_every_reader_takes_the_same_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert scenario_duration(text) == seconds
    assert slo_duration(text, "f.yaml", "window") == seconds
    if seconds:
        assert PrometheusSpec(scrape_interval=text).scrape_interval == f"{round(seconds * 1000)}ms"


@pytest.mark.parametrize(
    "bad", [True, "soon", "5 minutes", "-1s", -1, float("inf"), float("nan"), 1e308, ".inf",
            "9" * 5000, "401d", None, [1]],
)  # fmt: skip
def test_every_reader_refuses_the_same_durations(bad):
    with pytest.raises(ValueError, match="a duration such as"):
        parse_duration(bad)
    assert scenario_duration(bad) is None
    with pytest.raises(InputError, match="window: expected a duration such as"):
        slo_duration(bad, "f.yaml", "window")
    assert MAX_DURATION_S < 1e8


def test_load_and_run_take_the_same_duration_option(tmp_path):
    for command in (["load", "steady", "--target", "http://127.0.0.1:9"], ["run"]):
        done = subprocess.run([AICHAOS, *command, "--duration", "soon", "--out",
                               str(tmp_path / "x")], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "--duration: expected a duration such as" in lines[0]
