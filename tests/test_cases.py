"""Per-case regressions over hand-built trace rows: which cases the candidate made worse, and how they count."""

from __future__ import annotations

from gate._config.schema import GateConfig
from gate._decide.evaluate import evaluate
from gate._decide.regressions import find_regressions
from gate._traces.rows import TraceRow


def row(variant: str, case: str, repeat: int, **values: float) -> TraceRow:
    return TraceRow(f"tr-{variant[0]}-{case}-{repeat}", variant, case, repeat, {"error": 0.0, **values})


def test_a_score_that_passed_everywhere_and_fails_everywhere_is_a_regression() -> None:
    rows = [row(v, "q1", r, polite=1.0 if v == "baseline" else 0.0) for v in ("baseline", "candidate") for r in (0, 1)]
    [regression] = find_regressions(rows, scores=["polite"])
    assert regression.rule == "polite_pass_to_fail"
    assert regression.detail == "polite passed on 2 baseline runs, failed on all 2 candidate runs"
    assert regression.candidate_trace_ids == ("tr-c-q1-0", "tr-c-q1-1")


def test_a_score_that_fails_on_only_some_candidate_repeats_is_not_a_regression() -> None:
    rows = [row("baseline", "q1", r, polite=1.0) for r in (0, 1)]
    rows += [row("candidate", "q1", 0, polite=0.0), row("candidate", "q1", 1, polite=1.0)]
    assert find_regressions(rows, scores=["polite"]) == []


def test_a_non_binary_score_never_counts_as_pass_to_fail() -> None:
    rows = [row("baseline", "q1", 0, words=1.0), row("candidate", "q1", 0, words=0.5)]
    assert find_regressions(rows, scores=["words"]) == []


def test_cases_regressed_counts_cases_not_rules() -> None:
    config = GateConfig.model_validate(
        {
            "version": 1,
            "cases": [{"id": "q1", "inputs": {"q": 1}}],
            "baseline": {"target": "a:b"},
            "candidate": {"target": "a:c"},
            "scorers": [{"name": "polite", "type": "contains", "strings": ["thanks"]}],
            "checks": [{"metric": "cases_regressed/count", "at_most": 0}],
        },
        context={"scorers": ["polite"]},
    )
    rows = [row("baseline", "q1", 0, polite=1.0), TraceRow("tr-c", "candidate", "q1", 0, {"error": 1.0, "polite": 0.0})]
    evaluation = evaluate(config, rows, frozenset())
    assert {r.rule for r in evaluation.regressions} == {"ok_to_error", "polite_pass_to_fail"}
    assert evaluation.checks[0].candidate == 1.0
