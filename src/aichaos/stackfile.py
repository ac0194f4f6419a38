"""The one reader of a running stack's state file (``RUN_DIR/stack.json``, written by the
supervisor after every change): the harness and the experiments, which must not import each
other, both read it here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import NotCompleted


class StackNotFound(NotCompleted):
    """No stack state where one was looked for; ``str()`` is one line for the user."""


def read_stack_state(path: Path) -> dict[str, Any]:
    """The state file as it is now; ``StackNotFound`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackNotFound(f"{path}: no stack state (is the stack up?)") from None
    except (OSError, ValueError) as exc:
        raise StackNotFound(f"{path}: unreadable stack state: {exc}") from None
