"""Deciding checks from two aggregated values: pure functions, hand-built inputs."""

from __future__ import annotations

import random

import pytest

from gate._config.schema import CheckConfig
from gate._decide.checks import evaluate_check, evaluate_checks


def check(**fields: object) -> CheckConfig:
    return CheckConfig.model_validate({"metric": "latency_ms/p95", **fields})


def test_identical_values_pass() -> None:
    result = evaluate_check(check(max_increase_pct=25), 812.0, 812.0)
    assert result.status == "pass"
    assert result.delta == 0 and result.delta_pct == 0
    assert result.message == "latency_ms/p95 unchanged (812.0 → 812.0 ms), within +25%"


def test_rise_beyond_the_limit_fails_and_quotes_the_numbers() -> None:
    result = evaluate_check(check(max_increase_pct=25), 812.0, 1015.5)
    assert result.status == "fail"
    assert result.delta == pytest.approx(203.5)
    assert result.delta_pct == pytest.approx(25.06, abs=0.01)
    assert result.message == "latency_ms/p95 rose 25.1% (812.0 → 1,015.5 ms), limit +25%"


def test_rise_within_the_limit_passes() -> None:
    result = evaluate_check(check(max_increase_pct=25), 812.0, 960.5)
    assert result.status == "pass"
    assert result.message == "latency_ms/p95 rose 18.3% (812.0 → 960.5 ms), within +25%"


def test_warn_severity_warns_instead_of_failing() -> None:
    assert evaluate_check(check(max_increase_pct=10, severity="warn"), 100.0, 200.0).status == "warn"


def test_a_fall_never_breaks_an_increase_bound() -> None:
    assert evaluate_check(check(max_increase_pct=0, max_increase=0), 100.0, 50.0).status == "pass"


def test_max_decrease_pct_fails_on_a_large_fall() -> None:
    result = evaluate_check(CheckConfig(metric="response_chars/mean", max_decrease_pct=20), 500.0, 300.0)
    assert result.status == "fail"
    assert result.message == "response_chars/mean fell 40.0% (500.0 → 300.0 chars), limit -20%"


def test_absolute_change_bounds() -> None:
    assert evaluate_check(check(max_increase=50), 100.0, 151.0).status == "fail"
    assert evaluate_check(check(max_increase=50), 100.0, 150.0).status == "pass"
    assert evaluate_check(check(max_decrease=5), 100.0, 94.0).status == "fail"


def test_at_most_and_at_least_judge_the_candidate_alone() -> None:
    errors = CheckConfig(metric="error/rate", at_most=0.0)
    assert evaluate_check(errors, 0.5, 0.0).status == "pass"
    result = evaluate_check(errors, 0.0, 0.25)
    assert result.status == "fail"
    assert result.message == "error/rate rose by 0.25 (0 → 0.25), limit ≤ 0"
    assert evaluate_check(CheckConfig(metric="total_tokens/min", at_least=10), 50.0, 9.0).status == "fail"


def test_absolute_bound_needs_no_baseline() -> None:
    result = evaluate_check(CheckConfig(metric="error/rate", at_most=0.1), None, 0.05)
    assert result.status == "pass"
    assert result.delta is None


def test_relative_bound_from_zero_fails_on_any_rise() -> None:
    errors = CheckConfig(metric="error/rate", max_increase_pct=50)
    assert evaluate_check(errors, 0.0, 0.0).status == "pass"
    result = evaluate_check(errors, 0.0, 0.1)
    assert result.status == "fail"
    assert result.delta_pct is None


def test_missing_candidate_is_missing_not_pass() -> None:
    result = evaluate_check(check(max_increase_pct=25), 812.0, None)
    assert result.status == "missing"
    assert result.message == "latency_ms/p95: no data for candidate; a check without data cannot pass"


def test_missing_baseline_with_a_relative_bound_is_missing() -> None:
    assert evaluate_check(check(max_increase_pct=25), None, 812.0).status == "missing"


def test_every_broken_bound_is_named() -> None:
    result = evaluate_check(check(max_increase_pct=10, at_most=100), 50.0, 200.0)
    assert result.status == "fail"
    assert result.message.endswith("limit ≤ 100; limit +10%")


def test_evaluate_checks_reads_each_checks_metric() -> None:
    checks = [check(max_increase_pct=25), CheckConfig(metric="error/rate", at_most=0)]
    results = evaluate_checks(checks, {"latency_ms/p95": 100.0, "error/rate": 0.0}, {"latency_ms/p95": 200.0})
    assert [r.status for r in results] == ["fail", "missing"]


def test_identical_variants_always_pass() -> None:
    rng = random.Random(7)
    for _ in range(500):
        value = rng.choice([0.0, rng.uniform(-1e6, 1e6), rng.uniform(0, 1)])
        bounds = {"max_increase_pct": rng.uniform(0, 50), "max_decrease_pct": rng.uniform(0, 50), "max_increase": 0}
        assert evaluate_check(check(**bounds), value, value).status == "pass"


def test_loosening_a_bound_never_turns_a_pass_into_a_fail() -> None:
    rng = random.Random(11)
    for _ in range(1000):
        base, cand = rng.uniform(0, 1000), rng.uniform(0, 1000)
        name = rng.choice(["max_increase_pct", "max_decrease_pct", "max_increase", "max_decrease", "at_most"])
        limit = rng.uniform(0, 500)
        tight = evaluate_check(check(**{name: limit}), base, cand).status
        loose = evaluate_check(check(**{name: limit * 1.5 + 1}), base, cand).status
        assert not (tight == "pass" and loose == "fail"), (name, limit, base, cand)
