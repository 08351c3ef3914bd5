"""Progress lines on stderr: a redrawn bar on a terminal, periodic plain lines in CI logs."""

from __future__ import annotations

import io

from gate._config.dataset import Case
from gate._run.progress import Progress
from gate._traces.rows import Call, CallResult


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as sys.stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def result(error: str | None = None) -> CallResult:
    return CallResult(Call("baseline", Case("q1", {"q": 1}), 0), error)


def test_ci_logs_get_a_first_line_and_a_last_line_not_one_per_call() -> None:
    stream = io.StringIO()
    progress = Progress(stream, interval_s=3600)
    progress.start(4, "round 1", spent_usd=0.5)
    for error in (None, "boom", None, None):
        progress(result(error))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("gate: round 1: 1/4 calls, 0 errors, $0.5 spent before this round")
    assert lines[1].startswith("gate: round 1: 4/4 calls, 1 error, $0.5 spent before this round")


def test_a_terminal_gets_a_bar_redrawn_in_place_ending_with_a_newline() -> None:
    stream = Terminal()
    progress = Progress(stream)
    progress.start(2, "round 1")
    progress(result())
    progress(result())
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "round 1 " + "█" * 30 + " 2/2 calls, 0 errors" in text
