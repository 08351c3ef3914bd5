"""Per-case checks (`per_case: true`): a regression confined to a few cases fails the gate and names them.

The statistics (gate/_decide/per_case.py) are checked against scipy and by seeded simulation; the CLI test runs a
candidate that is slower on one case only, through the real simulator.
"""

from __future__ import annotations

import math
import random

import pytest
from conftest import Project
from pydantic import ValidationError

from gate._config.schema import CheckConfig
from gate._decide.per_case import decide_per_case, t_sf
from gate._traces.rows import TraceRow


@pytest.mark.parametrize("df", [1, 3, 12, 80, 700])
def test_t_tail_matches_scipy(df: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    for t in (-3.0, -0.5, 0.0, 0.7, 1.96, 3.5, 8.0):
        assert t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), rel=1e-9, abs=1e-14)


def _rows(
    rng: random.Random, cases: int, repeats: int, factors: dict[int, float], sigma: float = 0.3
) -> list[TraceRow]:
    rows = []
    for i in range(cases):
        level = math.exp(rng.gauss(4, 0.5))  # cases differ in level; the versions share it
        for variant in ("baseline", "candidate"):
            factor = factors.get(i, 1.0) if variant == "candidate" else 1.0
            for j in range(repeats):
                value = level * factor * math.exp(rng.gauss(0, sigma))
                rows.append(TraceRow(f"{variant}-{i}-{j}", variant, f"c{i}", j, {"latency_ms": value}))
    return rows


CHECK = CheckConfig(metric="latency_ms/mean", max_increase_pct=100, per_case=True)


def _decide(rows: list[TraceRow]) -> tuple[str, set[str]]:
    result, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset())
    return result.status, {r.case_id for r in found}


def test_three_of_forty_cases_three_times_slower_are_found_and_named() -> None:
    # 3 of 40 cases 3x slower, per-call noise sigma 0.3 on the log scale, 10 runs a case (the adaptive cap):
    # 91.3% of 300 seeded runs failed in a longer simulation; here >= 80 of 100, and never a case that did not change.
    rng = random.Random(17)
    bad = {"c0", "c1", "c2"}
    failed = 0
    for _ in range(100):
        status, named = _decide(_rows(rng, 40, 10, {0: 3.0, 1: 3.0, 2: 3.0}))
        failed += status == "fail"
        assert named <= bad, named
    assert failed >= 80


def test_cases_exactly_at_the_bound_false_fail_at_most_alpha() -> None:
    # The hardest null: every case exactly 2x slower against max_increase_pct 100. BH keeps any-false-fail at 5%;
    # allow 10% for 200 runs (the 95% interval of a true 5% rate reaches 8.9%).
    rng = random.Random(5)
    fails = sum(_decide(_rows(rng, 20, 4, dict.fromkeys(range(20), 2.0)))[0] == "fail" for _ in range(200))
    assert fails <= 20


def test_identical_versions_pass_once_every_case_is_shown_within_the_bound() -> None:
    rng = random.Random(3)
    assert _decide(_rows(rng, 10, 10, {}, sigma=0.1))[0] == "pass"


def test_one_run_a_case_cannot_decide_and_says_what_it_needs() -> None:
    result, found = decide_per_case(
        CHECK, _rows(random.Random(1), 5, 1, {0: 10.0}), None, None, 0.95, "warn", frozenset()
    )
    assert (result.status, found) == ("inconclusive", [])
    assert result.message == (
        "latency_ms/mean per case: one run per case and version, so the noise within a case is unknown; "
        "needs 2 or more runs of a case (repeats)"
    )


@pytest.mark.parametrize(
    ("check", "error"),
    [
        (
            {"metric": "latency_ms/p95", "max_increase_pct": 50, "per_case": True},
            "per_case compares each case's runs of a measured metric, e.g. latency_ms/mean, not 'latency_ms/p95'",
        ),
        (
            {"metric": "latency_ms/mean", "at_most": 500, "per_case": True},
            "per_case takes max_increase_pct and/or max_decrease_pct (a ratio per case)",
        ),
    ],
)
def test_per_case_refuses_checks_it_cannot_decide(check: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace("(", r"\(").replace(")", r"\)")):
        CheckConfig.model_validate(check)


