"""Slices: a check on some cases only (`where:`), or on every slice with the worst deciding (`per_slice:`).

evaluate on hand-built rows (no MLflow) for the decisions; the config loader for the messages; one CLI run through the
simulator with tagged cases.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import QUESTIONS, Project
from pydantic import ValidationError
from test_evaluate import noisy_latency, ok, only, row

from gate._config.dataset import Case
from gate._config.schema import CheckConfig, GateConfig
from gate._decide.evaluate import evaluate, slices
from gate._traces.rows import TraceRow


def config(*checks: dict[str, Any]) -> GateConfig:
    return GateConfig.model_validate(
        {
            "version": 1,
            "cases": [{"id": "x", "inputs": {"question": "x"}}],
            "baseline": {"target": "apps:v1"},
            "candidate": {"target": "apps:v2"},
            "checks": list(checks),
        }
    )


# 30 cases: 10 tagged "refund", 20 "shipping"; the input "lang" is "de" for every third case.
CASES = [
    Case(
        f"q{i}",
        {"question": f"q{i}", "lang": "de" if i % 3 == 0 else "en"},
        tags=("refund",) if i < 10 else ("shipping",),
    )
    for i in range(30)
]


def rows(slower: set[str], factor: float = 2.0, repeats: int = 3) -> list[TraceRow]:
    latency = noisy_latency(seed=4, cases=30, repeats=repeats)
    out = []
    for c in range(30):
        for r in range(repeats):
            value = float(latency[c, r])
            out.append(row("baseline", f"q{c}", r, ok(value)))
            out.append(row("candidate", f"q{c}", r, ok(value * (factor if f"q{c}" in slower else 1.0))))
    return out


REFUNDS = {f"q{i}" for i in range(10)}


def test_a_regression_in_one_slice_fails_that_slices_check_and_not_the_others() -> None:
    data = rows(REFUNDS)
    refund = {"metric": "latency_ms/mean", "max_increase_pct": 20, "where": {"tag": "refund"}}
    shipping = {"metric": "latency_ms/mean", "max_increase_pct": 20, "where": {"tag": "shipping"}}
    (r,) = [c for c in evaluate(config(refund), data, frozenset(), cases=CASES).checks if not c.default]
    (s,) = [c for c in evaluate(config(shipping), data, frozenset(), cases=CASES).checks if not c.default]
    assert (r.status, r.slice) == ("fail", "tag=refund")
    assert r.message.startswith("[tag=refund] latency_ms/mean rose 100.0%")
    assert (s.status, s.slice) == ("pass", "tag=shipping")


def test_the_worst_slice_decides_and_the_verdict_names_it() -> None:
    check = only(
        evaluate(
            config({"metric": "latency_ms/mean", "max_increase_pct": 20, "per_slice": "tags"}),
            rows(REFUNDS),
            frozenset(),
            cases=CASES,
        )
    )
    assert (check.status, check.slice) == ("fail", "tag=refund")
    assert check.message.endswith("; worst of 2 slices (1 fail, 1 pass), each at 0.975")


def test_a_regression_diluted_over_all_cases_is_found_in_its_slice() -> None:
    # The "de" third of the cases 1.5x slower: over all cases the mean rises about 17%, not shown beyond a 25% bound;
    # in their slice it rises 50%.
    slow = {c.id for c in CASES if c.inputs["lang"] == "de"}
    data = rows(slow, factor=1.5)
    check = {"metric": "latency_ms/mean", "max_increase_pct": 25}
    overall = only(evaluate(config(check), data, frozenset()))
    per_lang = only(evaluate(config({**check, "per_slice": "inputs.lang"}), data, frozenset(), cases=CASES))
    assert overall.status != "fail", overall.message
    assert (per_lang.status, per_lang.slice) == ("fail", "inputs.lang=de")


def test_a_slice_without_cases_is_missing_never_a_pass() -> None:
    check = only(
        evaluate(
            config({"metric": "latency_ms/mean", "max_increase_pct": 20, "where": {"tag": "billing"}}),
            rows(set()),
            frozenset(),
            cases=CASES,
        )
    )
    assert (check.status, check.slice) == ("missing", "tag=billing")
    assert check.message == "latency_ms/mean [tag=billing]: no case in this slice has traces; check the tags or inputs"


def test_a_slice_of_fewer_than_five_cases_cannot_decide_and_says_so() -> None:
    check = only(
        evaluate(
            config(
                {"metric": "latency_ms/mean", "max_increase_pct": 20, "where": {"tag": "refund", "inputs.lang": "de"}}
            ),
            rows(REFUNDS),
            frozenset(),
            cases=CASES,
        )
    )
    assert (check.status, check.needs_cases) == ("inconclusive", 5)
    assert check.message.endswith(
        "limit +20%: cannot be decided from 4 cases: the case bootstrap needs at least 5 (more repeats cannot stand "
        "in for cases); add cases"
    )


def test_slices_are_chosen_by_every_where_entry_and_grouped_by_per_slice() -> None:
    both = CheckConfig(metric="latency_ms/mean", max_increase_pct=5, where={"tag": "refund", "inputs.lang": "de"})
    assert slices(both, CASES) == [("tag=refund, inputs.lang=de", frozenset({"q0", "q3", "q6", "q9"}))]
    grouped = CheckConfig(metric="latency_ms/mean", max_increase_pct=5, per_slice="inputs.lang")
    assert [(name, len(ids)) for name, ids in slices(grouped, CASES)] == [
        ("inputs.lang=de", 10),
        ("inputs.lang=en", 20),
    ]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"where": {"label": "x"}}, "where: unknown key 'label'; use tag or inputs.NAME (e.g. where: {tag: refund})"),
        ({"where": {}}, "where: {} selects every case; leave it out, or give tag / inputs.NAME"),
        ({"per_slice": "labels"}, "per_slice: 'labels'; use tags or inputs.NAME (e.g. per_slice: tags)"),
        ({"per_slice": "tags", "per_case": True}, "per_slice with per_case: per_case already decides every case"),
    ],
)
def test_bad_slices_are_refused_with_the_fix(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as raised:
        CheckConfig.model_validate({"metric": "latency_ms/mean", "max_increase_pct": 10, **fields})
    assert error in str(raised.value)


pytestmark = pytest.mark.run_isolation("inline")


def test_a_slice_check_through_the_cli_names_the_slice(project: Project) -> None:
    # A slice needs 5 cases or more (the case bootstrap's minimum): five refund questions, the others.
    refunds = [f"Is a refund possible for order {n}?" for n in range(5)]
    cases = [
        {"id": f"q{i}", "inputs": {"question": q}, "tags": ["refund"] if "refund" in q else ["other"]}
        for i, q in enumerate([*refunds, *QUESTIONS])
    ]
    project.write_config(
        cases=cases,
        candidate={"target": "gate_test_apps:slow_on_refunds", "label": "v2"},
        run={"repeats": 2, "max_repeats": 3, "concurrency": 4, "timeout_s": 30, "warmup": False},
        checks=[{"metric": "latency_ms/mean", "max_increase_pct": 100, "per_slice": "tags"}],
    )
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 1, result.stderr
    check = next(c for c in result.verdict["checks"] if c["metric"] == "latency_ms/mean")
    assert (check["status"], check["slice"]) == ("fail", "tag=refund")
    assert "[tag=refund] latency_ms/mean rose" in check["message"] and "worst of 2 slices (1 fail" in check["message"]
    assert re.search(r"FAIL +latency_ms/mean \[tag=refund\] ", result.stderr)  # the terminal summary names the slice
