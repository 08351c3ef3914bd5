"""Few cases: the case bootstrap read at Hesterberg's expanded level, and widened where the cases cannot reach.

The percentile bootstrap of n cases is too narrow by sqrt((n - 1) / n) and has normal tails where a mean of n has
Student's t ones; and no resample reaches beyond the most extreme case, while every case lies on one side of the
truth in 2^-n of samples, so at levels surer than 1 - 2^-n (the adaptive loop's early looks) the interval is the t
interval on the bootstrap's standard error. docs/design/statistics.md, "Few cases", has the measured rates.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import pytest
from test_evaluate import err, only, row, rows_for

from gate._config.schema import GateConfig
from gate._decide import stats
from gate._decide.evaluate import evaluate, undecided
from gate._decide.stats import PairedSample, bootstrap, expanded_reach, student_t_tail


# Student's t table (any statistics text): the one-sided critical values t_{1-α, df}.
@pytest.mark.parametrize(
    ("t", "df", "tail"), [(2.132, 4, 0.05), (2.262, 9, 0.025), (1.685, 39, 0.05), (3.747, 4, 0.01)]
)
def test_the_t_tail_matches_the_published_table(t: float, df: int, tail: float) -> None:
    assert student_t_tail(t, df) == pytest.approx(tail, abs=2e-4)


def test_the_expanded_reach_is_the_t_intervals_and_tends_to_the_normal_one() -> None:
    # sqrt(n / (n - 1)) · t_{n-1}: for 5 cases t_4 = 2.132 × 1.118 = 2.384 standard errors, read at Φ(-2.384) = 0.86%
    assert expanded_reach(0.05, 5) == pytest.approx(2.384, abs=2e-3)
    reaches = [expanded_reach(0.05, n) for n in (3, 5, 10, 40, 10_000)]
    assert reaches == sorted(reaches, reverse=True)
    assert reaches[-1] == pytest.approx(1.6449, abs=1e-3)
    assert expanded_reach(0.05, 1) == math.inf  # one case: no spread to read at all


def test_the_expanded_bootstrap_of_a_mean_over_few_cases_is_the_t_interval() -> None:
    values = [3.1, 4.7, 2.2, 5.9, 4.4, 3.8]
    n = len(values)
    sample = PairedSample([[0.0]] * n, [[v] for v in values])  # the change is the candidate's mean itself
    low, high = bootstrap(sample, "mean", 0.95, resamples=200_000, seed=3).delta
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    t = 2.015  # t_{0.95, 5}
    assert low == pytest.approx(mean - t * sd / math.sqrt(n), abs=0.03)
    assert high == pytest.approx(mean + t * sd / math.sqrt(n), abs=0.03)
    # Read at 5% and 95% themselves, the resamples' interval is a quarter narrower: what the expansion is for.
    with read_as_asked():
        narrow_low, narrow_high = bootstrap(sample, "mean", 0.95, resamples=200_000, seed=3).delta
    assert (narrow_high - narrow_low) / (high - low) == pytest.approx(0.75, abs=0.05)


def per_case_change(sample: PairedSample) -> list[float]:
    return [(np.mean(c) / np.mean(b) - 1) * 100 for b, c in zip(sample.baseline, sample.candidate, strict=True)]


TRIPLED = PairedSample(
    [[100.0], [140.0], [90.0], [210.0], [120.0]], [[310.0], [400.0], [285.0], [590.0], [372.0]]
)  # every case about 3×: changes from +181% to +217%


def test_at_a_level_surer_than_the_cases_allow_the_interval_reaches_beyond_the_most_extreme_case() -> None:
    """5 cases, 99.99%: 2^-5 = 3.1% of samples have every case on one side, so the resamples (none beyond the most
    extreme case) cannot bound the change at 0.01%; the t interval on their standard error can."""
    changes = per_case_change(TRIPLED)
    low, high = bootstrap(TRIPLED, "median", 0.9999, seed=1).delta_pct or (0.0, 0.0)
    # The cases rank alike in both versions, so a resample's change of the (smoothed) median is an average of the
    # cases' changes: never beyond them.
    assert low < min(changes) and high > max(changes)
    # Within what 5 cases allow (95%: 2^-5 < 5%), the expanded percentile interval alone, inside the cases' range
    low95, high95 = bootstrap(TRIPLED, "median", 0.95, seed=1).delta_pct or (0.0, 0.0)
    assert min(changes) <= low95 < high95 <= max(changes)


def test_a_mean_over_few_skewed_cases_is_never_narrower_than_its_t_interval() -> None:
    """Four cases at 1 and one at 10: a third of the resamples hold no 10, so the expanded percentile interval's low
    end was the floor of the cases, 1.0, where Student's t puts the mean's 95% bound below 0. A mean's (or sum's)
    interval is now at least the t interval on the bootstrap's standard error (a mean at its bound on 5 cases failed
    7.0% of simulated runs without it, 5.3% with it: bench/power.py scenario 20)."""
    values = [1.0, 1.0, 1.0, 1.0, 10.0]
    sample = PairedSample([[0.0]] * 5, [[v] for v in values])
    low, high = bootstrap(sample, "mean", 0.95, seed=2).delta
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    t_low = mean - 2.132 * sd / math.sqrt(5)  # t_{0.95, 4}
    assert low < 0 and low == pytest.approx(t_low, abs=0.15)  # the bootstrap's standard error: ±2% at 2,000
    assert high >= mean + 2.132 * sd / math.sqrt(5) - 0.15


def test_a_level_beyond_every_resample_is_extrapolated_not_read_off_the_most_extreme_one() -> None:
    """The adaptive loop's first look decides at 99.99999%: fewer than one of 2,000 resamples is expected past it, so
    their quantile there is the most extreme resample, about 3 standard errors out, and the look decided as if at
    99.9%. The interval now reaches as far as the level asks, on the bootstrap's standard error."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal(50)
    sample = PairedSample([[0.0]] * 50, [[float(v)] for v in values])
    se = float(np.std(values, ddof=1)) / math.sqrt(50)
    z = -NormalDist().inv_cdf(1e-7)  # 5.2
    for few_cases in (True, False):  # Student's t (about the app) or the normal reach
        low, high = bootstrap(sample, "mean", 1 - 1e-7, seed=1, few_cases=few_cases).delta
        assert (high - low) / 2 > 0.95 * z * se
    # a percentile as well, and at a level the resamples do show (99%) the interval is theirs: narrower
    wide = bootstrap(sample, "p90", 1 - 1e-7, seed=1).delta
    shown = bootstrap(sample, "p90", 0.99, seed=1).delta
    assert wide[0] < shown[0] and wide[1] > shown[1]
    assert (wide[1] - wide[0]) / (shown[1] - shown[0]) > 1.6  # 5.2 against 2.3 standard errors, less the t's share