pytestmark = pytest.mark.run_isolation("inline")


def test_a_candidate_slower_on_one_case_fails_the_gate_naming_that_case(project: Project) -> None:
    project.write_config(
        candidate={"target": "gate_test_apps:slow_on_refunds", "label": "v2"},
        run={"repeats": 3, "max_repeats": 5, "concurrency": 4, "timeout_s": 30},
        checks=[
            {"metric": "latency_ms/mean", "max_increase_pct": 100, "per_case": True},
            {"metric": "cases_regressed/count", "at_most": 0},
        ],
    )
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr
    checks = {c["metric"]: c for c in result.verdict["checks"]}
    assert checks["latency_ms/mean"]["status"] == "fail"
    assert checks["latency_ms/mean"]["message"].startswith("latency_ms/mean per case: ")
    assert "q2" in checks["latency_ms/mean"]["message"]  # "How long does a refund take?"
    refund = next(r for r in result.verdict["regressions"] if r["case_id"] == "q2")
    assert refund["rule"] == "latency_ms/mean_per_case_max_increase_pct"
    assert refund["detail"].startswith("latency_ms rose ") and "limit +100%" in refund["detail"]
    assert len(refund["candidate_trace_ids"]) >= 3
    assert checks["cases_regressed/count"]["status"] == "fail"


def test_an_adaptive_run_decides_per_case_at_the_loops_looks_from_two_runs_on() -> None:
    from gate._decide.per_case import look_alpha, looks

    assert looks(1, 10) == (2, 4, 10)  # the loop looks at 1, 2, 4, 10; one run a case says nothing of the noise
    assert looks(3, 3) == (3,) and looks(1, 1) == (1,)
    levels = [look_alpha(0.05, (runs, 1, 10)) for runs in range(1, 11)]
    assert [runs for runs, a in enumerate(levels, 1) if a is not None] == [2, 4, 10]
    first, second, last = (a for a in levels if a is not None)
    assert first < 0.001 < second < 0.01 < 0.045 < last < 0.05  # O'Brien-Fleming-shaped: strict early, ~5% last
    assert look_alpha(0.05, None) == 0.05  # gate compare / score: one decision
    result, _ = decide_per_case(
        CHECK, _rows(random.Random(2), 5, 5, {}), None, None, 0.95, "warn", frozenset(), (5, 1, 10)
    )
    assert (result.status, result.message) == (
        "inconclusive",
        "latency_ms/mean per case: decided at 10 runs per case (the next look)",
    )


def _runs(
    rng: random.Random, levels: list[float], cases: list[int], repeats: range, factors: dict[int, float]
) -> list[TraceRow]:
    """Runs of the given cases (levels fixed per case) at these repeats, both versions."""
    rows = []
    for i in cases:
        for variant in ("baseline", "candidate"):
            factor = factors.get(i, 1.0) if variant == "candidate" else 1.0
            for j in repeats:
                value = levels[i] * factor * math.exp(rng.gauss(0, 0.3))
                rows.append(TraceRow(f"{variant}-{i}-{j}", variant, f"c{i}", j, {"latency_ms": value}))
    return rows


