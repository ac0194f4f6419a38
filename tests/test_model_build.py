"""``aichaos model build``: the same model from the same seed, byte for byte, offline."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from conftest import vllm_python

AICHAOS = str(Path(sys.executable).parent / "aichaos")


def digests(directory: Path) -> dict[str, str]:
    """Every file of a model directory (the build's own manifest left out) by its sha256."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "build.json"
    }


def build(out: Path, seed: int) -> dict[str, str]:
    done = subprocess.run([AICHAOS, "model", "build", "--out", str(out), "--seed", str(seed)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(out)
    return digests(out)


def test_the_same_seed_builds_the_same_model_and_another_seed_other_weights(tmp_path):
    vllm_python()  # the build runs with vLLM's interpreter (skipped without one, outside CI)
    first = build(tmp_path / "a", 7)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(first)
    assert build(tmp_path / "b", 7) == first
    other = build(tmp_path / "c", 8)
    assert other["model.safetensors"] != first["model.safetensors"]
    assert other["tokenizer.json"] == first["tokenizer.json"]  # trained on the corpus alone
