"""When the adaptive loop looks (1, 2, 4, … runs a case, then the cap), the level each look decides at, and the
caps that end the looks (gate/_decide/sequential.py, gate/_decide/stopping.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gate._config.dataset import Case
from gate._config.schema import CheckConfig, GateConfig
from gate._decide.checks import CheckResult
from gate._decide.evaluate import Evaluation
from gate._decide.regressions import Unpaired
from gate._decide.sequential import _critical, look_confidence, next_look, schedule
from gate._decide.stopping import look_cap, stop_reason
from gate._traces.rows import Call, CallResult


@pytest.mark.parametrize(
    ("first", "cap", "least", "looks"),
    [
        (1, 10, 1, (1, 2, 4, 10)),  # doubling while the double stays within half the cap, then the cap
        (1, 10, 2, (2, 4, 10)),  # per-case checks: from 2 runs a case on
        (1, 20, 1, (1, 2, 4, 8, 20)),
        (1, 5, 1, (1, 2, 5)),
        (3, 10, 1, (3, 10)),
        (2, 3, 1, (2, 3)),
        (3, 3, 1, (3,)),
        (1, 1, 2, (1,)),  # nothing from 2 on: the single look there is
    ],
)
def test_looks_double_the_runs_a_case_until_the_cap(first: int, cap: int, least: int, looks: tuple[int, ...]) -> None:
    assert schedule(first, cap, least) == looks


def test_next_look_is_the_schedules_next_and_the_cap_after_the_last() -> None:
    assert [next_look(runs, 1, 10) for runs in (1, 2, 3, 4, 9, 10)] == [2, 4, 4, 10, 10, 10]


def test_each_look_is_stricter_before_the_cap_and_a_single_look_is_the_configured_level() -> None:
    levels = [look_confidence(0.95, runs, 1, 10) for runs in (1, 2, 4, 10)]
    assert levels == sorted(levels, reverse=True)
    assert levels[0] > 0.9999 and 0.995 < levels[2] < 0.997
    assert 0.95 < levels[-1] < 0.953  # four looks cost the last one 0.2 points, not the 1.4 of ten looks
    assert look_confidence(0.95, 3, 3, 3) == 0.95 and look_confidence(0.9, 5, 5, 5) == 0.9


def test_all_looks_together_cross_the_boundary_at_the_configured_rate() -> None:
    """An independent Monte Carlo (other seed, other construction): Z_k of a Brownian motion at 1, 2, 4, 10 crosses
    the looks' boundaries with probability 1 - confidence, not more."""
    looks = schedule(1, 10)
    rng = np.random.default_rng(7)
    steps = np.diff(np.concatenate([[0], looks]))
    walks = np.cumsum(rng.standard_normal((200_000, len(looks))) * np.sqrt(steps), axis=1)
    z = walks / np.sqrt(looks)
    from statistics import NormalDist

    bounds = np.array([NormalDist().inv_cdf(look_confidence(0.95, k, 1, 10)) for k in looks])
    crossed = float(np.mean((z > bounds).any(axis=1)))
    assert crossed == pytest.approx(0.05, abs=0.003)  # binomial sd at 200,000 paths: 0.0005
    assert _critical(0.95, looks) == pytest.approx(1.66, abs=0.01)


def _config(**run: Any) -> GateConfig:
    return GateConfig.model_validate(
        {
            "version": 1,
            "baseline": {"target": "app:a"},
            "candidate": {"target": "app:b"},
            "cases": [{"id": f"c{i}", "inputs": {"q": i}} for i in range(10)],
            "checks": [{"metric": "latency_ms/p95", "max_increase_pct": 10}],
            "run": {"repeats": 1, **run},
        }
    )


UNDECIDED = Evaluation(
    metrics={},
    checks=[CheckResult("latency_ms/p95", "inconclusive", "error", 1.0, 1.0, 0.0, 0.0, {}, "undecided")],
    regressions=[],
    unpaired=Unpaired((), ()),
    n_cases=10,
)


def _results(calls: int) -> list[CallResult]:
    return [CallResult(Call("baseline", Case(id="c0", inputs={}), k), None) for k in range(calls)]


def _stop(config: GateConfig, runs: int, cost: float | None = None) -> str | None:
    cap = look_cap(config, 20)
    return stop_reason(
        config,
        UNDECIDED,
        _results(20 * runs),
        [],
        repeats=runs,
        next_repeats=next_look(runs, 1, cap) - runs,
        calls_per_repeat=20,
        cost_usd=cost,
    )


