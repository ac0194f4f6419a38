"""The errors every aichaos command may end on, each carrying its exit code (``exits``).

A command raises one of these and goes no further; the one handler at the CLI root
(``harness.cli``) prints its one line to stderr and exits with its code, so no command
translates errors to exit codes by hand. The message is one line, whatever the input held:
a file's keys with newlines in them come out escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import exits


def one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class AichaosError(Exception):
    """An error a user can act on; ``str()`` is one line; ``exit_code`` ends the command."""

    exit_code = exits.NOT_COMPLETED

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


class InputError(AichaosError):
    """A bad user input: one line naming the file, the field and what was expected (exit 2)."""

    exit_code = exits.BAD_INPUT

    def __init__(self, file: str | Path, field: str, expected: str, got: Any = None):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        tail = "" if got is None else f", got {got!r}"
        super().__init__(f"{self.file}: {field}: expected {expected}{tail}")


class BadInput(AichaosError):
    """A bad input already described in one line by its reader (exit 2)."""

    exit_code = exits.BAD_INPUT


class NotCompleted(AichaosError):
    """What was asked could not be done: a stack, a target, an engine or a process failed
    (exit 3)."""

    exit_code = exits.NOT_COMPLETED
