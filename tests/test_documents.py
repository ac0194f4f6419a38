"""The one reader of input files: every kind of input refuses, in one line, what used to end
in a traceback, a crash or a silently wrong value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aichaos.documents import MAX_ALIASES, read_document
from aichaos.rundir import InputError

AICHAOS = str(Path(sys.executable).with_name("aichaos"))
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 30)}]\n" for i in range(1, 12)
)  # 11 levels of 30 references: 30**11 leaves once expanded


@pytest.mark.parametrize(
    ("name", "content", "where", "expected"),
    [
        ("dup.yaml", "name: a\nseed: 1\nname: b\n", "line 3", "each key once"),
        ("dup.json", '{"title": "a", "title": "b"}', "file", "each key once"),
        ("bomb.yaml", BOMB, "line", f"at most {MAX_ALIASES} YAML aliases"),
        ("inf.yaml", "rate: .inf\n", "rate", "a finite number"),
        ("inf.json", '{"at": Infinity}', "at", "a finite number"),
        ("big.json", '{"at": 1e999}', "at", "a finite number"),
        ("digits.yaml", "seed: " + "9" * 5000 + "\n", "file", "numbers Python can read"),
        ("long.yaml", "seed: " + "9" * 30 + "\n", "seed", "at most 18 digits"),
        ("deep.json", "[" * 200 + "]" * 200, "", "nesting at most 64 deep"),
        ("bad.yaml", "a: [\n", "line", "valid YAML"),
    ],
)
def test_bad_documents_are_one_line(tmp_path, name, content, where, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        read_document(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and where in message and expected in message
    assert "\n" not in message


def test_utf16_and_oversized_files(tmp_path):
    path = tmp_path / "utf16.yaml"
    path.write_bytes("name: x\n".encode("utf-16"))
    with pytest.raises(InputError, match="UTF-8 text"):
        read_document(path)
    path.write_bytes(b"#" * (5 * 1024 * 1024))
    with pytest.raises(InputError, match="at most 4 MiB"):
        read_document(path)
    assert read_document(tmp_path / "ok.yaml" if (tmp_path / "ok.yaml").write_text("a: [1, 2]")
                         else None) == {"a": [1, 2]}  # fmt: skip


@pytest.mark.parametrize("kind", ["scenario", "slo", "experiment", "topology"])
def test_every_input_kind_goes_through_it(tmp_path, kind):
    """A duplicate key in each kind of input file is exit 2 and one line, nothing started."""
    path = tmp_path / ("input.json" if kind == "experiment" else "input.yaml")
    if kind == "experiment":
        path.write_text(json.dumps({"title": "t"})[:-1] + ', "title": "u"}')
    else:
        path.write_text("name: a\nname: b\n")
    flag = {"scenario": "--scenario", "slo": "--slo", "experiment": "--experiment",
            "topology": "--topology"}[kind]  # fmt: skip
    done = subprocess.run([AICHAOS, "run", flag, str(path), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "each key once" in lines[0] and str(path) in lines[0], lines
    assert not (tmp_path / "runs").exists()
