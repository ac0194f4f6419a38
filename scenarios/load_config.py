"""What the load runner hands its Locust processes: ``LoadConfig``, written to
``RUN_DIR/load/<runner>.config.json`` (private: it may hold the workers' token) and, without
the owner, the token and the sizing, sent by a master to each worker that joins."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, JsonValue

from aichaos.processes import ProcessRef

# what a master never sends its workers: who owns the run, the token, every request's sizes
# (a worker's share of the schedule carries its own)
MASTER_ONLY = frozenset({"owner", "token", "sizing"})


class LoadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner_id: str
    run_dir: Path
    target_url: str
    scenario: dict[str, JsonValue]  # ``Scenario.to_dict()``
    t0: float  # epoch seconds of the schedule's time 0
    workers: int = 1  # local and remote Locust workers (1 and not ``master``: standalone)
    master: bool = False
    master_bind: str = "127.0.0.1"
    master_port: int | None = None
    join_timeout_s: float = 60.0
    web_ui: bool = False
    web_port: int | None = None
    owner: ProcessRef | None = None  # the Locust processes stop when it dies
    token: str | None = None  # the run's worker token (distributed runs)
    sizing: dict[str, JsonValue] | None = None  # ``sizing.size_schedule(...).wire``
    model: str | None = None  # the served model, resolved by the master or standalone process

    @property
    def distributed(self) -> bool:
        return self.master or self.workers > 1

    def for_workers(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json", exclude=set(MASTER_ONLY))