def test_max_calls_lowers_the_last_look_to_what_the_budget_pays_for() -> None:
    config = _config(max_repeats=10, max_calls=150)  # 20 calls a run of every case: 7 runs a case at most
    assert look_cap(config, 20) == 7 and schedule(1, look_cap(config, 20)) == (1, 2, 7)
    assert [_stop(config, runs) for runs in (1, 2)] == [None, None]
    assert _stop(config, 7) == "run.max_calls (150) reached"
    assert look_cap(_config(max_repeats=10), 20) == 10 and _stop(_config(max_repeats=10), 10) == (
        "run.max_repeats (10) reached"
    )


def _cap(checks: list[dict[str, Any]], **run: Any) -> int:
    config = GateConfig.model_validate(
        {
            "version": 1,
            "baseline": {"target": "app:a"},
            "candidate": {"target": "app:b"},
            "cases": [{"id": "c0", "inputs": {}}],
            "checks": checks,
            "run": run,
        }
    )
    return config.max_repeats()


def test_the_default_cap_is_20_runs_a_case_with_a_percentile_check_and_10_without() -> None:
    # A percentile is read off its slowest few calls: 40 cases x 10 runs cannot detect a +30% p95 against +10% 90%
    # of the time, 20 runs do (docs/design/statistics.md, "The cap on runs a case"). The loop then looks at 1, 2, 4,
    # 8, 20 runs a case and says so when it stops at the cap.
    p95 = {"metric": "latency_ms/p95", "max_increase_pct": 10}
    mean = {"metric": "total_tokens/mean", "max_increase_pct": 10}
    assert _cap([p95]) == 20 and _cap([mean, p95]) == 20 and _cap([{**p95, "metric": "latency_ms/p99.9"}]) == 20
    assert _cap([mean]) == 10 and _cap([{**p95, "metric": "latency_ms/median"}]) == 10
    assert _cap([{"metric": "error/rate", "at_most": 0.1}]) == 10
    assert _cap([p95], max_repeats=10) == 10 and _cap([mean], max_repeats=30) == 30  # the config's own cap wins
    assert _cap([p95], repeats=25) == 25 and _cap([mean], repeats=12) == 12  # never below the first round
    config = _config()  # a p95 check, no cap set
    assert look_cap(config, 20) == 20 and schedule(1, look_cap(config, 20)) == (1, 2, 4, 8, 20)
    assert _stop(config, 10) is None
    assert _stop(config, 20) == "run.max_repeats (20, the default with a percentile check) reached"
    tokens = _config().model_copy(update={"checks": [CheckConfig(metric="total_tokens/mean", max_increase_pct=10)]})
    assert _stop(tokens, 10) == "run.max_repeats (10, the default without a percentile check) reached"


def test_max_cost_counts_the_runs_the_next_look_adds() -> None:
    config = _config(max_repeats=10, max_cost_usd=1.0)
    # after 4 runs a case at $0.3 the next look (10 runs) would cost 0.3 + 6 × 0.075 = $0.75: it may go on
    assert _stop(config, 4, cost=0.3) is None
    assert _stop(config, 4, cost=0.5) == "run.max_cost_usd (1) reached"  # 0.5 + 6 × 0.125 = $1.25
    assert _stop(config, 2, cost=None) == "run.max_cost_usd is set but the cost is unknown (add the model to `pricing`)"


def test_a_check_decided_at_a_strict_look_shows_its_level_never_a_rounded_100_percent() -> None:
    from gate._decide.checks import decide_check
    from gate._decide.stats import PairedSample

    check = CheckConfig(metric="latency_ms/mean", max_increase_pct=10)
    baseline = [[100.0 + i, 101.0 + i] for i in range(10)]
    candidate = [[200.0 + i, 201.0 + i] for i in range(10)]
    sample = PairedSample(baseline, candidate)
    messages = [
        decide_check(check, sample, 105.0, 205.0, level, "warn").message for level in (0.95, 0.99561, 0.99999997)
    ]
    levels = [m.rsplit(" at ", 1)[1].split(")")[0].split(",")[0] for m in messages]
    assert levels == ["95%", "99.56%", ">99.99%"]
    assert all(m.endswith(f"at {level}, cases as the unit)") for m, level in zip(messages, levels, strict=True))
