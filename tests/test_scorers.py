"""Unit tests for ``gate.scorers``: the built-ins, config errors, ``to_score``, user scorers and the LLM judges."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import openai
import pytest
import yaml
from mlflow.entities import Feedback
from pydantic import TypeAdapter

from gate._config.schema import load_config
from gate._errors import ConfigError
from gate._metrics import METRICS
from gate.scorers import BUILDERS, SCORER_TYPES, Score, ScoreInput, Scorer, ScorerConfig, build_scorers, to_score
from gate.simulator import SimulatorSettings, running_simulator

TESTS = Path(__file__).parent
SCORER = TypeAdapter(ScorerConfig)
QUESTION = {"question": "My parcel is late, where is it?"}

MINIMAL: dict[str, Any] = {  # as in tests/test_config.py
    "version": 1,
    "cases": [{"inputs": {"question": "Where is my parcel?"}}],
    "baseline": {"target": "app:old_agent"},
    "candidate": {"target": "app:new_agent"},
    "checks": [{"metric": "latency_ms/p95", "at_most": 1000}],
}
KNOWN_TYPES_MESSAGE = (
    "unknown scorer type; known: exact_match, contains, not_contains, regex, is_json, json_schema, length_between,"
    " latency_under, judge, mlflow, or `target: module:function` for your own"
)


def build(config: dict[str, Any], search_path: Path = TESTS) -> Scorer:
    """Validate one scorer config as thresholds.yaml would and build it."""
    [scorer] = build_scorers([SCORER.validate_python(config)], [search_path])
    return scorer


def given(outputs: Any, expectations: dict[str, Any] | None = None, trace: Any = None) -> ScoreInput:
    return ScoreInput(QUESTION, outputs, expectations, trace)


def value_of(config: dict[str, Any], outputs: Any, expectations: dict[str, Any] | None = None) -> float | None:
    return build(config)(given(outputs, expectations)).value


def trace_taking(ms: float | None) -> SimpleNamespace:
    """The part of an MLflow trace latency_under reads: ``trace.info.execution_duration`` in ms."""
    return SimpleNamespace(info=SimpleNamespace(execution_duration=ms))


def config_problems(tmp_path: Path, **changes: Any) -> list[str]:
    """Write MINIMAL with top-level keys replaced to thresholds.yaml; return load_config's problem lines."""
    path = write_config(tmp_path, **changes)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [problem.removeprefix(f"{path}: ") for problem in exc.value.problems]


def write_config(tmp_path: Path, **changes: Any) -> Path:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_mlflow_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    """The simulated model on loopback, answering at once (one per module: stopping it takes half a second)."""
    with running_simulator(SimulatorSettings(base_latency_ms=0, ms_per_token=0)) as url:
        yield url


