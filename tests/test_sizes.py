"""Before any call, `gate validate` and `gate run --dry-run` say which checks the dataset is too small to decide."""

from __future__ import annotations

import pytest
from conftest import Project

from gate._config.schema import GateConfig
from gate._decide.sizes import calls_needed, too_small


def config(cases: int, max_repeats: int, *checks: dict[str, object]) -> GateConfig:
    return GateConfig.model_validate(
        {
            "version": 1,
            "cases": [{"id": f"q{i}", "inputs": {"q": i}} for i in range(cases)],
            "baseline": {"target": "apps:v1"},
            "candidate": {"target": "apps:v2"},
            "run": {"repeats": 1, "max_repeats": max_repeats},
            "checks": list(checks),
        }
    )


@pytest.mark.parametrize(("share", "needed"), [(0.98, 149), (0.95, 59), (0.99, 299), (0.5, 5)])
def test_calls_needed_is_the_fewest_calls_whose_all_clear_is_rare_enough(share: float, needed: int) -> None:
    assert calls_needed(share, 0.05) == needed
    assert share**needed <= 0.05 < share ** (needed - 1)


def test_each_method_says_when_the_data_cannot_decide() -> None:
    checks = (
        {"metric": "latency_ms/mean", "max_increase_pct": 5},  # case bootstrap: 5 cases
        {"metric": "error/rate", "at_most": 0.02},  # Clopper-Pearson: 149 calls
        {"metric": "latency_ms/p95", "at_most": 900},  # order statistics: 59 calls
        {"metric": "error/rate", "at_most": 0},  # "none seen": decidable from any number
        {"metric": "latency_ms/p95", "max_increase_pct": 10},  # case bootstrap again
    )
    small = too_small(config(4, 10, *checks), 4)
    assert small == [
        "latency_ms/mean: 4 cases cannot decide it (its interval resamples cases and needs at least 5); add cases",
        "error/rate: can pass only from 149 calls a version at 95%; 4 cases × max_repeats 10 make at most 40; add "
        "cases or raise run.max_repeats",
        "latency_ms/p95: can pass only from 59 calls a version at 95%; 4 cases × max_repeats 10 make at most 40; add "
        "cases or raise run.max_repeats",
        "latency_ms/p95: 4 cases cannot decide it (its interval resamples cases and needs at least 5); add cases",
    ]
    assert too_small(config(15, 10, *checks), 15) == []  # 150 calls: enough for all of them


def test_a_check_about_the_dataset_needs_runs_of_every_case_not_cases() -> None:
    about_dataset = {"metric": "latency_ms/mean", "max_increase_pct": 5, "about": "dataset"}
    assert too_small(config(4, 3, about_dataset), 4) == [
        "latency_ms/mean: max_repeats 3 cannot decide it (about: dataset resamples each case's runs and needs at least "
        "5 of every case); raise run.max_repeats"
    ]
    assert too_small(config(2, 5, about_dataset), 2) == []  # two cases are the whole population here


def test_validate_and_dry_run_print_the_warnings(project: Project) -> None:
    project.write_config(
        cases=[{"id": f"q{i}", "inputs": {"question": f"question {i}"}} for i in range(3)],
        checks=[{"metric": "latency_ms/mean", "max_increase_pct": 20}],
    )
    for args in (("validate",), ("run", "--dry-run")):
        result = project.gate(*args)
        assert result.code == 0, result.stderr
        assert (
            "gate: warning: latency_ms/mean: 3 cases cannot decide it (its interval resamples cases and needs at "
            "least 5); add cases"
        ) in result.stderr
    plan = project.gate("run", "--dry-run").verdict
    assert plan["plan"]["too_small"] == [
        "latency_ms/mean: 3 cases cannot decide it (its interval resamples cases and needs at least 5); add cases"
    ]
