"""``aichaos slo ...`` and ``aichaos compare`` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_run import make_run_dir
from typer.testing import CliRunner

from aichaos.harness.cli import app

RUN = {"duration_s": 120, "rps": 10, "with_metrics": False, "with_journal": False}


def aichaos(*args: str) -> subprocess.CompletedProcess:
    """The real command line in a process of its own (exit codes, stderr as a user sees them)."""
    cmd = [sys.executable, "-c", "from aichaos.harness.cli import app; app()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def invoke(*args: str):
    """The same app in this process (faster; exit code and output as typer gives them)."""
    result = CliRunner().invoke(app, list(args))
    result.returncode = result.exit_code
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    # 4,800 requests without an error: enough to show errors <= 0.1% at 95% confidence
    ok = make_run_dir(root / "ok", seed=1, faults=[], base_error_ratio=0.0,
                      **{**RUN, "rps": 40})  # fmt: skip
    outage = {"name": "provider-outage", "start": 40, "end": 80, "error_ratio": 0.3}
    bad = make_run_dir(root / "bad", seed=2, faults=[outage], **RUN)
    return ok, bad


def test_check_writes_slo_json_and_exits_by_verdict(runs, tmp_path):
    ok, bad = runs
    done = aichaos("slo", "check", str(ok))
    assert done.returncode == 0, done.stderr
    assert "verdict: pass" in done.stdout and "ttft-p95@all" in done.stdout
    assert json.loads((ok / "slo.json").read_text())["verdict"] == "pass"
    thin = make_run_dir(tmp_path / "thin", seed=1, faults=[], base_error_ratio=0.0, **RUN)
    done = aichaos("slo", "check", str(thin))  # 1,200 requests cannot show errors <= 0.1%
    assert done.returncode == 4 and "verdict: inconclusive" in done.stdout
    done = invoke("slo", "check", str(bad), "--slo", "tiered")
    assert done.returncode == 1 and "verdict: fail" in done.stdout
    assert json.loads((bad / "slo.json").read_text())["spec"]["name"] == "tiered"


def test_bad_input_is_one_line_and_exit_two(runs, tmp_path):
    ok, _ = runs
    spec = tmp_path / "bad.yaml"
    spec.write_text("objectives:\n  - sli: ttft\n    percentile: 95\n    threshold: soon\n")
    done = aichaos("slo", "check", str(ok), "--slo", str(spec))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "objectives[0].threshold: expected a duration" in done.stderr
    done = invoke("slo", "check", str(tmp_path / "missing"))
    assert done.returncode == 2 and "expected an existing run directory" in done.output
    done = invoke("slo", "validate", "default", str(spec))
    assert done.returncode == 2 and "default: ok" in done.stdout


def test_list_show_compare_and_promote(runs, tmp_path):
    ok, bad = runs
    listed = invoke("slo", "list")
    assert listed.returncode == 0 and "default" in listed.stdout and "tiered" in listed.stdout
    shown = invoke("slo", "show", "tiered")
    assert shown.returncode == 0 and "ttft-p99-enterprise" in shown.stdout
    same = invoke("compare", str(ok), str(ok))
    assert same.returncode == 0 and "verdict: pass" in same.stdout
    worse = invoke("compare", str(ok), str(bad), "--json")
    assert worse.returncode == 1 and json.loads(worse.stdout)["verdict"] == "fail"
    store = tmp_path / "store"
    promoted = invoke("slo", "promote", str(ok), "--baseline", str(store))
    assert promoted.returncode == 0 and (store / "ok" / "requests").is_dir()
    gated = invoke("slo", "check", str(bad), "--baseline", str(store), "--slo", "default")
    assert gated.returncode == 1 and "regression vs" in gated.stdout


def test_a_misspelt_tier_is_bad_input_not_an_objective_switched_off(runs, tmp_path):
    """An objective on a tier the run does not have would have no sample, and the verdict
    would silently go without it ("pass, score 100"): one line and exit 2 instead, from
    ``slo check`` and from ``aichaos run`` before anything starts."""
    ok, _ = runs
    text = (Path(__file__).resolve().parents[1] / "slo" / "specs" / "tiered.yaml").read_text()
    spec = tmp_path / "typo.yaml"
    spec.write_text(text.replace("tiers: [enterprise]", "tiers: [enterprize]", 1))
    done = aichaos("slo", "check", str(ok), "--slo", str(spec))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "tiers: expected a tier of run ok (free, pro, enterprise)" in done.stderr
    assert "'enterprize'" in done.stderr
    out = tmp_path / "runs"
    done = aichaos("run", "--slo", str(spec), "--out", str(out))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "a tier of scenario tiered" in done.stderr and not out.exists()
