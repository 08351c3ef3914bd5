"""The status and exit code of a gate: the one rule that turns calls, trace discrepancies and checks into 0/1/3.

Exit codes (public API): 0 pass (warnings allowed), 1 a check with severity error failed, 3 run error (missing
data, trace count mismatch, every call failed, error budget exhausted). ``--report-only`` (and a shard, which
never decides alone) turns a 1 into a 0 and says so; it never hides a 3. Exit 2 (config) and 130/143
(interrupted) are decided before any data exists, by the error classes in ``gate._errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gate._config.schema import VARIANTS
from gate._decide.evaluate import Evaluation
from gate._errors import RunError
from gate._traces.rows import CallResult

__all__ = ["Decision", "decide", "first_errors"]


@dataclass(frozen=True)
class Decision:
    """The verdict's status and exit code, and why."""

    status: Literal["pass", "fail", "error"]
    exit_code: int
    reason: str | None = None  # "run" when the status is error
    error: str | None = None
    report_only: bool = False  # a failing exit 1 was turned into 0 by --report-only


def first_errors(results: Sequence[CallResult], limit: int = 3) -> list[str]:
    """Up to ``limit`` distinct error messages, in call order."""
    seen: list[str] = []
    for result in results:
        if result.error and result.error not in seen:
            seen.append(result.error)
        if len(seen) == limit:
            break
    return seen


def decide(
    results: Sequence[CallResult],
    problems: Sequence[str],
    evaluation: Evaluation,
    max_error_rate: float | None = None,
    *,
    report_only: bool = False,
) -> Decision:
    """The status and exit code from the calls, the trace discrepancies and the checks.

    Missing data outranks a pass: a run with no usable data, missing traces, or a check without values is an
    error (exit 3), never a pass. A check that failed outranks a check without data (a candidate whose every
    call failed has no latency, and has regressed: exit 1). An inconclusive check counts
    as its ``on_inconclusive`` says; a regression of a golden case fails the gate. With ``report_only``
    a fail exits 0 (and says so); an error still exits 3.
    """
    decision = _decide(results, problems, evaluation, max_error_rate)
    if report_only and decision.exit_code == 1:
        return Decision(decision.status, 0, decision.reason, decision.error, report_only=True)
    return decision


def _decide(
    results: Sequence[CallResult], problems: Sequence[str], evaluation: Evaluation, max_error_rate: float | None
) -> Decision:
    checks = evaluation.checks
    if all(r.error for r in results):
        first = " | ".join(first_errors(results))
        error = f"every call of both versions failed, so there is nothing to compare; first errors: {first}"
        return Decision("error", RunError.exit_code, "run", error)
    if problems:
        why = "traces do not match the calls made: " + "; ".join(problems)
        return Decision("error", RunError.exit_code, "run", why)
    if max_error_rate is not None:
        for variant in VARIANTS:
            mine = [r for r in results if r.call.variant == variant]
            rate = sum(1 for r in mine if r.error) / max(len(mine), 1)
            if rate > max_error_rate:
                first = " | ".join(first_errors([r for r in mine if r.error]))
                why = f"the {variant}'s error rate {rate:.1%} is above run.max_error_rate {max_error_rate:.1%}"
                error = f"error budget exhausted: {why}; first errors: {first}"
                return Decision("error", RunError.exit_code, "run", error)
    failing = [
        c
        for c in checks
        if c.severity == "error"
        and (c.status == "fail" or (c.status == "inconclusive" and c.on_inconclusive == "fail"))
    ]
    if failing or any(r.golden for r in evaluation.regressions):
        return Decision("fail", 1)  # a regression found outranks data missing elsewhere: the gate does not pass
    if missing := [c.metric for c in checks if c.status == "missing"]:
        why = f"no data for {', '.join(missing)}; a check without data cannot pass"
        return Decision("error", RunError.exit_code, "run", why)
    return Decision("pass", 0)
