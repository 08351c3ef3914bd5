"""From hand-built trace rows to decided checks, regressions and unpaired cases (evaluate, no MLflow)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from gate._config.schema import GateConfig
from gate._decide.checks import CheckResult
from gate._decide.evaluate import Evaluation, evaluate
from gate._traces.rows import TraceRow

Values = Mapping[str, float | None]


def config(*checks: dict[str, Any], cases: int = 40) -> GateConfig:
    return GateConfig.model_validate(
        {
            "version": 1,
            "cases": [{"id": f"q{i}", "inputs": {"question": f"question {i}"}} for i in range(cases)],
            "baseline": {"target": "apps:v1"},
            "candidate": {"target": "apps:v2"},
            "checks": list(checks),
        }
    )


def row(variant: str, case_id: str, repeat: int, values: Values) -> TraceRow:
    return TraceRow(f"tr-{variant[0]}-{case_id}-{repeat}", variant, case_id, repeat, dict(values))


def ok(latency: float = 100.0, tokens: float = 50.0) -> dict[str, float | None]:
    return {"latency_ms": latency, "error": 0.0, "total_tokens": tokens, "cost_usd": None}


def err() -> dict[str, float | None]:
    return {"latency_ms": 5.0, "error": 1.0, "total_tokens": 0.0, "cost_usd": None}


def rows_for(
    cases: int,
    repeats: int,
    baseline: Callable[[int, int], Values],
    candidate: Callable[[int, int], Values],
) -> list[TraceRow]:
    """Rows of both versions for cases q0..q{cases-1}, each value given by (case index, repeat)."""
    out = []
    for c in range(cases):
        for r in range(repeats):
            out.append(row("baseline", f"q{c}", r, baseline(c, r)))
            out.append(row("candidate", f"q{c}", r, candidate(c, r)))
    return out


def noisy_latency(seed: int, cases: int, repeats: int) -> np.ndarray:
    """Per-(case, repeat) latencies: a lognormal case difficulty times lognormal call noise."""
    rng = np.random.default_rng(seed)
    return 200 * np.exp(rng.normal(0, 0.5, size=(cases, 1)) + rng.normal(0, 0.3, size=(cases, repeats)))


def only(evaluation: Evaluation) -> CheckResult:
    """The config's one check (the gate's default error guard, when added, is not the config's)."""
    (check,) = [c for c in evaluation.checks if not c.default]
    return check


# --- checks on per-trace metrics ---


def test_identical_rows_pass_every_check() -> None:
    latency = noisy_latency(seed=1, cases=40, repeats=3)

    def same(c: int, r: int) -> Values:
        return ok(float(latency[c, r]), tokens=float(40 + c))

    rows = rows_for(40, 3, same, same)
    cfg = config(
        {"metric": "latency_ms/p95", "max_increase_pct": 10},
        {"metric": "latency_ms/mean", "max_increase": 5, "max_decrease_pct": 10},
        {"metric": "latency_ms/median", "max_increase_pct": 0},
        {"metric": "total_tokens/mean", "max_increase_pct": 5},
        {"metric": "error/rate", "at_most": 0},
        {"metric": "cases_regressed/count", "at_most": 0},
    )
    evaluation = evaluate(cfg, rows, frozenset())
    assert [(c.metric, c.status) for c in evaluation.checks] == [(c.metric, "pass") for c in evaluation.checks]


def test_a_sixty_percent_latency_rise_fails_a_ten_percent_limit_on_the_relative_change() -> None:
    latency = noisy_latency(seed=2, cases=40, repeats=3)
    rows = rows_for(40, 3, lambda c, r: ok(float(latency[c, r])), lambda c, r: ok(float(latency[c, r]) * 1.6))
    check = only(evaluate(config({"metric": "latency_ms/p95", "max_increase_pct": 10}), rows, frozenset()))
    assert check.status == "fail"
    assert check.ci_of == "delta_pct"
    assert check.ci_low is not None and check.ci_low > 10
    assert check.n_pairs == 40


def test_a_small_effect_in_noisy_data_over_few_cases_is_inconclusive() -> None:
    rng = np.random.default_rng(3)
    base, cand = 200 * np.exp(rng.normal(0, 0.4, size=(2, 5)))  # independent noise, one call per case
    rows = rows_for(5, 1, lambda c, r: ok(float(base[c])), lambda c, r: ok(float(cand[c]) * 1.05))
    check = only(evaluate(config({"metric": "latency_ms/mean", "max_increase_pct": 10}, cases=5), rows, frozenset()))
    assert check.status == "inconclusive"
    assert "inconclusive" in check.message
    assert check.ci_low is not None and check.ci_high is not None
    assert check.ci_low <= 10 < check.ci_high  # the interval straddles the limit


def test_a_per_trace_metric_has_no_p_value() -> None:
    rows = rows_for(10, 2, lambda c, r: ok(), lambda c, r: ok())
    check = only(evaluate(config({"metric": "latency_ms/mean", "max_increase_pct": 10}), rows, frozenset()))
    assert check.p_value is None


# --- error rate: exact rule ---


def test_error_rate_at_most_zero_passes_when_no_error_is_seen() -> None:
    rows = rows_for(40, 3, lambda c, r: ok(), lambda c, r: ok())
    check = only(evaluate(config({"metric": "error/rate", "at_most": 0}), rows, frozenset()))
    assert check.status == "pass"
    assert check.p_value == 1.0  # McNemar with no discordant pair


