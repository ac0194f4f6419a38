"""The live progress line of a game day: phase, active fault, time left, requests, errors and
TTFT p95 so far. On a terminal it rewrites one line; elsewhere (CI logs) it prints a line every
``log_every`` seconds, so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from aichaos.load_health import LoadProgress


def format_line(phase: str, fault: str | None, left_s: float, stats: LoadProgress) -> str:
    errors = stats.errors_by_kind
    total_errors = sum(errors.values())
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(errors.items()) if v)
    p95 = stats.ttft_p95_s
    parts = [
        f"[{phase}]",
        f"fault: {fault or '-'}",
        f"{int(left_s) // 60:02d}:{int(left_s) % 60:02d} left",
        f"sent {stats.sent}/{stats.scheduled}",
        f"{stats.rps:.1f} rps",
        f"errors {total_errors}" + (f" ({kinds})" if kinds else ""),
        "TTFT p95 " + (f"{p95 * 1000:.0f} ms" if p95 is not None else "-"),
    ]
    return " | ".join(parts)


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, tty: bool | None = None, log_every=10.0):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.log_every = log_every
        self._last_log = 0.0
        self._width = 0

    def update(self, phase: str, fault: str | None, left_s: float, stats: LoadProgress) -> None:
        line = format_line(phase, fault, max(0.0, left_s), stats)
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            self.stream.write(line + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        """A line of its own (a phase change, a warning), above the progress line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(f"aichaos run: {message}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.flush()
