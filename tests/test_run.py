"""`aichaos run` as a user runs it: a real process, real services, the files it leaves.

The end-to-end game day on the embedded stack is one run shared by several tests (a module
fixture); the rest run against a separately started simulator with `--target`, which takes
seconds.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import REPO, free_port, interrupt

from aichaos.experiments import catalog
from aichaos.harness import run as run_module
from aichaos.harness.run_plan import RunOptions
from aichaos.harness.signals import Signals
from aichaos.harness.stack_state import process_alive

AICHAOS = [str(Path(sys.executable).parent / "aichaos")]
RUN_FILES = ("run.json", "events.jsonl", "metrics.parquet", "slo.json", "report.html",
             "summary.md", "junit.xml", "summary.json")  # fmt: skip
QUICK_TIMEOUT_S = 240


def aichaos(*args: str, env: dict | None = None, timeout: float = QUICK_TIMEOUT_S):
    return subprocess.run([*AICHAOS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=REPO)  # fmt: skip


def only_run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def records(run_dir: Path):
    return pq.read_table(run_dir / "requests").to_pandas()


# --- bad input and unreachable targets: exit 2 / 3, nothing started --------------------------


@pytest.mark.parametrize(
    "args, field",
    [
        (["--scenario", "no-such-scenario"], "no-such-scenario"),
        (["--slo", "tests/data/run/bad-slo.yaml"], "bad-slo.yaml"),
        (["--experiment", "no-such-experiment"], "no-such-experiment"),
        (["--duration", "soon"], "--duration"),
        (["--target", "ftp://127.0.0.1:1"], "--target"),
        (["--workers", "0"], "--workers"),
        (["--topology", "tests/data/topology/bad_unknown_field.yaml"], "bad_unknown_field.yaml"),
    ],
)
def test_bad_input_is_one_line_and_starts_nothing(tmp_path, args, field):
    result = aichaos("run", *args, "--out", str(tmp_path / "runs"), timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "a run directory was created for bad input"


def test_unreachable_target_exits_3(tmp_path):
    port = free_port()
    result = aichaos("run", "--target", f"http://127.0.0.1:{port}", "--quick",
                     "--out", str(tmp_path), timeout=60)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "unreachable" in result.stderr
    manifest = json.loads((only_run_dir(tmp_path) / "run.json").read_text())
    assert manifest["status"] == "failed"


# --- against a separately started simulator ---------------------------------------------------


@pytest.fixture(scope="module")
def sim(module_sims):
    return module_sims("--profile", "fixed-latency")


def target_run(sim, out: Path, *extra: str, env: dict | None = None):
    return aichaos("run", "--target", sim.url, "--scenario", "tests/data/run/light.yaml",
                   "--slo", "tests/data/run/light-slo.yaml", "--experiment", "none",
                   "--out", str(out), *extra, env=env)  # fmt: skip


def test_target_run_writes_a_complete_run_directory(sim, tmp_path):
    result = target_run(sim, tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    rows = records(run_dir)
    assert len(rows) > 10 and (rows["status"] == "ok").all()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["target"] == sim.url
    assert manifest["scenario"]["name"] == "light"
    slo = json.loads((run_dir / "slo.json").read_text())
    assert slo["verdict"] in ("pass", "warn")


def test_failing_slo_exits_1_and_the_report_says_why(sim, tmp_path):
    result = aichaos("run", "--target", sim.url, "--scenario", "tests/data/run/light.yaml",
                     "--slo", "tests/data/run/strict-slo.yaml", "--experiment", "none",
                     "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 1, result.stderr
    run_dir = only_run_dir(tmp_path)
    slo = json.loads((run_dir / "slo.json").read_text())
    assert slo["verdict"] == "fail"
    failed = [o for o in slo["objectives"] if o["status"] == "fail"]
    assert failed and all(o["objective"].startswith("ttft") for o in failed)
    assert "fail" in (run_dir / "summary.md").read_text().lower()
    assert failed[0]["objective"] in (run_dir / "report.html").read_text()


def test_ci_mode_fails_on_an_injected_regression(sim, tmp_path):
    baseline = tmp_path / "baseline"
    summary = tmp_path / "step-summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    first = target_run(sim, tmp_path / "a", "--ci", "--baseline", str(baseline), "--promote",
                       env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert any(baseline.iterdir()), "the passing run was not promoted into the baseline"
    assert summary.exists() and summary.read_text().strip()
    # the same server, every first token 300 ms later: a regression, still within the SLO
    fault = sim.admin("POST", {"kind": "ttft_inflate", "seconds": 0.3, "rate": 1})
    assert fault.status_code in (200, 201), fault.text
    try:
        second = target_run(sim, tmp_path / "b", "--ci", "--baseline", str(baseline), env=env)
    finally:
        sim.admin("DELETE")
    assert second.returncode == 1, second.stderr
    slo = json.loads((only_run_dir(tmp_path / "b") / "slo.json").read_text())
    assert slo["comparison"] and any(c["regression"] for c in slo["comparison"]["changes"])


def test_replay_runs_the_same_game_day(sim, tmp_path):
    first = target_run(sim, tmp_path / "a", "--seed", "7")
    assert first.returncode == 0, first.stderr
    original = only_run_dir(tmp_path / "a")
    again = aichaos("run", "--replay", str(original), "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    replayed = only_run_dir(tmp_path / "b")
    a = json.loads((original / "run.json").read_text())
    b = json.loads((replayed / "run.json").read_text())
    assert a["scenario"] == b["scenario"] and a["slo"] == b["slo"] and a["seed"] == b["seed"]
    assert len(records(original)) == len(records(replayed))


# --- the game day on the embedded stack -------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    result = aichaos("run", "--quick", "--ci", "--out", str(out))
    return result, only_run_dir(out)


def test_quick_game_day_end_to_end(quick_run):
    result, run_dir = quick_run
    assert result.returncode in (0, 1, 4), result.stderr
    for name in (*RUN_FILES, "journal.json", "stack.json"):
        assert (run_dir / name).exists(), name
    slo = json.loads((run_dir / "slo.json").read_text())
    # the quick spec is one its minute of traffic can decide: sized so, and not told otherwise
    assert slo["spec"]["name"] == "quick" and "expect an inconclusive" not in result.stdout
    assert slo["verdict"] in ("pass", "warn", "fail", "inconclusive")
    assert result.returncode == {"fail": 1, "inconclusive": 4}.get(slo["verdict"], 0)
    phases = {p["kind"] for p in slo["phases"]}
    assert {"baseline", "fault", "recovery"} <= phases
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["experiment"]["title"] and manifest["versions"]["aichaos"]


def test_quick_game_day_shows_the_fallback_carrying_the_outage(quick_run):
    _, run_dir = quick_run
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    faults = [e for e in events if e["kind"] == "fault"]
    start = next(e["t"] for e in faults if e["action"] == "start")
    end = next(e["t"] for e in faults if e["action"] == "end")
    rows = records(run_dir)
    inside = rows[(rows["t_sent"] > start + 2) & (rows["t_sent"] < end - 1)]
    outside = rows[rows["t_sent"] > end + 15]
    assert (inside["served_by"] == "fallback").mean() > 0.5
    assert (outside["served_by"] == "fallback").mean() < 0.5


def test_quick_game_day_leaves_nothing_running(quick_run):
    _, run_dir = quick_run
    state = json.loads((run_dir / "stack.json").read_text())
    for service in state["services"].values():
        assert not process_alive(service["pid"], service["start_time"]), service


def test_ctrl_c_in_the_fault_window_rolls_back_and_reports_aborted(tmp_path):
    proc = subprocess.Popen([*AICHAOS, "run", "--quick", "--ci", "--out", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        run_dir = wait_for_fault(tmp_path, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # an impatient second Ctrl-C must not skip clean-up
        _, stderr = proc.communicate(timeout=QUICK_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "aborted"
    # every view opens with how the run ended and what of it ran, never with a pass
    cut = re.compile(r"ABORTED — baseline ran, fault:\S+ ran [\d.]+ s of [\d.]+ s,"
                     r" recovery did not run")  # fmt: skip
    seen = headlines(run_dir)
    assert seen.pop("report.html title").startswith("ABORTED · "), stderr
    for text in seen.values():
        assert cut.search(text) and "PASS" not in text, text
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (interrupt,) = [e for e in events if e["kind"] == "interrupt"]
    assert interrupt["name"] == "SIGINT" and interrupt["detail"]["during"] == "load"
    started = [e for e in events if e["kind"] == "fault" and e["action"] == "start"]
    ended = [e for e in events if e["kind"] == "fault" and e["action"] == "end"]
    assert started and len(ended) == len(started), "a fault window was never closed"
    state = json.loads((run_dir / "stack.json").read_text())
    for service in state["services"].values():
        assert not process_alive(service["pid"], service["start_time"]), service


def headlines(run_dir: Path) -> dict[str, str]:
    """The first thing each view says: report.html's title and verdict, summary.md's heading,
    junit.xml's "run completed" failure, summary.json's headline."""
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    summary = re.search(r'<section id="summary" data-headline="([^"]*)"', html).group(1)
    xml = (run_dir / "junit.xml").read_text(encoding="utf-8")
    junit = re.search(r'<testcase name="run completed".*?message="([^"]*)"', xml, re.S)
    return {
        "report.html title": title,
        "report.html": unescape(summary),
        "summary.md": (run_dir / "summary.md").read_text(encoding="utf-8").splitlines()[0],
        "junit.xml": unescape(junit.group(1)) if junit else "",
        "summary.json": json.loads((run_dir / "summary.json").read_text())["headline"],
    }


class HeldPrometheus:
    """A Prometheus stand-in on loopback: it answers the harness's target and range queries
    at once and holds every instant query (the evaluation's PromQL objectives) until released,
    so a test knows the run is inside its evaluation when it sends Ctrl-C."""

    def __init__(self) -> None:
        self.evaluating = threading.Event()
        self.release = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/api/v1/targets":
                    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    data = {"activeTargets": [{"health": "up", "lastScrape": now}]}
                elif path == "/api/v1/query_range":
                    data = {"resultType": "matrix", "result": []}
                else:
                    held.evaluating.set()
                    held.release.wait(timeout=QUICK_TIMEOUT_S)
                    data = {"resultType": "vector", "result": []}
                body = json.dumps({"status": "success", "data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with suppress(OSError):  # the run may have gone: Ctrl-C is the point
                    self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_during_the_evaluation_exits_3_and_reports_aborted(sim, tmp_path):
    prometheus = HeldPrometheus()
    proc = subprocess.Popen([*AICHAOS, "run", "--target", sim.url, "--experiment", "none",
                             "--scenario", "tests/data/run/light.yaml",
                             "--slo", "tests/data/run/promql-slo.yaml",
                             "--prometheus-url", prometheus.url, "--out", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        evaluating = prometheus.evaluating.wait(QUICK_TIMEOUT_S)
        stderr = interrupt(proc, QUICK_TIMEOUT_S)
    finally:
        prometheus.close()
    assert evaluating, "the evaluation never queried"
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr, stderr
    run_dir = only_run_dir(tmp_path)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "aborted"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (stop,) = [e for e in events if e["kind"] == "interrupt"]
    assert stop["detail"]["during"] == "evaluation"
    # what was recorded stays; the evaluation was stopped, so there is no verdict to show
    assert len(records(run_dir)) > 10 and not (run_dir / "slo.json").exists()
    for text in headlines(run_dir).values():
        assert text.startswith("ABORTED") or "Game day: ABORTED" in text, text
        assert "PASS" not in text
    assert "stopped during evaluation" in headlines(run_dir)["summary.json"]


def test_a_signal_stops_an_interruptible_step_and_is_only_counted_elsewhere():
    """The mechanism the evaluation and the rendering run under: a real SIGINT to this
    process stops the step it comes in; outside a step a signal is counted, never raised."""
    signals = Signals()
    signals.install()
    try:
        signals.stage = "rendering"

        def step() -> str:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(500):  # bounded: the signal stops the step long before
                time.sleep(0.01)
            return "finished"

        assert signals.interruptible(step) == (True, None)
        assert signals.first is not None and signals.first[1:] == ("SIGINT", "rendering")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in this thread between two instructions
        assert signals.count == 2 and signals.flag.is_set()
        assert signals.interruptible(lambda: "finished") == (False, "finished")
    finally:
        signals.restore()


def wait_for_fault(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for events in out.glob("*/events.jsonl"):
            for line in events.read_text().splitlines():
                event = json.loads(line) if line.strip() else {}
                if event.get("kind") == "fault" and event.get("action") == "start":
                    time.sleep(2)
                    return events.parent
        time.sleep(0.5)
    raise AssertionError("no fault window started")


def test_a_signal_as_an_interruptible_step_returns_is_still_a_stop():
    """A real SIGINT that lands after the step returned, before raising is turned off (the
    line is found and the signal sent from a trace hook, so it lands exactly there): counted
    as a stop, never an ``Interrupted`` escaping into the clean-up."""
    source, first = inspect.getsourcelines(Signals.interruptible)
    (line,) = [first + i for i, text in enumerate(source) if "self._raising = False" in text]
    sent = []

    def tracer(frame, event, _arg):
        if frame.f_code is not Signals.interruptible.__code__:
            return None
        if event == "line" and frame.f_lineno == line and not sent:
            sent.append(line)
            os.kill(os.getpid(), signal.SIGINT)
        return tracer

    signals = Signals()
    signals.install()
    try:
        sys.settrace(tracer)
        try:
            stopped, _ = signals.interruptible(lambda: "finished")
        finally:
            sys.settrace(None)
    finally:
        signals.restore()
    assert sent and stopped and signals.count == 1


def target_options(sim, out: Path) -> RunOptions:
    return RunOptions(scenario=str(REPO / "tests/data/run/light.yaml"), slo="default",
                      experiment="none", target=sim.url, out=out)  # fmt: skip


def test_ctrl_c_while_planning_exits_3_and_starts_nothing(sim, tmp_path, monkeypatch):
    real_plan = run_module.plan_run

    def plan_with_a_ctrl_c(options):
        os.kill(os.getpid(), signal.SIGINT)
        return real_plan(options)

    monkeypatch.setattr(run_module, "plan_run", plan_with_a_ctrl_c)
    previous = signal.getsignal(signal.SIGINT)
    assert run_module.run_game_day(target_options(sim, tmp_path / "runs")) == 3
    assert signal.getsignal(signal.SIGINT) is previous, "the handlers were not restored"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_ctrl_c_while_publishing_exits_3_and_the_run_says_aborted(sim, tmp_path, monkeypatch):
    """The last step, after every catch-up: the signal still makes the run aborted, exit 3."""
    real_publish = run_module.GameDay._publish

    def publish_with_a_ctrl_c(self):
        os.kill(os.getpid(), signal.SIGINT)
        return real_publish(self)

    monkeypatch.setattr(run_module.GameDay, "_publish", publish_with_a_ctrl_c)
    assert run_module.run_game_day(target_options(sim, tmp_path)) == 3
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "aborted"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["headline"].startswith("ABORTED"), summary["headline"]


def test_an_http_probe_outside_the_stack_is_refused_once_the_stack_runs(tmp_path):
    """Only the running stack tells its own ports from another loopback server's: the refusal
    comes after the stack is up, and is still bad input (exit 2, one line), with the run
    failed, not running, and nothing of it left alive."""
    outside = f"http://127.0.0.1:{free_port()}/"
    experiment = catalog.load_experiment("provider-outage")
    first = experiment["method"][0]
    experiment["method"][0] = {**first, "provider": {"type": "http", "url": outside}}
    path = tmp_path / "outside.json"
    path.write_text(json.dumps(experiment))
    result = aichaos("run", "--quick", "--ci", "--experiment", str(path),
                     "--out", str(tmp_path / "runs"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if outside.rstrip("/") in line]
    assert len(refusals) == 1 and "--allow-http" in refusals[0], result.stderr
    run_dir = only_run_dir(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    state = json.loads((run_dir / "stack.json").read_text())
    refs = [*state["services"].values(), state.get("watchdog") or {}]
    for ref in refs:
        if ref.get("pid"):
            assert not process_alive(ref["pid"], ref["start_time"]), ref