def test_a_case_whose_calls_all_failed_so_far_waits_for_more_runs_instead_of_ending_the_loop() -> None:
    config = GateConfig.model_validate(
        {
            "version": 1,
            "cases": [{"id": f"q{i}", "inputs": {"q": i}} for i in range(5)],
            "baseline": {"target": "apps:v1"},
            "candidate": {"target": "apps:v2"},
            "checks": [{"metric": "total_tokens/mean", "max_increase_pct": 10}],
            "run": {"repeats": 1, "max_repeats": 10},
        }
    )

    def tokens(value: float) -> dict[str, float | None]:
        return {"latency_ms": 100.0, "error": 0.0, "total_tokens": value, "cost_usd": None}

    rows = rows_for(5, 1, lambda c, r: tokens(100.0 + c), lambda c, r: tokens(300.0 + c))
    failed = {**err(), "total_tokens": None}  # no answer, no tokens: as a failed call is read
    rows = [r if (r.variant, r.case_id) != ("candidate", "q0") else row("candidate", "q0", 0, failed) for r in rows]
    check = only(evaluate(config, rows, frozenset(), look=(1, 1, 10)))
    assert (check.status, check.needs_cases) == ("inconclusive", None)
    assert check.message.endswith(
        "limit +10%: only 4 of 5 cases have values from both versions so far (the others' calls failed); the case "
        "bootstrap needs at least 5: more runs may give them values"
    )
    assert check in undecided(evaluate(config, rows, frozenset(), look=(1, 1, 10)))
    four = [r for r in rows if r.case_id != "q0"]  # a dataset of 4 cases: no run can help
    assert only(evaluate(config, four, frozenset(), look=(1, 1, 10))).needs_cases == 5