@pytest.fixture
def simulator(simulator_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The simulator's URL, also set as OPENAI_BASE_URL (with a key) for judges that read the environment.

    MLFLOW_MODEL_CATALOG_URI="" keeps MLflow's judges offline: otherwise their first call fetches a model catalog
    from the internet (about 7 s of retries without a network) before falling back to the bundled one.
    """
    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-simulated")
    monkeypatch.setenv("OPENAI_BASE_URL", simulator_url)
    return simulator_url


# --- exact_match --------------------------------------------------------------------------------------------------


def test_exact_match_scores_1_for_the_expected_text_after_stripping() -> None:
    assert value_of({"name": "exact", "type": "exact_match"}, " Paris\n", {"expected": "Paris"}) == 1.0


def test_exact_match_is_case_sensitive_by_default() -> None:
    assert value_of({"name": "exact", "type": "exact_match"}, "paris", {"expected": "Paris"}) == 0.0


def test_exact_match_ignores_case_when_case_sensitive_is_false() -> None:
    config = {"name": "exact", "type": "exact_match", "case_sensitive": False}
    assert value_of(config, "PARIS", {"expected": "Paris"}) == 1.0


def test_exact_match_without_strip_counts_surrounding_whitespace() -> None:
    config = {"name": "exact", "type": "exact_match", "strip": False}
    assert value_of(config, "Paris ", {"expected": "Paris"}) == 0.0


def test_exact_match_compares_a_number_output_as_its_text() -> None:
    assert value_of({"name": "exact", "type": "exact_match"}, 42, {"expected": "42"}) == 1.0


def test_exact_match_compares_a_dict_output_with_an_equal_dict_in_the_same_order() -> None:
    assert value_of({"name": "exact", "type": "exact_match"}, {"a": 1, "b": 2}, {"expected": {"a": 1, "b": 2}}) == 1.0


def test_exact_match_scores_1_for_an_equal_dict_in_another_key_order() -> None:
    assert value_of({"name": "exact", "type": "exact_match"}, {"a": 1, "b": 2}, {"expected": {"b": 2, "a": 1}}) == 1.0


def test_exact_match_scores_a_none_output_as_empty_text() -> None:
    config = {"name": "exact", "type": "exact_match"}
    assert (value_of(config, None, {"expected": ""}), value_of(config, None, {"expected": "Paris"})) == (1.0, 0.0)


@pytest.mark.parametrize("expectations", [None, {}, {"contains": "Paris"}], ids=["none", "empty", "other-key"])
def test_exact_match_without_expectations_expected_has_no_value_and_says_why(expectations: Any) -> None:
    score = build({"name": "exact", "type": "exact_match"})(given("Paris", expectations))
    assert (score.value, score.error) == (None, "the case has no `expectations.expected`")


# --- contains / not_contains --------------------------------------------------------------------------------------


def test_contains_ignores_case_by_default() -> None:
    assert value_of({"name": "c", "type": "contains", "strings": ["REFUND"]}, "Your refund is on its way") == 1.0


def test_contains_with_case_sensitive_true_respects_case() -> None:
    config = {"name": "c", "type": "contains", "strings": ["REFUND"], "case_sensitive": True}
    assert value_of(config, "Your refund is on its way") == 0.0


def test_contains_mode_any_needs_one_of_the_strings() -> None:
    config = {"name": "c", "type": "contains", "strings": ["refund", "voucher"]}
    assert (value_of(config, "a refund"), value_of(config, "nothing")) == (1.0, 0.0)


def test_contains_mode_all_needs_every_string() -> None:
    config = {"name": "c", "type": "contains", "strings": ["refund", "voucher"], "mode": "all"}
    assert (value_of(config, "a refund and a voucher"), value_of(config, "a refund")) == (1.0, 0.0)


def test_contains_takes_a_single_string_from_expectations() -> None:
    config = {"name": "c", "type": "contains"}
    assert value_of(config, "It ships Monday", {"contains": "monday"}) == 1.0


def test_contains_takes_a_list_from_expectations_in_mode_all() -> None:
    config = {"name": "c", "type": "contains", "mode": "all"}
    expectations = {"contains": ["monday", "tracking"]}
    assert (value_of(config, "Tracking: ships Monday", expectations), value_of(config, "Monday", expectations)) == (
        1.0,
        0.0,
    )


def test_contains_prefers_strings_from_the_config_over_expectations() -> None:
    config = {"name": "c", "type": "contains", "strings": ["refund"]}
    assert value_of(config, "a refund", {"contains": "never in the output"}) == 1.0


def test_contains_searches_a_dict_output_as_json_text_keeping_non_ascii() -> None:
    assert value_of({"name": "c", "type": "contains", "strings": ["zürich"]}, {"city": "Zürich"}) == 1.0


def test_contains_on_empty_and_none_output_finds_nothing() -> None:
    config = {"name": "c", "type": "contains", "strings": ["refund"]}
    assert (value_of(config, ""), value_of(config, None)) == (0.0, 0.0)


def test_contains_without_strings_or_expectations_has_no_value_and_names_expectations_contains() -> None:
    score = build({"name": "c", "type": "contains"})(given("a refund", {"expected": "x"}))
    assert (score.value, score.error) == (
        None,
        "no strings: set `strings` on the scorer or `expectations.contains` on the case",
    )


def test_not_contains_scores_1_when_no_banned_string_appears_ignoring_case() -> None:
    config = {"name": "nc", "type": "not_contains", "strings": ["guarantee", "lawyer"]}
    assert (value_of(config, "We will help"), value_of(config, "We GUARANTEE it")) == (1.0, 0.0)


def test_not_contains_with_case_sensitive_true_respects_case() -> None:
    config = {"name": "nc", "type": "not_contains", "strings": ["guarantee"], "case_sensitive": True}
    assert value_of(config, "We GUARANTEE it") == 1.0


def test_not_contains_takes_strings_from_expectations() -> None:
    config = {"name": "nc", "type": "not_contains"}
    assert (
        value_of(config, "call a lawyer", {"not_contains": "lawyer"}),
        value_of(config, "call us", {"not_contains": ["lawyer", "sue"]}),
    ) == (0.0, 1.0)


def test_not_contains_on_none_output_scores_1() -> None:
    assert value_of({"name": "nc", "type": "not_contains", "strings": ["lawyer"]}, None) == 1.0


def test_not_contains_without_strings_or_expectations_names_expectations_not_contains() -> None:
    score = build({"name": "nc", "type": "not_contains"})(given("text", None))
    assert (score.value, score.error) == (
        None,
        "no strings: set `strings` on the scorer or `expectations.not_contains` on the case",
    )


# --- regex --------------------------------------------------------------------------------------------------------


def test_regex_scores_1_when_the_pattern_is_found_anywhere() -> None:
    config = {"name": "order_id", "type": "regex", "pattern": r"ORD-\d{4}"}
    assert (value_of(config, "Your order ORD-1234 ships"), value_of(config, "no order")) == (1.0, 0.0)


def test_regex_is_case_sensitive_unless_ignore_case() -> None:
    pattern = r"ord-\d{4}"
    sensitive = {"name": "r", "type": "regex", "pattern": pattern}
    insensitive = {"name": "r", "type": "regex", "pattern": pattern, "ignore_case": True}
    assert (value_of(sensitive, "ORD-1234"), value_of(insensitive, "ORD-1234")) == (0.0, 1.0)


def test_regex_matches_a_dict_output_as_json_text() -> None:
    assert value_of({"name": "r", "type": "regex", "pattern": r'"status": "shipped"'}, {"status": "shipped"}) == 1.0


def test_regex_treats_none_output_as_empty_text() -> None:
    assert value_of({"name": "r", "type": "regex", "pattern": r"^$"}, None) == 1.0


# --- is_json / json_schema ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [('{"status": "shipped"}', 1.0), ("[1, 2]", 1.0), ("not json", 0.0), ("", 0.0), (None, 0.0)],
    ids=["object-text", "array-text", "invalid-text", "empty", "none"],
)
def test_is_json_scores_a_string_by_whether_it_parses(outputs: Any, expected: float) -> None:
    assert value_of({"name": "j", "type": "is_json"}, outputs) == expected


def test_is_json_scores_a_dict_output_as_json() -> None:
    assert value_of({"name": "j", "type": "is_json"}, {"status": "shipped"}) == 1.0


ORDER_SCHEMA = {
    "type": "object",
    "required": ["status", "eta_days"],
    "properties": {"status": {"enum": ["shipped", "pending"]}, "eta_days": {"type": "integer", "minimum": 0}},
}


def test_json_schema_scores_1_for_a_json_string_that_validates() -> None:
    config = {"name": "order", "type": "json_schema", "schema": ORDER_SCHEMA}
    assert value_of(config, '{"status": "shipped", "eta_days": 2}') == 1.0


def test_json_schema_validates_a_dict_output_directly() -> None:
    config = {"name": "order", "type": "json_schema", "schema": ORDER_SCHEMA}
    assert value_of(config, {"status": "pending", "eta_days": 0}) == 1.0


@pytest.mark.parametrize(
    "outputs",
    ['{"status": "shipped"}', '{"status": "lost", "eta_days": 2}', {"status": "shipped", "eta_days": -1}, "{not json"],
    ids=["missing-key", "bad-enum", "below-minimum", "not-json"],
)
def test_json_schema_scores_0_for_an_output_that_does_not_validate(outputs: Any) -> None:
    assert value_of({"name": "order", "type": "json_schema", "schema": ORDER_SCHEMA}, outputs) == 0.0


def test_json_schema_with_an_invalid_schema_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "order", "type": "json_schema", "schema": {"type": "nope"}}])
    assert len(problems) == 1
    assert problems[0].startswith("scorers[0].json_schema.schema: ") and "'nope'" in problems[0]


# --- length_between / latency_under -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("ab", 0.0), ("abc", 1.0), ("abcde", 1.0), ("abcdef", 0.0)])
def test_length_between_counts_chars_with_both_bounds_inclusive(text: str, expected: float) -> None:
    assert value_of({"name": "len", "type": "length_between", "min": 3, "max": 5}, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("one two", 0.0), ("one  two\nthree", 1.0), ("a b c d", 1.0), ("a b c d e", 0.0)]
)
def test_length_between_counts_whitespace_separated_words(text: str, expected: float) -> None:
    assert value_of({"name": "len", "type": "length_between", "min": 3, "max": 4, "unit": "words"}, text) == expected


def test_length_between_with_only_max_accepts_empty_and_none_output() -> None:
    config = {"name": "len", "type": "length_between", "max": 10}
    assert (value_of(config, ""), value_of(config, None), value_of(config, "x" * 11)) == (1.0, 1.0, 0.0)


def test_length_between_with_only_min_rejects_empty_output() -> None:
    config = {"name": "len", "type": "length_between", "min": 1}
    assert (value_of(config, ""), value_of(config, "x")) == (0.0, 1.0)


def test_length_between_measures_a_dict_output_as_its_json_text() -> None:
    config = {"name": "len", "type": "length_between", "min": 8, "max": 8}  # {"a": 1}
    assert value_of(config, {"a": 1}) == 1.0


@pytest.mark.parametrize(("ms", "expected"), [(250.0, 1.0), (300.0, 1.0), (300.5, 0.0)])
def test_latency_under_scores_1_up_to_and_including_the_bound(ms: float, expected: float) -> None:
    scorer = build({"name": "fast", "type": "latency_under", "ms": 300})
    assert scorer(given("ok", trace=trace_taking(ms))).value == expected


@pytest.mark.parametrize("trace", [None, trace_taking(None)], ids=["no-trace", "no-duration"])
def test_latency_under_without_a_duration_has_no_value_and_says_why(trace: Any) -> None:
    score = build({"name": "fast", "type": "latency_under", "ms": 300})(given("ok", trace=trace))
    assert (score.value, score.error) == (None, "the trace has no duration")


def test_builtin_scores_are_code_scores_keeping_the_raw_verdict() -> None:
    score = build({"name": "j", "type": "is_json"})(given("{}"))
    assert (score.value, score.raw, score.source_type, score.rationale) == (1.0, True, "CODE", None)


# --- config errors ------------------------------------------------------------------------------------------------


def test_every_scorer_type_has_a_builder() -> None:
    assert set(SCORER_TYPES) == set(BUILDERS)


def test_a_config_with_target_and_no_type_is_a_custom_scorer() -> None:
    config = SCORER.validate_python({"name": "mine", "target": "gate_test_scorers:answer_length"})
    assert (config.type, config.target) == ("custom", "gate_test_scorers:answer_length")


def test_unknown_scorer_type_lists_the_known_types(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "x", "type": "bleu"}])
    assert problems == [f"scorers[0]: {KNOWN_TYPES_MESSAGE}"]


def test_unknown_scorer_type_message_names_every_registered_type(tmp_path: Path) -> None:
    [problem] = config_problems(tmp_path, scorers=[{"name": "x", "type": "bleu"}])
    listed = problem.partition("known: ")[2].removesuffix(" for your own").replace(" or ", " ").split(", ")
    assert set(listed) == {*SCORER_TYPES, "`target: module:function`"} - {"custom"}


def test_scorer_with_neither_type_nor_target_lists_the_known_types(tmp_path: Path) -> None:
    assert config_problems(tmp_path, scorers=[{"name": "x"}]) == [f"scorers[0]: {KNOWN_TYPES_MESSAGE}"]


def test_regex_that_does_not_compile_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "r", "type": "regex", "pattern": "(unclosed"}])
    assert problems == [
        "scorers[0].regex.pattern: not a valid regular expression: missing ), unterminated subpattern at position 0"
    ]


@pytest.mark.parametrize(
    ("pattern", "warning"),
    [("[(--", "Possible set difference at position 2"), ("[[a]", "Possible nested set at position 1")],
)
def test_regex_python_will_read_differently_is_a_config_error_naming_the_fix(
    tmp_path: Path, pattern: str, warning: str
) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "r", "type": "regex", "pattern": pattern}])
    assert problems == [
        f"scorers[0].regex.pattern: ambiguous regular expression: {warning} (Python will read it differently in a "
        "future version); escape the repeated '-', '&', '~', '|' or the '[' inside [...] with a backslash"
    ]


def test_length_between_with_neither_min_nor_max_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "len", "type": "length_between", "unit": "words"}])
    assert problems == ["scorers[0].length_between: give min, max or both"]


def test_length_between_with_min_above_max_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "len", "type": "length_between", "min": 5, "max": 2}])
    assert problems == ["scorers[0].length_between: min (5) is above max (2)"]


@pytest.mark.parametrize("name", ["Topic", "on-topic", "2nd", "on topic"])
def test_scorer_name_that_is_not_snake_case_is_a_config_error(tmp_path: Path, name: str) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": name, "type": "is_json"}])
    assert problems == ["scorers[0].is_json.name: String should match pattern '^[a-z][a-z0-9_]*$'"]


def test_duplicate_scorer_names_are_a_config_error(tmp_path: Path) -> None:
    scorers = [
        {"name": "topic", "type": "contains", "strings": ["parcel"]},
        {"name": "topic", "type": "is_json"},
    ]
    assert config_problems(tmp_path, scorers=scorers) == ["scorers: scorer names must be unique; repeated: topic"]


def test_scorer_named_like_a_builtin_metric_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers=[{"name": "latency_ms", "type": "latency_under", "ms": 100}])
    assert problems == ["scorers: scorer names latency_ms are built-in metrics; pick other names"]


def test_check_on_a_configured_scorer_rate_is_accepted(tmp_path: Path) -> None:
    scorers = [{"name": "topic", "type": "contains", "strings": ["parcel"]}]
    checks = [{"metric": "topic/rate", "at_least": 0.9}, {"metric": "topic/mean", "max_decrease": 0.05}]
    config = load_config(write_config(tmp_path, scorers=scorers, checks=checks))
    assert ([c.metric for c in config.checks], [s.name for s in config.scorers]) == (
        ["topic/rate", "topic/mean"],
        ["topic"],
    )


def test_check_on_an_unknown_scorer_lists_known_metrics_and_scorer_names(tmp_path: Path) -> None:
    scorers = [{"name": "topic", "type": "contains", "strings": ["parcel"]}]
    problems = config_problems(tmp_path, scorers=scorers, checks=[{"metric": "tone/rate", "at_least": 0.9}])
    assert problems == [f"checks[0].metric: unknown metric 'tone'; known: {', '.join([*METRICS, 'topic'])}"]


def test_a_scorers_key_that_is_not_a_list_is_a_config_error(tmp_path: Path) -> None:
    problems = config_problems(tmp_path, scorers={"name": "topic", "type": "is_json"})
    assert problems == ["scorers: Input should be a valid list"]


def test_a_scorers_key_that_is_a_number_is_a_config_error(tmp_path: Path) -> None:
    assert config_problems(tmp_path, scorers=5) == ["scorers: Input should be a valid list"]


# --- to_score -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(True, 1.0), (False, 0.0)])
def test_to_score_maps_booleans_to_1_and_0_keeping_the_raw_value(value: bool, expected: float) -> None:
    assert to_score(value) == Score(expected, raw=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", 1.0), ("No", 0.0), ("pass", 1.0), (" FAIL ", 0.0), ("true", 1.0), ("n", 0.0)],
)
def test_to_score_maps_yes_no_words_in_any_case(value: str, expected: float) -> None:
    assert to_score(value).value == expected


@pytest.mark.parametrize(("value", "expected"), [("4", 4.0), (" 0.25 ", 0.25), (3, 3.0), (0.5, 0.5)])
def test_to_score_takes_numbers_and_numeric_strings(value: Any, expected: float) -> None:
    assert to_score(value).value == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_to_score_rejects_a_non_finite_number_with_an_error(value: float) -> None:
    score = to_score(value)
    assert (score.value, score.error) == (None, f"not a finite number: {value!r}")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_to_score_rejects_a_non_finite_numeric_string_with_an_error(value: str) -> None:
    score = to_score(value)
    assert (score.value, score.error) == (None, f"not a finite number: {value!r}")


@pytest.mark.parametrize("value", ["maybe", None, [1]])
def test_to_score_rejects_an_unusable_value_saying_what_to_return(value: Any) -> None:
    score = to_score(value)
    assert (score.value, score.error) == (
        None,
        f"unusable value {value!r}: return a bool, a number, yes/no or a Feedback",
    )


@pytest.mark.parametrize(("value", "expected"), [(np.int64(3), 3.0), (np.bool_(True), 1.0)], ids=["int64", "bool_"])
def test_to_score_takes_numpy_integers_and_booleans(value: Any, expected: float) -> None:
    assert to_score(value).value == expected


def test_to_score_keeps_the_rationale_of_an_mlflow_feedback() -> None:
    score = to_score(Feedback(value="yes", rationale="it answers the question"), "LLM_JUDGE")
    assert score == Score(1.0, "it answers the question", None, "yes", "LLM_JUDGE")


def test_to_score_of_a_feedback_with_an_error_has_no_value_and_its_message() -> None:
    score = to_score(Feedback(error=ValueError("the judge timed out")))
    assert (score.value, score.error) == (None, "the judge timed out")


# --- custom scorers -----------------------------------------------------------------------------------------------


def test_custom_function_taking_only_outputs_gets_only_outputs() -> None:
    scorer = build({"name": "length", "target": "gate_test_scorers:answer_length"})
    score = scorer(ScoreInput(QUESTION, "four", {"expected": "x"}, trace_taking(1.0)))
    assert (scorer.name, score.value, score.source_type) == ("length", 4.0, "CODE")


def test_custom_function_taking_inputs_outputs_expectations_gets_all_three() -> None:
    scorer = build({"name": "echo", "target": "gate_test_scorers:echo_all"})
    score = scorer(ScoreInput(QUESTION, "It ships Monday", {"expected": "Monday"}, None))
    assert score.value == 1.0
    assert json.loads(score.rationale or "") == {
        "inputs": QUESTION,
        "outputs": "It ships Monday",
        "expectations": {"expected": "Monday"},
    }


def test_custom_function_gets_empty_expectations_when_the_case_has_none() -> None:
    score = build({"name": "echo", "target": "gate_test_scorers:echo_all"})(given("ok", None))
    assert json.loads(score.rationale or "")["expectations"] == {}


def test_custom_function_taking_trace_gets_the_trace() -> None:
    scorer = build({"name": "duration", "target": "gate_test_scorers:trace_duration"})
    assert scorer(given("ok", trace=trace_taking(8))).value == 8.0


def test_custom_function_taking_kwargs_gets_all_four() -> None:
    score = build({"name": "echo", "target": "gate_test_scorers:echo_kwargs"})(given("ok"))
    assert score.rationale == "expectations,inputs,outputs,trace"


def test_mlflow_scorer_decorated_function_is_run_and_its_feedback_used() -> None:
    scorer = build({"name": "refund", "type": "custom", "target": "gate_test_scorers:mentions_refund"})
    found, missing = scorer(given("Your refund is on its way")), scorer(given("It ships Monday"))
    assert (found.value, found.rationale, found.source_type) == (1.0, "mentions a refund", "CODE")
    assert (missing.value, missing.rationale) == (0.0, "no refund mentioned")


def test_custom_function_taking_none_of_the_scorer_arguments_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "bad", "target": "gate_test_scorers:takes_text"})
    assert exc.value.problems == [
        "scorers 'bad': gate_test_scorers:takes_text takes none of inputs, outputs, expectations, trace"
    ]


def test_custom_scorer_from_a_missing_module_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "bad", "target": "no_such_scorer_module:score"}, tmp_path)
    assert exc.value.problems == [
        "scorers 'bad'.target: cannot import module 'no_such_scorer_module': No module named 'no_such_scorer_module'"
    ]


def test_custom_scorer_with_a_missing_attribute_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "bad", "target": "gate_test_scorers:no_such_scorer"})
    assert exc.value.problems == ["scorers 'bad'.target: module 'gate_test_scorers' has no attribute 'no_such_scorer'"]


def test_custom_scorer_that_raises_builds_and_raises_when_called() -> None:
    scorer = build({"name": "buggy", "target": "gate_test_scorers:explodes"})
    with pytest.raises(RuntimeError, match=r"^scorer bug on 'ok'$"):
        scorer(given("ok"))


# --- judge (over HTTP, against the simulator) ---------------------------------------------------------------------


def judge_config(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "empathy",
        "type": "judge",
        "rubric": "The answer shows empathy for the customer.",
        "base_url": url,
        "api_key_env": "GATE_TEST_JUDGE_KEY",
        **overrides,
    }


@pytest.fixture
def judge_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE_TEST_JUDGE_KEY", "sk-simulated")


@pytest.mark.usefixtures("judge_key")
def test_judge_says_yes_as_1_with_rationale_and_token_usage(simulator: str) -> None:
    scorer = build(judge_config(simulator))
    score = scorer(given("I'm sorry about the delay; it ships today."))
    assert (score.value, score.raw, score.source_type, scorer.source_type) == (1.0, "yes", "LLM_JUDGE", "LLM_JUDGE")
    assert score.rationale == "Simulated judge: it acknowledges the customer's feelings."
    assert score.usage["input_tokens"] > 0 and score.usage["output_tokens"] > 0


@pytest.mark.usefixtures("judge_key")
def test_judge_says_no_as_0_with_rationale_and_token_usage(simulator: str) -> None:
    score = build(judge_config(simulator))(given("It ships today."))
    assert (score.value, score.raw, score.error) == (0.0, "no", None)
    assert score.rationale == "Simulated judge: it sounds indifferent."
    assert score.usage["input_tokens"] > 0 and score.usage["output_tokens"] > 0


@pytest.mark.usefixtures("judge_key")
def test_score_judge_keeps_a_result_inside_1_to_scale_max(simulator: str) -> None:
    score = build(judge_config(simulator, result="score", scale_max=3))(given("Sorry, it ships today."))
    assert (score.value, score.error) == (1.0, None)


@pytest.mark.usefixtures("judge_key")
def test_score_judge_rejects_a_result_outside_1_to_scale_max_naming_the_scale(simulator: str) -> None:
    score = build(judge_config(simulator, result="score", scale_max=3))(given("It ships today."))
    assert (score.value, score.error, score.raw) == (None, "score 0 outside 1..3", "no")
    assert score.rationale == "Simulated judge: it sounds indifferent."
    assert score.usage["input_tokens"] > 0


def test_judge_uses_openai_base_url_when_the_config_has_none(simulator: str) -> None:
    config = judge_config(simulator, api_key_env="OPENAI_API_KEY")
    del config["base_url"]
    assert build(config)(given("Thank you for waiting; it ships today.")).value == 1.0


@pytest.mark.usefixtures("judge_key")
def test_judge_with_an_unreachable_endpoint_raises_a_connection_error_when_called() -> None:
    scorer = build(judge_config("http://127.0.0.1:9/v1", max_retries=0, timeout_s=2))
    with pytest.raises(openai.APIConnectionError, match=r"^Connection error\.$"):
        scorer(given("It ships today."))


# --- mlflow judges ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("simulator")
@pytest.mark.parametrize(
    ("answer", "expected"),
    [("I'm sorry about the delay; it ships today.", 1.0), ("It ships today.", 0.0)],
    ids=["apologises", "indifferent"],
)
def test_mlflow_guidelines_on_empathy_scores_an_apology_1_and_none_0(answer: str, expected: float) -> None:
    scorer = build(
        {
            "name": "empathy",
            "type": "mlflow",
            "judge": "Guidelines",
            "args": {"guidelines": ["The response must show empathy for the customer."]},
        }
    )
    score = scorer(given(answer))
    assert (score.value, score.error, score.source_type) == (expected, None, "LLM_JUDGE")
    assert (score.rationale or "").startswith("Simulated judge: ")


def test_mlflow_judge_with_an_unknown_name_is_a_config_error_listing_known_judges() -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "tone", "type": "mlflow", "judge": "Politeness"})
    [problem] = exc.value.problems
    prefix = "scorers 'tone': MLflow has no judge 'Politeness'; known: "
    assert problem.startswith(prefix)
    assert {"Guidelines", "Correctness", "RelevanceToQuery", "Safety"} <= set(problem.removeprefix(prefix).split(", "))


def test_mlflow_judge_missing_a_required_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "empathy", "type": "mlflow", "judge": "Guidelines"})
    assert str(exc.value).startswith("scorers 'empathy': Guidelines(model) is invalid: ")
    assert "guidelines" in str(exc.value)


def test_mlflow_judge_named_scorer_the_abstract_base_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        build({"name": "tone", "type": "mlflow", "judge": "Scorer"})
    [problem] = exc.value.problems
    prefix = "scorers 'tone': MLflow has no judge 'Scorer'; known: "
    assert problem.startswith(prefix)
    assert not {"Scorer", "ScorerSamplingConfig"} & set(problem.removeprefix(prefix).split(", "))
