"""Trade-offs: looser bounds that apply only when another metric is shown to have changed enough (evaluate on
hand-built rows, no MLflow; the config loader for the messages)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from test_evaluate import config, noisy_latency, only, row

from gate._config.schema import CheckConfig
from gate._decide.evaluate import evaluate
from gate._traces.rows import TraceRow

# A cheaper, slower model: latency may rise 30% (instead of 5%) if cost falls by 20% or more.
CHECK = {
    "metric": "latency_ms/mean",
    "max_increase_pct": 5,
    "trade_off": {"max_increase_pct": 30, "when": {"metric": "cost_usd/mean", "fell_pct_at_least": 20}},
}


def rows(latency_factor: float, cost_factor: float) -> list[TraceRow]:
    latency = noisy_latency(seed=8, cases=40, repeats=3)
    cost = noisy_latency(seed=9, cases=40, repeats=3) / 1e5
    out = []
    for c in range(40):
        for r in range(3):
            base = {"latency_ms": float(latency[c, r]), "error": 0.0, "cost_usd": float(cost[c, r])}
            cand = {
                **base,
                "latency_ms": base["latency_ms"] * latency_factor,
                "cost_usd": base["cost_usd"] * cost_factor,
            }
            out += [row("baseline", f"q{c}", r, base), row("candidate", f"q{c}", r, cand)]
    return out


def test_a_slower_but_much_cheaper_candidate_passes_under_the_trade_off() -> None:
    check = only(evaluate(config(CHECK), rows(1.15, 0.6), frozenset()))
    assert check.status == "pass", check.message
    assert check.bound == {"max_increase_pct": 30}
    assert "; trade-off applied: cost_usd/mean fell 20% or more (its change is at most -" in check.message


def test_the_same_slowdown_without_the_saving_fails_the_strict_bound() -> None:
    check = only(evaluate(config(CHECK), rows(1.15, 1.0), frozenset()))
    assert check.status == "fail", check.message
    assert check.bound == {"max_increase_pct": 5}
    assert "; trade-off not applied: not shown that cost_usd/mean fell 20% or more (its change is at most " in (
        check.message
    )


def test_a_saving_too_small_to_show_does_not_buy_the_looser_bound() -> None:
    check = only(evaluate(config(CHECK), rows(1.15, 0.85), frozenset()))  # cost -15%: short of 20%
    assert check.status == "fail" and check.bound == {"max_increase_pct": 5}, check.message


@pytest.mark.parametrize(
    ("trade_off", "error"),
    [
        ({"when": {"metric": "cost_usd/mean", "fell_pct_at_least": 20}}, "trade_off: no bound given"),
        (
            {"max_increase_pct": 30, "when": {"metric": "cost_usd/mean"}},
            "give one of fell_pct_at_least or rose_pct_at_least (e.g. fell_pct_at_least: 20)",
        ),
        (
            {"max_increase_pct": 30, "when": {"metric": "cases_regressed/count", "fell_pct_at_least": 5}},
            "'cases_regressed/count' counts cases; a trade-off needs a measured metric such as cost_usd/mean",
        ),
        ({"max_increase_pct": 30, "if": {"metric": "cost_usd/mean"}}, "when\n  Field required"),
    ],
)
def test_bad_trade_offs_are_refused_with_the_fix(trade_off: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CheckConfig.model_validate({"metric": "latency_ms/mean", "max_increase_pct": 5, "trade_off": trade_off})
    assert error in str(raised.value)


def test_a_fall_in_an_error_rate_is_shown_on_the_rates_own_bounds_not_the_bootstrap_alone() -> None:
    """Errors in 8 of 40 cases for the baseline and none for the candidate, one run each: every bootstrap resample
    says the rate fell by 100%, but at the 97.5% a trade-off is decided at, 0 of 40 calls is compatible with a rate
    of 8.8% against the baseline's 20% (whose own low bound is about 9%): a fall of 70% or more is not shown, one of
    40% is (the fall is at least 47%)."""

    def outcomes(cand_errors: int) -> list[TraceRow]:
        out = []
        for c in range(40):
            base = {"latency_ms": 100.0, "error": 1.0 if c < 8 else 0.0}
            cand = {"latency_ms": 120.0, "error": 1.0 if c < cand_errors else 0.0}
            out += [row("baseline", f"q{c}", 0, base), row("candidate", f"q{c}", 0, cand)]
        return out

    def trade(fell: float) -> dict[str, Any]:
        when = {"metric": "error/rate", "fell_pct_at_least": fell}
        return {"metric": "latency_ms/mean", "max_increase_pct": 5, "trade_off": {"max_increase_pct": 30, "when": when}}

    strict = only(evaluate(config(trade(70)), outcomes(0), frozenset()))
    assert "; trade-off not applied: not shown that error/rate fell 70% or more" in strict.message, strict.message
    assert strict.bound == {"max_increase_pct": 5}
    loose = only(evaluate(config(trade(40)), outcomes(0), frozenset()))
    assert "; trade-off applied: error/rate fell 40% or more (its change is at most -47.4% at 97.5%)" in loose.message
    assert loose.bound == {"max_increase_pct": 30}
