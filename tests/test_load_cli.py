"""``aichaos load`` writes a complete run directory; bad input and a dead target exit cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import free_port, interrupt

from aichaos.rundir import RUN_FIELDS, read_events, read_requests
from aichaos.waiting import wait_until

AICHAOS = str(Path(sys.executable).with_name("aichaos"))


def aichaos(
    *args: str, timeout: float = 90, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AICHAOS, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def test_load_writes_a_run_directory(start_sim, tmp_path):
    sim = start_sim("--profile", "fixed-latency")
    out = tmp_path / "run"
    proc = aichaos("load", "steady", "--target", sim.url, "--duration", "3", "--out", str(out),
                   "--seed", "7")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert set(RUN_FIELDS) <= set(manifest)
    assert manifest["status"] == "completed" and manifest["seed"] == 7
    assert manifest["kind"] == "load"
    assert manifest["target"] == sim.url and manifest["scenario"]["name"] == "steady"
    assert manifest["ended_at"] > manifest["started_at"]
    assert manifest["versions"]["locust"]
    events, _ = read_events(out)
    # (a busy machine may add timing warnings in between: instants of the same source)
    bounds = [e for e in events if e["name"] == "steady"]
    assert [(e["source"], e["action"]) for e in bounds] == [("load", "start"), ("load", "end")]
    df = read_requests(out)[0].to_pandas()
    assert len(df) > 0 and (df.status == "ok").all()
    assert bounds[1]["detail"]["sent"] == len(df)
    assert "requests" in proc.stderr and "TTFT p50" in proc.stderr  # the closing summary


def test_calibrate_measures_each_request_against_what_the_server_served(tmp_path):
    out = tmp_path / "cal"
    proc = aichaos("load", "calibrate", "--rates", "4", "--duration", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "minus the floor a bare socket sees" in proc.stdout
    assert "honest ceiling" in proc.stdout
    (row,) = json.loads((out / "calibration.json").read_text())
    assert row["rate"] == 4 and row["exit_code"] == 0
    # every request found in the server's own log, by the X-Request-Id the runner sent
    assert row["requests"] == row["ok"] == row["joined"] > 0 and row["tokens_match"]
    served = [json.loads(line) for line in (out / "served.jsonl").read_text().splitlines()]
    df = read_requests(out / "rate-4-w1")[0].to_pandas()
    assert set(df.request_id) <= {s["request_id"] for s in served}
    # the error is the reading minus the served TTFT minus a floor: small, never hugely negative
    assert -0.002 < row["ttft_err_p50_s"] < 0.05


def test_bad_scenario_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("duration: 10\nrate: {shape: ramp, from: 1}\n")
    proc = aichaos("load", str(bad), "--target", "http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "rate.to" in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "runs").exists()


def test_unreachable_target_exits_3(tmp_path):
    proc = aichaos("load", "steady", "--target", f"http://127.0.0.1:{free_port()}",
                   "--out", str(tmp_path / "r"))  # fmt: skip
    assert proc.returncode == 3
    assert "unreachable" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_stops_the_load_keeps_its_records_and_exits_3(start_sim, tmp_path):
    """The one signal scheme: the load stops, what it recorded stays, run.json says aborted."""
    sim = start_sim("--profile", "fixed-latency")
    out = tmp_path / "run"
    proc = subprocess.Popen([AICHAOS, "load", "steady", "--target", sim.url, "--duration", "60",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    # until the first chunk of records is written (at most 30 s)
    wait_until(lambda: list((out / "requests").glob("*.parquet")) or proc.poll() is not None, 30)
    stderr = interrupt(proc)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr and "aborted" in stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "aborted" and manifest["ended_at"] < manifest["started_at"] + 60
    assert len(read_requests(out)[0]) > 0
