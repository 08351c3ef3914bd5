"""Progress on stderr while calls run: a redrawn bar on a terminal, a plain line now and then in CI logs."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the CLI imports this module for every command: no config models at start-up
    from gate._traces.rows import CallResult

__all__ = ["Progress"]


class Progress:
    """Counts calls as they finish. ``start`` opens a round; calling the object records one result."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s
        self.total = self.done = self.errors = 0
        self.label = ""
        self.spent_usd: float | None = None
        self._started = self._last = time.monotonic()

    def start(self, total: int, label: str, spent_usd: float | None = None) -> None:
        """A new round of ``total`` calls; ``spent_usd`` is what earlier rounds cost, where known."""
        self.total, self.done, self.label = total, 0, label
        self.spent_usd = spent_usd
        self._last = time.monotonic() - self.interval_s  # print the first line at once

    def __call__(self, result: CallResult) -> None:
        self.done += 1
        self.errors += result.error is not None
        now = time.monotonic()
        finished = self.done == self.total
        if self.tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "█" * filled + "·" * (width - filled)
            self.stream.write(f"\r{self.label} {bar} {self.line()}" + ("\n" if finished else ""))
            self.stream.flush()
        elif finished or now - self._last >= self.interval_s:
            self.stream.write(f"gate: {self.label}: {self.line()}\n")
            self.stream.flush()
            self._last = now

    def line(self) -> str:
        """``37/44 calls, 1 error, 12 s``."""
        errors = f"{self.errors} error{'s' if self.errors != 1 else ''}"
        spent = f", ${self.spent_usd:.4g} spent before this round" if self.spent_usd else ""
        return f"{self.done}/{self.total} calls, {errors}{spent}, {time.monotonic() - self._started:.0f} s"
