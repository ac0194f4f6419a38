"""Reading an input file (scenario, SLO spec, experiment, topology, proxy list): the one reader.

Every input goes through ``read_document`` before anything is built from it, so the bounds
hold for all of them: at most ``MAX_BYTES``, UTF-8 text, JSON (``.json``) or YAML, no key
twice in a mapping (the last would silently win), at most ``MAX_ALIASES`` YAML aliases (an
alias bomb expands a small file into gigabytes), nesting at most ``MAX_DEPTH`` deep, numbers
finite (``.inf``, ``Infinity``, ``1e999``) and integers of at most 18 digits. A problem is
one ``InputError`` line naming the file and where.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from .rundir import InputError

MAX_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 256
MAX_DEPTH = 64
MAX_INT = 10**18


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys and counting aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}", f"at most {MAX_ALIASES} YAML aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # PyYAML refuses unhashable keys itself
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise _Refused(f"line {line}", f"each key once in a mapping, {key!r} twice")
                seen.add(key)
        return super().construct_mapping(node, deep)


class _Refused(Exception):
    def __init__(self, where: str, expected: str):
        super().__init__(expected)
        self.where, self.expected = where, expected


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused("file", f"each key once in an object, {key!r} twice")
        out[key] = value
    return out


def read_document(path: str | Path, *, every: bool = False) -> Any:
    """The parsed file (``every``: the list of every YAML document in it, empty ones left
    out); ``InputError`` for anything outside the bounds above."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(path, "file", "a readable file", exc.strerror or str(exc)) from None
    if len(raw) > MAX_BYTES:
        raise InputError(path, "file", f"at most {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, "file", f"UTF-8 text (byte {exc.start} is not)") from None
    try:
        data = _parse(text, path.suffix == ".json", every)
    except _Refused as exc:
        raise InputError(path, exc.where, exc.expected) from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"line {exc.lineno}", f"valid JSON ({exc.msg})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "file"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(path, where, f"valid YAML ({problem})") from None
    except RecursionError:
        raise InputError(path, "file", f"nesting at most {MAX_DEPTH} deep") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise InputError(path, "file", f"numbers Python can read ({exc})") from None
    problem = _out_of_bounds(data)
    if problem is not None:
        raise InputError(path, problem[0], problem[1])
    return data


def _parse(text: str, is_json: bool, every: bool) -> Any:
    if is_json:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
        return [data] if every else data
    if every:
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    return yaml.load(text, Loader=_Loader)


def _out_of_bounds(data: Any) -> tuple[str, str] | None:
    """``(where, expected)`` for the first value outside the bounds, walked without
    recursion."""
    pending: list[tuple[str, Any, int]] = [("", data, 0)]
    seen: set[int] = set()
    while pending:
        where, node, depth = pending.pop()
        if depth > MAX_DEPTH:
            return where or "file", f"nesting at most {MAX_DEPTH} deep"
        if isinstance(node, dict | list):
            if id(node) in seen:
                continue
            seen.add(id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                child = f"{where}.{key}" if isinstance(node, dict) else f"{where}[{key}]"
                pending.append((child.lstrip("."), value, depth + 1))
        elif isinstance(node, float) and not math.isfinite(node):
            return where or "file", "a finite number"
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= MAX_INT:
            return where or "file", "an integer of at most 18 digits"
    return None
