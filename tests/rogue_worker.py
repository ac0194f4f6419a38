"""A rogue Locust worker for the token tests: it joins a load run's master without the run's
token, answers the challenge with a made-up proof and pushes request rows (claiming to be the
master's first worker) before and after. It writes what it received to a JSON file.

    python tests/rogue_worker.py HOST PORT OUT.json [CLAIMED_ID]

With CLAIMED_ID (a trusted worker's Locust client id, as the master's log shows it) every
message it sends names that id as its sender (``node_id``), as a stranger who read the log
could; its connection keeps its own ZMQ identity, which a client cannot take from a connected
worker.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 - monkey-patching must come first
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from locust import User, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from aichaos.scenarios.stopwatch import Planned, new_record  # noqa: E402

LIFETIME_S = 20.0  # bounded even if the master never sends it away


class Idle(User):
    @task
    def nothing(self) -> None:
        gevent.sleep(1)


def fake_rows(n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        new_record(Planned(f"rogue-{n}-{i}", "free", now, 10), "load-w0", "t") for i in range(3)
    ]


def main(host: str, port: int, out: Path, claim: str | None = None) -> int:
    env = Environment(user_classes=[Idle])
    runner = env.create_worker_runner(host, port)
    if claim:
        runner.client_id = claim  # Locust writes it into every message this worker sends
    received: list[dict[str, Any]] = []
    most_users = 0

    def keep(kind: str) -> Any:
        def on(environment: Any, msg: Any, **_: Any) -> None:
            data = msg.data if isinstance(msg.data, dict) else {}
            received.append({"type": kind, "keys": sorted(data)})
            if kind == "aichaos_challenge":
                runner.send_message("aichaos_proof", {"mac": "0" * 64})

        return on

    for kind in ("aichaos_challenge", "aichaos_refused", "aichaos_assign", "aichaos_stop"):
        runner.register_message(kind, keep(kind))

    def push() -> None:
        for n in range(int(LIFETIME_S / 0.5)):
            runner.send_message("aichaos_rows", {"worker": "load-w0", "rows": fake_rows(n)})
            runner.send_message("aichaos_done", {"worker": "load-w0"})
            if n == 0:
                runner.send_message("aichaos_hello", {})
            gevent.sleep(0.5)

    pusher = gevent.spawn(push)
    ended = gevent.spawn(runner.greenlet.join)  # Locust's greenlets end on the master's quit
    deadline = time.monotonic() + LIFETIME_S
    while not ended.ready() and time.monotonic() < deadline:
        most_users = max(most_users, runner.user_count)
        gevent.sleep(0.1)
    pusher.kill()
    quit_by_master = ended.ready()
    result = {"received": received, "most_users": most_users, "quit_by_master": quit_by_master}
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    claimed = sys.argv[4] if len(sys.argv) > 4 else None
    sys.exit(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), claimed))
