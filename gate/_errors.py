"""The gate's error tree; each class maps to one exit code.

    GateError                 base; never raised directly
    ├── ConfigError           exit 2: the config, dataset, targets or command line are wrong
    └── RunError              exit 3: the run could not produce trustworthy data
                              (endpoint down, every call failed, traces missing, no data for a check)

A ``KeyboardInterrupt`` is not a ``GateError``: the CLI maps it to exit 130, and ``Interrupted``/``Terminated``
(exit 130/143) carry what an interrupted run did so far as a typed field.
"""

from __future__ import annotations

from dataclasses import dataclass


class GateError(Exception):
    """Base class for every error the gate reports without a traceback."""

    exit_code = 3


class ConfigError(GateError):
    """Raised when user input is invalid. ``problems`` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RunError(GateError):
    """Raised when the run cannot yield a verdict that could be trusted."""

    exit_code = 3


@dataclass(frozen=True)
class PartialRun:
    """What an interrupted run did so far: calls finished per version, and where their traces are."""

    session: str
    experiment_id: str
    calls: dict[str, int]
    errors: dict[str, int]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (exit 130) during a run, carrying what the run did so far when it knows."""

    exit_code = 130

    def __init__(self, partial: PartialRun | None = None) -> None:
        super().__init__()
        self.partial = partial


class Terminated(Interrupted):
    """SIGTERM (a CI runner cancelling the job): handled like Ctrl-C, exit 143."""

    exit_code = 143
