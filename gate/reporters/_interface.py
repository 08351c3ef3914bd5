"""A reporter is a pure function from the verdict to text; ``register`` adds one under a format name."""

from __future__ import annotations

from collections.abc import Callable

from gate._verdict.schema import Verdict

__all__ = ["REPORTERS", "Reporter", "register"]

Reporter = Callable[[Verdict], str]
REPORTERS: dict[str, Reporter] = {}


def register(name: str) -> Callable[[Reporter], Reporter]:
    """Register a reporter under ``--report NAME``; the built-ins use this too."""

    def decorate(reporter: Reporter) -> Reporter:
        REPORTERS[name] = reporter
        return reporter

    return decorate
