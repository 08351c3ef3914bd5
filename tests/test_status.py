"""The exit-code rule (``gate._decide.status.decide``), one case per exit code and per ``on_inconclusive`` /
``--report-only`` combination. The CLI tests show the same codes end to end; these pin the rule itself."""

from __future__ import annotations

from typing import Literal

import pytest

from gate._config.dataset import Case
from gate._decide.checks import CheckResult
from gate._decide.evaluate import Evaluation
from gate._decide.regressions import Regression, Unpaired
from gate._decide.status import Decision, decide
from gate._traces.rows import Call, CallResult

CASE = Case("c1", {"question": "q"})


def calls(errors: dict[str, int] | None = None, n: int = 4) -> list[CallResult]:
    """``n`` calls per version; the first ``errors[variant]`` of each version failed."""
    errors = errors or {}
    return [
        CallResult(Call(v, CASE, i), "RuntimeError: boom" if i < errors.get(v, 0) else None)
        for v in ("baseline", "candidate")
        for i in range(n)
    ]


def check(
    status: Literal["pass", "fail", "warn", "inconclusive", "missing"],
    on_inconclusive: Literal["fail", "warn", "pass"] | None = None,
    metric: str = "latency_ms/p95",
) -> CheckResult:
    return CheckResult(metric, status, "error", 1.0, 1.0, 0.0, 0.0, {}, "", on_inconclusive=on_inconclusive)


def evaluation(*checks: CheckResult, golden_regression: bool = False) -> Evaluation:
    regressions = [Regression("c1", "ok_to_error", "OK → ERROR", True, ("t1",), ("t2",))] if golden_regression else []
    return Evaluation({"baseline": {}, "candidate": {}}, list(checks), regressions, Unpaired((), ()), n_cases=1)


def test_every_check_passing_exits_0() -> None:
    assert decide(calls(), [], evaluation(check("pass"), check("warn"))) == Decision("pass", 0)


def test_a_failing_check_exits_1() -> None:
    assert decide(calls(), [], evaluation(check("pass"), check("fail"))) == Decision("fail", 1)


def test_a_regressed_golden_case_exits_1_even_when_every_check_passes() -> None:
    assert decide(calls(), [], evaluation(check("pass"), golden_regression=True)) == Decision("fail", 1)


@pytest.mark.parametrize(
    ("on_inconclusive", "report_only", "expected"),
    [
        ("fail", False, Decision("fail", 1)),
        ("fail", True, Decision("fail", 0, report_only=True)),
        ("warn", False, Decision("pass", 0)),
        ("warn", True, Decision("pass", 0)),
        ("pass", False, Decision("pass", 0)),
        ("pass", True, Decision("pass", 0)),
    ],
)
def test_an_inconclusive_check_counts_as_its_on_inconclusive_says(
    on_inconclusive: Literal["fail", "warn", "pass"], report_only: bool, expected: Decision
) -> None:
    got = decide(calls(), [], evaluation(check("inconclusive", on_inconclusive)), report_only=report_only)
    assert got == expected


def test_report_only_turns_a_fail_into_exit_0_and_says_so() -> None:
    got = decide(calls(), [], evaluation(check("fail")), report_only=True)
    assert (got.status, got.exit_code, got.report_only) == ("fail", 0, True)


def test_every_call_failing_exits_3_naming_the_errors() -> None:
    got = decide(calls({"baseline": 4, "candidate": 4}), [], evaluation(check("pass")))
    assert (got.status, got.exit_code, got.reason) == ("error", 3, "run")
    assert got.error == (
        "every call of both versions failed, so there is nothing to compare; first errors: RuntimeError: boom"
    )


def test_traces_that_do_not_match_the_calls_exit_3_and_report_only_does_not_hide_it() -> None:
    for report_only in (False, True):
        got = decide(calls(), ["expected 8 traces, 1 missing"], evaluation(check("pass")), report_only=report_only)
        assert got == Decision(
            "error", 3, "run", "traces do not match the calls made: expected 8 traces, 1 missing", report_only=False
        )


def test_an_exhausted_error_budget_exits_3_before_the_checks() -> None:
    got = decide(calls({"candidate": 2}), [], evaluation(check("fail")), max_error_rate=0.25)
    assert got.exit_code == 3
    assert got.error == (
        "error budget exhausted: the candidate's error rate 50.0% is above run.max_error_rate 25.0%; "
        "first errors: RuntimeError: boom"
    )
    assert decide(calls({"candidate": 1}), [], evaluation(check("pass")), max_error_rate=0.25).exit_code == 0


def test_a_check_without_data_exits_3_never_passes() -> None:
    missing = check("missing", metric="output_tokens/mean")
    got = decide(calls(), [], evaluation(check("pass"), missing), report_only=True)
    assert got == Decision("error", 3, "run", "no data for output_tokens/mean; a check without data cannot pass")
