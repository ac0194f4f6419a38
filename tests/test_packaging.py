"""The distribution: a wheel that installs into a fresh environment, and the CLI's surface."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from aichaos.harness.cli import app

SUBPACKAGES = ["harness", "scenarios", "experiments", "slo", "reports", "fixtures"]


@pytest.mark.timeout(900)  # a fresh venv installs every dependency: minutes on a busy box
def test_wheel_installs_into_a_fresh_venv_and_imports_outside_the_repo(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(wheel_dir)],
        check=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    (wheel,) = wheel_dir.glob("aichaos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "aichaos/fixtures/llm_sim/profiles/llama-3.1-8b-h100.yaml" in names
    assert "aichaos/fixtures/llm_model/build.py" in names  # `aichaos model build` runs it
    assert not any(n.split("/")[0] in SUBPACKAGES for n in names)  # nothing at the top level
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)],
                   check=True, timeout=800)  # fmt: skip
    script = (
        "import importlib, pkgutil, aichaos\n"
        "pkgs = [m.name for m in pkgutil.walk_packages(aichaos.__path__, 'aichaos.') if m.ispkg]\n"
        "for name in pkgs: importlib.import_module(name)\n"
        "print(aichaos.__version__, aichaos.__file__, *sorted(pkgs))\n"
    )
    out = subprocess.run([py, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()  # fmt: skip
    assert out[0] == "0.1.0" and str(venv) in out[1]
    assert {f"aichaos.{p}" for p in SUBPACKAGES} | {"aichaos.fixtures.llm_sim"} <= set(out[2:])
    assert (venv / "bin" / "aichaos").exists()


def test_version_and_help_on_every_command():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("aichaos ")

    def walk(group, path):
        yield path
        for name, sub in getattr(group, "commands", {}).items():
            yield from walk(sub, [*path, name])

    import typer.main

    root = typer.main.get_command(app)
    paths = list(walk(root, []))
    assert ["sim", "serve"] in paths and ["demo"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_simulator_runs_as_its_own_module():
    out = subprocess.run([sys.executable, "-m", "aichaos.fixtures.llm_sim", "profiles"],
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    assert "llama-3.1-8b-h100" in out and "fixed-latency" in out and "hosted-api" in out


def test_fixtures_import_nothing_from_the_toolkit():
    toolkit = ("harness", "scenarios", "experiments", "slo", "reports")
    for path in Path(REPO, "fixtures").rglob("*.py"):
        text = path.read_text()
        for name in toolkit:
            assert f"aichaos.{name}" not in text, f"{path} imports aichaos.{name}"