def test_five_cases_at_their_bound_fail_and_pass_about_as_often_as_the_level_allows() -> None:
    """400 seeded datasets of 5 cases × 10 runs, a mean exactly +10% against `max_increase_pct: 10`, one look at
    95%: a fail and a pass are both wrong. Read at the asked level the bootstrap was wrong about twice as often."""
    wrong = {"expanded": 0, "as asked": 0}
    for seed in range(400):
        rng = np.random.default_rng([17, seed])
        level = rng.uniform(150, 400, size=(5, 1))
        noise = np.exp(0.15 * rng.standard_normal((2, 5, 10)))
        sample = PairedSample((level * noise[0]).tolist(), (1.1 * level * noise[1]).tolist())
        low, high = bootstrap(sample, "mean", 0.95, seed=seed).delta_pct or (0.0, 0.0)
        wrong["expanded"] += (low > 10) + (high < 10)
        with read_as_asked():
            low, high = bootstrap(sample, "mean", 0.95, seed=seed).delta_pct or (0.0, 0.0)
        wrong["as asked"] += (low > 10) + (high < 10)
    # 5% a side nominal, 10% both; 400 datasets put a binomial 95% band of about ±3 points around it
    assert wrong["expanded"] / 400 <= 0.13
    assert wrong["as asked"] / 400 > 0.16


@contextlib.contextmanager
def read_as_asked() -> Iterator[None]:
    """The percentile bootstrap read at the asked level itself (the rule before the expansion)."""
    saved = stats.expanded_reach
    stats.expanded_reach = lambda alpha, n: -NormalDist().inv_cdf(alpha)  # type: ignore[assignment]
    try:
        yield
    finally:
        stats.expanded_reach = saved  # type: ignore[assignment]


def test_a_scorers_0_1_rate_over_few_cases_keeps_its_interval_within_what_a_rate_can_change() -> None:
    """A boolean scorer's rate is read like error/rate, without the t widening, which on 0/1 values per case would
    reach past a change of ±1 (seen: helpful/rate in [-1.21, +1.41] at 99.99% over 5 cases)."""
    from gate._config.schema import CheckConfig
    from gate._decide.checks import decide_check

    scorer = {"scorers": ["helpful"]}  # the validation context a config with that scorer gives
    check = CheckConfig.model_validate({"metric": "helpful/rate", "max_decrease": 0.1}, context=scorer)
    sample = PairedSample([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0]] * 5)
    result = decide_check(check, sample, 0.7, 1.0, 0.9999, "warn")
    assert result.ci_low is not None and result.ci_high is not None
    assert -1 <= result.ci_low <= result.ci_high <= 1
    as_mean = CheckConfig.model_validate({"metric": "helpful/mean", "max_decrease": 0.1}, context=scorer)
    widened = decide_check(as_mean, sample, 0.7, 1.0, 0.9999, "warn")
    assert widened.ci_high is not None and widened.ci_high > 1  # the same values as a mean: extrapolated


def test_no_failure_seen_in_either_version_does_not_show_a_rate_held_its_max_increase() -> None:
    """10 cases × 1 run, no error in either version: the bootstrap's [0, 0] would pass `max_increase: 0.05`, though
    0 of 10 calls is compatible with a rate of 26% (Clopper-Pearson, 95%). Newcombe's interval keeps it open; 400
    clean calls a version do show it, and `max_increase: 0` reads "none seen in the candidate" as at_most 0 does."""
    from gate._config.schema import CheckConfig
    from gate._decide.checks import decide_check

    clean = PairedSample([[0.0]] * 10, [[0.0]] * 10)
    check = CheckConfig(metric="error/rate", max_increase=0.05)
    few = decide_check(check, clean, 0.0, 0.0, 0.95, "warn")
    assert few.status == "inconclusive"
    assert few.ci_high is not None and few.ci_high == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-6)
    many = PairedSample([[0.0] * 10] * 40, [[0.0] * 10] * 40)
    assert decide_check(check, many, 0.0, 0.0, 0.95, "warn").status == "pass"  # 0 of 400: at most 0.75%
    none_seen = decide_check(CheckConfig(metric="error/rate", max_increase=0), clean, 0.0, 0.0, 0.95, "warn")
    assert none_seen.status == "pass"
    # A rise that is there still fails: 6 of 10 cases erring in every run of the candidate
    risen = PairedSample([[0.0, 0.0]] * 10, [[1.0, 1.0]] * 6 + [[0.0, 0.0]] * 4)
    assert decide_check(check, risen, 0.0, 0.6, 0.95, "warn").status == "fail"


