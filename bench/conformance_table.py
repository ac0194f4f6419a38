"""Where the simulator still differs from a real vLLM engine, as the conformance suite finds it.

Runs tests/test_conformance.py against both (it needs vLLM: ``make vllm-env`` or
``$AICHAOS_VLLM_PYTHON``), which writes the table of differences, then prints it, or with
``--readme`` puts it in README.md between the conformance markers of the simulator section.

Run: .venv/bin/python bench/conformance_table.py [--readme]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BEGIN = "<!-- conformance table: bench/conformance_table.py --readme -->"
END = "<!-- end of conformance table -->"
SUITE_TIMEOUT_S = 1200


def run_suite(out: Path) -> None:
    env = {**os.environ, "AICHAOS_CONFORMANCE_TABLE": str(out)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_conformance.py"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, timeout=SUITE_TIMEOUT_S)
    if done.returncode != 0 or not out.exists():
        sys.exit(f"the conformance suite failed (exit {done.returncode}); no table written")


def splice(readme: str, table: str) -> str:
    """The README with the text between the markers replaced by ``table``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        sys.exit(f"README.md has no '{BEGIN}' ... '{END}' block")
    return readme[: start + len(BEGIN)] + "\n" + table + readme[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write it into README.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "conformance.md"
        run_suite(out)
        table = out.read_text()
    if args.readme:
        README.write_text(splice(README.read_text(), table))
    print(table, end="")


if __name__ == "__main__":
    main()
