"""One way to wait for something: poll a check until it holds or a timeout passes.

Every wait in aichaos (a server answering, a process gone, a replica ready again, a file
written) is this loop, bounded in time *and* in count, so a clock that jumps or a check that
returns at once cannot spin it forever.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Call ``check`` every ``interval`` seconds until it returns something true, which is
    returned; None once ``timeout`` seconds have passed. ``check`` runs at least once."""
    deadline = time.monotonic() + timeout
    for _ in range(max(1, math.ceil(timeout / interval)) + 1):
        got = check()
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    return None
