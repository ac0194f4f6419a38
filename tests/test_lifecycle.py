"""The run lifecycle shared by run, load and chaos: run.json says running with its owner from
the start, and how the run ended at the end; a signal is a flag, never an exception, and
makes the exit code 3."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from aichaos import exits
from aichaos.harness.lifecycle import RunLifecycle, versions
from aichaos.processes import ProcessRef
from aichaos.rundir import RunManifest, read_manifest


def manifest(run_id: str) -> RunManifest:
    return RunManifest(id=run_id, kind="load", owner=ProcessRef.current(), command=["t"],
                       versions=versions(), started_at=time.time())  # fmt: skip


def test_a_run_is_running_while_it_runs_and_completed_after(tmp_path):
    with RunLifecycle(tmp_path, manifest("a")) as life:
        seen = read_manifest(tmp_path)
        assert seen is not None and seen.status == "running" and seen.owner is not None
    after = read_manifest(tmp_path)
    assert after is not None and after.status == "completed" and after.ended_at is not None
    assert life.exit_code(0) == exits.OK
    assert after.versions["aichaos"] and after.kind == "load"


def test_a_signal_is_a_flag_the_run_polls_and_the_run_ends_aborted(tmp_path):
    with RunLifecycle(tmp_path, manifest("b")) as life:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the handler sets a flag
        for _ in range(100):
            if life.interrupted:
                break
            time.sleep(0.01)
        assert life.interrupted
    assert read_manifest(tmp_path).status == "aborted"
    assert life.exit_code(0) == exits.NOT_COMPLETED
    # the handlers are restored afterwards
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_or_a_failed_step_ends_the_run_failed_with_its_problem(tmp_path):
    with pytest.raises(RuntimeError), RunLifecycle(tmp_path / "x", manifest("c")):
        raise RuntimeError("the load generator could not start")
    failed = json.loads((tmp_path / "x" / "run.json").read_text())
    assert failed["status"] == "failed" and "could not start" in failed["problem"]
    with RunLifecycle(tmp_path / "y", manifest("d")) as life:
        life.failed("the load generator exited with 1")
    assert read_manifest(tmp_path / "y").problem == "the load generator exited with 1"
    assert read_manifest(tmp_path / "y").status == "failed"
