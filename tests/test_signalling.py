"""One way to kill a service: its group is signalled only while its leader is the process
recorded, and the kill is in the run's timeline whoever did it (here the replica-kill action,
which used to leave no event)."""

from __future__ import annotations

import json
import subprocess

import pytest
from chaoslib.exceptions import ActivityFailed

from aichaos.experiments.actions.replicas import kill_replica
from aichaos.processes import ProcessRef


def _stack(tmp_path, proc: subprocess.Popen, start_time: float) -> dict:
    state = {"services": {"llm-1": {"service": "llm", "kind": "llm", "state": "ready",
                                    "pid": proc.pid, "start_time": start_time}}}  # fmt: skip
    (tmp_path / "stack.json").write_text(json.dumps(state))
    return {"aichaos_stack_file": str(tmp_path / "stack.json"), "aichaos_run_dir": str(tmp_path)}


def test_a_replica_kill_signals_the_recorded_process_and_writes_the_event(tmp_path):
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ref = ProcessRef.of(proc.pid)
        stale = _stack(tmp_path, proc, ref.start_time - 1)  # the PID, another start time
        with pytest.raises(ActivityFailed):
            kill_replica("llm-1", configuration=stale)
        assert proc.poll() is None and not (tmp_path / "events.jsonl").exists()
        killed = kill_replica("llm-1", configuration=_stack(tmp_path, proc, ref.start_time))
        assert killed == [{"name": "llm-1", "pid": proc.pid, "signal": "SIGKILL"}]
        assert proc.wait(10) == -9
        (event,) = [
            json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()
        ]
        assert (event["kind"], event["name"], event["source"]) == ("kill", "llm-1", "experiments")
        assert event["detail"] == {"pid": proc.pid, "signal": "SIGKILL"}
    finally:
        proc.kill()
        proc.wait(10)