def test_mover_ratio_recovers_the_ratio_of_bounds_and_opens_where_the_denominator_may_be_zero() -> None:
    """MOVER-R from each quantity's own bounds: with an exact numerator the ends are a / b_high and a / b_low; a
    denominator whose low bound is 0 leaves the high end open; a numerator of 0 gives a low end of 0."""
    assert stats.mover_ratio((0.1, 0.1, 0.1), (0.05, 0.04, 0.06)) == pytest.approx((0.1 / 0.06, 0.1 / 0.04))
    low, high = stats.mover_ratio((0.15, 0.10, 0.22), (0.10, 0.05, 0.17))
    assert 0.10 / 0.17 < low < 1.5 < high < 0.22 / 0.05  # wider than neither, narrower than the crossed bounds
    assert stats.mover_ratio((0.02, 0.005, 0.06), (0.05, 0.0, 0.12))[1] == math.inf
    assert stats.mover_ratio((0.0, 0.0, 0.03), (0.05, 0.01, 0.12))[0] == 0.0
    # a denominator's high bound beyond twice its estimate (few events): the low end still lies below a / b
    assert 0 < stats.mover_ratio((0.02, 0.005, 0.06), (0.02, 0.001, 0.09))[0] < 1
    with pytest.raises(ValueError, match="denominator must be positive"):
        stats.mover_ratio((0.1, 0.05, 0.2), (0.0, 0.0, 0.1))


def test_a_relative_bound_on_a_rate_is_decided_on_the_ratio_not_on_no_rise() -> None:
    """`error/rate max_increase_pct: 60`, 10 cases × 10 runs, 2 baseline errors and 3 candidate ones (+50%): before,
    a resample without either baseline error left the bootstrap no ratio and the check was decided as "no rise at
    all" (the change against 0); 5% → 7.5% at its +50% bound then failed 10.2% of simulated runs on 10 cases
    (bench/power.py scenario 26). Now the ratio's MOVER-R interval decides, and a real rise still fails."""
    from gate._config.schema import CheckConfig
    from gate._decide.checks import decide_check

    check = CheckConfig(metric="error/rate", max_increase_pct=60)
    quiet = [[0.0] * 10] * 10
    base = [[1.0] + [0.0] * 9] * 2 + quiet[2:]
    cand = [[1.0] + [0.0] * 9] * 3 + quiet[3:]
    result = decide_check(check, PairedSample(base, cand), 0.02, 0.03, 0.95, "warn")
    assert result.ci_of == "delta_pct"
    assert result.ci_low is not None and result.ci_high is not None
    assert result.ci_low < 50 < 60 < result.ci_high
    assert result.status == "inconclusive"
    risen = [[1.0] * 6 + [0.0] * 4] * 10  # 60% of calls against 10%: +500%
    base10 = [[1.0] + [0.0] * 9] * 10
    failed = decide_check(check, PairedSample(base10, risen), 0.1, 0.6, 0.95, "warn")
    assert failed.status == "fail" and failed.ci_of == "delta_pct"
    assert failed.ci_low is not None and failed.ci_low > 60


def test_unpaired_traffic_with_no_failure_seen_does_not_show_a_rate_held_its_bounds() -> None:
    """Production traces of two versions (no shared cases): 10 traces each without an error passed
    `max_increase: 0.05` and `max_increase_pct: 50` on the bootstrap's [0, 0] until stop 28, as paired ones did
    before stop 27. Every trace is a trial and the versions are independent: Newcombe's and MOVER-R's setting."""
    from gate._config.schema import CheckConfig
    from gate._decide.checks import decide_check

    few = PairedSample([[0.0]] * 10, [[0.0]] * 10, paired=False)
    many = PairedSample([[0.0]] * 400, [[0.0]] * 400, paired=False)
    for bound in ({"max_increase": 0.05}, {"max_increase_pct": 50}):
        check = CheckConfig.model_validate({"metric": "error/rate", **bound})
        result = decide_check(check, few, 0.0, 0.0, 0.95, "warn")
        assert (result.status, result.population) == ("inconclusive", "traffic"), bound
        assert "traces as the unit (unpaired)" in result.message
    assert decide_check(CheckConfig(metric="error/rate", max_increase=0.05), many, 0.0, 0.0, 0.95, "warn").status == (
        "pass"
    )
    # with failures in the baseline, the relative bound is decided on the ratio: 2 of 20 against 3 of 20 is +50%,
    # which 20 traces a version cannot tell from +200%
    some = PairedSample([[0.0]] * 18 + [[1.0]] * 2, [[0.0]] * 17 + [[1.0]] * 3, paired=False)
    ratio = decide_check(CheckConfig(metric="error/rate", max_increase_pct=200), some, 0.1, 0.15, 0.95, "warn")
    assert ratio.ci_of == "delta_pct" and ratio.status == "inconclusive"
    assert ratio.ci_high is not None and ratio.ci_high > 200