def test_the_last_look_flags_suspects_and_their_confirmation_runs_alone_decide() -> None:
    from gate._decide.per_case import confirm_alpha

    rng = random.Random(8)
    levels = [math.exp(rng.gauss(4, 0.5)) for _ in range(40)]
    slower = {0: 3.0, 1: 3.0, 2: 3.0}
    rows = _runs(rng, levels, list(range(40)), range(10), slower)
    last = (10, 1, 10)
    screened, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), last, confirm=True)
    assert (screened.status, found) == ("inconclusive", [])  # the last look does not fail by itself
    assert screened.suspects and set(screened.suspects) <= {"c0", "c1", "c2"}
    assert "flagged at the last look" in screened.message and "confirmation runs" in screened.message
    flagged = [int(c[1:]) for c in screened.suspects]
    # Still 3x slower on new runs: confirmed, and the regressions point at the new runs' traces.
    again = _runs(rng, levels, flagged, range(10, 20), slower)
    decided, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), last, True, again)
    assert decided.status == "fail" and decided.suspects == screened.suspects
    assert {r.case_id for r in found} <= set(screened.suspects) and found
    assert all(t.endswith(tuple(f"-{j}" for j in range(10, 20))) for r in found for t in r.candidate_trace_ids)
    assert "confirmed beyond the bound on" in decided.message and "new runs alone" in decided.message
    # Not slower on the new runs (a fluke at the last look): not confirmed, so inconclusive, never a fail.
    same = _runs(rng, levels, flagged, range(10, 20), {})
    undecided, found = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), last, True, same)
    assert (undecided.status, found) == ("inconclusive", [])
    assert "none confirmed on" in undecided.message
    # The confirmation's error level: what the looks at 2 and 4 runs a case left of 5% (union bound).
    assert 0.045 < confirm_alpha(0.05, 1, 10) < 0.0457 and confirm_alpha(0.05, 4, 4) == 0.05


def test_cases_at_the_bound_false_fail_at_most_alpha_across_screening_and_confirmation() -> None:
    # The hardest null again, through both stages: ~5% of cases flagged by chance, each confirmed at alpha / k on
    # new runs. 200 runs, allow 10% (the 95% interval of a true 5% rate reaches 8.9%); bench/per_case.py has 1,000.
    rng = random.Random(6)
    fails = 0
    for _ in range(200):
        levels = [math.exp(rng.gauss(4, 0.5)) for _ in range(20)]
        at_bound = dict.fromkeys(range(20), 2.0)
        rows = _runs(rng, levels, list(range(20)), range(4), at_bound)
        screened, _ = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), (4, 4, 4), True)
        if screened.suspects:
            again = _runs(rng, levels, [int(c[1:]) for c in screened.suspects], range(4, 8), at_bound)
            screened, _ = decide_per_case(CHECK, rows, None, None, 0.95, "warn", frozenset(), (4, 4, 4), True, again)
        fails += screened.status == "fail"
    assert fails <= 20


def test_confirmation_runs_rerun_only_the_flagged_case_and_decide_the_gate(project: Project) -> None:
    project.write_config(
        candidate={"target": "gate_test_apps:slow_on_refunds", "label": "v2"},
        run={"repeats": 4, "max_repeats": 4, "concurrency": 4, "timeout_s": 30},  # one look: the last
        checks=[{"metric": "latency_ms/mean", "max_increase_pct": 100, "per_case": True}],
    )
    result = project.gate("run", "--simulate", "--no-progress", "--session", "confirm-1")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    [check] = [c for c in verdict["checks"] if c["metric"] == "latency_ms/mean"]
    assert check["status"] == "fail" and check["suspects"] == ["q2"]
    assert (
        "1 of 1 case flagged at the last look (q2) confirmed beyond the bound on 8 new runs alone" in check["message"]
    )
    assert verdict["spend"]["calls"] == 6 * 4 * 2 + 4 * 2  # every case 4 times, then q2 4 more times
    assert verdict["spend"]["repeats_per_case"] == 4
    assert verdict["spend"]["stopped_because"].endswith(
        "; then 4 confirmation runs of each of 1 cases a per-case check flagged, decided on those runs alone"
    )
    [refund] = [r for r in verdict["regressions"] if r["case_id"] == "q2"]
    assert len(refund["candidate_trace_ids"]) == 4  # the confirmation runs' traces: the evidence that decided
    assert verdict["metrics"]["baseline"]["latency_ms/mean"] is not None
    # Read back later, the confirmation runs are not counted as more repeats of q2 (they are tagged).
    again = project.gate("compare", "--session", "confirm-1")
    assert again.code == 1, again.stderr
    assert "8 confirmation runs of flagged cases not counted" in again.verdict["spend"]["stopped_because"]
    assert again.verdict["metrics"] == verdict["metrics"]