def test_error_rate_at_most_zero_fails_on_a_single_candidate_error() -> None:
    # Exact, not bootstrapped: the Clopper–Pearson lower bound of 1 error in 120 calls is above 0, so the
    # candidate's rate is shown to break "at most 0", even though the lone error vanishes from many resamples.
    rows = rows_for(40, 3, lambda c, r: ok(), lambda c, r: err() if (c, r) == (17, 1) else ok())
    check = only(evaluate(config({"metric": "error/rate", "at_most": 0}), rows, frozenset()))
    assert check.status == "fail"
    assert check.ci_of == "candidate"
    assert check.ci_low is not None and check.ci_low > 0
    assert check.p_value is not None


# --- per-case regressions ---


def regression_rows() -> list[TraceRow]:
    """q3 and q7 go from OK to ERROR on every repeat; q5 errs in both; q1 errs on one candidate repeat only."""

    def candidate(c: int, r: int) -> Values:
        return err() if c in (3, 5, 7) or (c, r) == (1, 0) else ok()

    return rows_for(10, 3, lambda c, r: err() if c == 5 else ok(), candidate)


def test_a_case_ok_on_every_baseline_repeat_and_error_on_every_candidate_repeat_is_a_regression() -> None:
    evaluation = evaluate(config({"metric": "latency_ms/mean", "max_increase_pct": 10}), regression_rows(), frozenset())
    q3 = next(r for r in evaluation.regressions if r.case_id == "q3")
    assert q3.rule == "ok_to_error"
    assert q3.baseline_trace_ids == ("tr-b-q3-0", "tr-b-q3-1", "tr-b-q3-2")
    assert q3.candidate_trace_ids == ("tr-c-q3-0", "tr-c-q3-1", "tr-c-q3-2")


def test_cases_that_err_in_both_versions_or_on_only_some_repeats_are_not_regressions() -> None:
    evaluation = evaluate(config({"metric": "latency_ms/mean", "max_increase_pct": 10}), regression_rows(), frozenset())
    assert sorted(r.case_id for r in evaluation.regressions) == ["q3", "q7"]


def test_golden_regressions_sort_first() -> None:
    cfg = config({"metric": "latency_ms/mean", "max_increase_pct": 10})
    evaluation = evaluate(cfg, regression_rows(), frozenset({"q7"}))
    assert [(r.case_id, r.golden) for r in evaluation.regressions] == [("q7", True), ("q3", False)]


def test_cases_regressed_count_at_most_zero_fails_on_one_regression() -> None:
    rows = rows_for(10, 3, lambda c, r: ok(), lambda c, r: err() if c == 4 else ok())
    check = only(evaluate(config({"metric": "cases_regressed/count", "at_most": 0}), rows, frozenset()))
    assert check.status == "fail"
    assert check.candidate == 1


def test_cases_regressed_count_at_most_zero_passes_without_regressions() -> None:
    rows = rows_for(10, 3, lambda c, r: err() if c == 4 else ok(), lambda c, r: err() if c == 4 else ok())
    check = only(evaluate(config({"metric": "cases_regressed/count", "at_most": 0}), rows, frozenset()))
    assert check.status == "pass"
    assert check.candidate == 0


# --- unpaired and missing data ---


def test_a_case_with_only_baseline_rows_is_unpaired_and_not_counted_as_a_pair() -> None:
    rows = rows_for(10, 2, lambda c, r: ok(100.0 + c), lambda c, r: ok(100.0 + c))
    rows += [row("baseline", "q-orphan", r, ok(5000.0)) for r in range(2)]
    evaluation = evaluate(config({"metric": "latency_ms/mean", "max_increase_pct": 10}), rows, frozenset())
    assert evaluation.unpaired.baseline_only == ("q-orphan",)
    assert evaluation.unpaired.candidate_only == ()
    assert evaluation.n_cases == 10
    assert only(evaluation).n_pairs == 10


def test_a_check_on_a_metric_with_no_values_is_missing() -> None:
    rows = rows_for(10, 2, lambda c, r: ok(), lambda c, r: ok())  # cost_usd is None on every row
    cfg = config({"metric": "cost_usd/mean", "max_increase_pct": 10}, {"metric": "cost_usd/sum", "at_most": 1})
    evaluation = evaluate(cfg, rows, frozenset())
    assert [c.status for c in evaluation.checks if not c.default] == ["missing", "missing"]
    assert all(c.n_pairs == 0 for c in evaluation.checks if not c.default)


def test_an_absolute_bound_reported_missing_does_not_say_the_bound_holds() -> None:
    rows = rows_for(10, 2, lambda c, r: ok(), lambda c, r: {**ok(), "cost_usd": 0.5})  # candidate-only values
    check = only(evaluate(config({"metric": "cost_usd/mean", "at_most": 1}), rows, frozenset()))
    assert check.status == "missing"
    assert "within" not in check.message


def test_the_share_of_regressed_cases_is_not_reported_in_cases() -> None:
    rows = rows_for(10, 3, lambda c, r: ok(), lambda c, r: err() if c == 4 else ok())
    check = only(evaluate(config({"metric": "cases_regressed/share", "at_most": 0}), rows, frozenset()))
    assert check.status == "fail"
    assert check.candidate == pytest.approx(0.1)
    assert "0.1 cases" not in check.message
