"""Unit tests for ``gate._config.schema.load_config``: defaults, and one exact message per kind of mistake."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate._config.schema import GateConfig, load_config, require_run_parts
from gate._errors import ConfigError
from gate._metrics import AGGREGATIONS, METRICS

MINIMAL: dict[str, Any] = {
    "version": 1,
    "cases": [{"inputs": {"question": "Where is my parcel?"}}],
    "baseline": {"target": "app:old_agent"},
    "candidate": {"target": "app:new_agent"},
    "checks": [{"metric": "latency_ms/p95", "at_most": 1000}],
}

DROP = object()  # a value for config_with(): remove the key

CHECK_KEYS = (
    "metric, at_most, at_least, max_increase, max_decrease, max_increase_pct, max_decrease_pct,"
    " severity, on_inconclusive, per_case, where, trade_off, per_slice, about, percentile"
)
BOUND_KEYS = "at_most, at_least, max_increase, max_decrease, max_increase_pct, max_decrease_pct"
TOP_LEVEL_KEYS = (
    "version, experiment, tracking_uri, dataset, cases, baseline, candidate, run, checks, confidence, on_inconclusive,"
    " guard_errors, scorers, pricing, simulator, pair_by"
)


def config_with(tmp_path: Path, **changes: Any) -> Path:
    """Write MINIMAL with top-level keys replaced (or removed with DROP) and return its path."""
    data = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def check(metric: str, **bounds: Any) -> dict[str, Any]:
    return {"metric": metric, **bounds}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


# --- a valid config ---------------------------------------------------------------------------------------------


def test_minimal_config_loads_with_default_run_settings(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path))
    assert (config.run.repeats, config.run.concurrency, config.run.timeout_s) == (1, 4, 120.0)


def test_check_severity_defaults_to_error(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path))
    assert config.checks[0].severity == "error"


def test_minimal_config_defaults_experiment_name_to_gate(tmp_path: Path) -> None:
    assert load_config(config_with(tmp_path)).experiment == "gate"


def test_load_config_accepts_a_string_path(tmp_path: Path) -> None:
    assert isinstance(load_config(str(config_with(tmp_path))), GateConfig)


def test_bounds_returns_only_the_bounds_that_are_set_in_fixed_order(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("total_tokens/mean", max_increase_pct=20, at_most=500)])
    assert load_config(path).checks[0].bounds() == {"at_most": 500.0, "max_increase_pct": 20.0}


def test_warn_severity_is_accepted(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95", at_most=1000, severity="warn")])
    assert load_config(path).checks[0].severity == "warn"


def test_fractional_percentile_is_accepted(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p99.9", at_most=1000)])
    assert load_config(path).checks[0].metric == "latency_ms/p99.9"


def test_rate_of_a_binary_metric_is_accepted(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("error/rate", at_most=0.05)])
    assert load_config(path).checks[0].metric == "error/rate"


def test_equal_at_least_and_at_most_is_accepted(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("llm_calls/mean", at_least=2, at_most=2)])
    assert load_config(path).checks[0].bounds() == {"at_most": 2.0, "at_least": 2.0}


def test_dotted_module_and_attribute_target_is_accepted(tmp_path: Path) -> None:
    path = config_with(tmp_path, baseline={"target": "examples.support_agents:Agents.basic"})
    assert load_config(path).baseline.target == "examples.support_agents:Agents.basic"


def test_label_falls_back_to_the_variant_name(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, candidate={"target": "app:new_agent", "label": "v2"}))
    assert (config.label("baseline"), config.label("candidate")) == ("baseline", "v2")


# --- the file itself --------------------------------------------------------------------------------------------


def test_missing_file_names_the_path_and_the_option(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems(path) == [f"{path}: file not found; pass the config with -c/--config"]


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nchecks: [\n  - metric: x\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 3, column 3: not valid YAML: ")):
        load_config(path)


def test_top_level_list_is_rejected_as_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- version: 1\n")
    assert problems(path) == [f"{path}: expected a mapping of keys (version, baseline, candidate, checks, ...)"]


def test_empty_file_is_rejected_as_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert problems(path) == [f"{path}: expected a mapping of keys (version, baseline, candidate, checks, ...)"]


def test_duplicate_top_level_key_is_reported(tmp_path: Path) -> None:
    # Repeating `checks:` must not silently drop the first list of checks (YAML requires unique keys).
    text = yaml.safe_dump(MINIMAL, sort_keys=False) + "checks:\n  - {metric: error/rate, at_most: 0}\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line ") + r"\d+.*checks"):
        load_config(path)


# --- version ----------------------------------------------------------------------------------------------------


def test_missing_version_says_what_is_expected(tmp_path: Path) -> None:
    path = config_with(tmp_path, version=DROP)
    assert problems(path) == [f"{path}: version: expected 1 (this gate reads config version 1), got None"]


def test_wrong_version_says_what_is_expected(tmp_path: Path) -> None:
    path = config_with(tmp_path, version=2)
    assert problems(path) == [f"{path}: version: expected 1 (this gate reads config version 1), got 2"]


def test_version_as_string_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, version="1")
    assert problems(path) == [f"{path}: version: expected 1 (this gate reads config version 1), got '1'"]


def test_version_true_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, version=True)
    assert problems(path) == [f"{path}: version: expected 1 (this gate reads config version 1), got True"]


# --- keys -------------------------------------------------------------------------------------------------------


def test_unknown_top_level_key_lists_valid_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, treshold=3)
    assert problems(path) == [f"{path}: treshold: unknown key; valid keys here: {TOP_LEVEL_KEYS}"]


def test_about_dataset_on_a_per_case_check_names_the_check_and_why(tmp_path: Path) -> None:
    checks = [check("latency_ms/mean", max_increase_pct=50, per_case=True, about="dataset")]
    path = config_with(tmp_path, checks=checks)
    assert problems(path) == [
        f"{path}: checks[0]: about: dataset applies to a check over cases; per_case checks and case counts already "
        "take each case as it is"
    ]
    other = config_with(tmp_path, checks=[check("latency_ms/mean", max_increase_pct=50, about="everything")])
    assert problems(other) == [f"{other}: checks[0].about: Input should be 'app' or 'dataset'"]


def test_percentile_plain_applies_only_to_a_percentile_and_names_its_values(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/mean", max_increase_pct=10, percentile="plain")])
    assert problems(path) == [
        f"{path}: checks[0]: percentile: plain applies to a percentile of a measured metric (e.g. latency_ms/p95), "
        "not 'latency_ms/mean'"
    ]
    other = config_with(tmp_path, checks=[check("latency_ms/p95", max_increase_pct=10, percentile="exact")])
    assert problems(other) == [f"{other}: checks[0].percentile: Input should be 'smoothed' or 'plain'"]
    fine = config_with(tmp_path, checks=[check("latency_ms/median", max_increase_pct=10, percentile="plain")])
    assert load_config(fine).checks[0].percentile == "plain"


def test_misspelled_bound_in_second_check_names_its_path_and_lists_valid_keys(tmp_path: Path) -> None:
    checks = [check("latency_ms/p95", at_most=1000), check("total_tokens/mean", max_increse_pct=20)]
    path = config_with(tmp_path, checks=checks)
    assert problems(path) == [f"{path}: checks[1].max_increse_pct: unknown key; valid keys here: {CHECK_KEYS}"]


def test_misspelled_run_key_lists_run_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, run={"repeat": 3})
    assert problems(path) == [
        f"{path}: run.repeat: unknown key; valid keys here: "
        "repeats, max_repeats, max_calls, max_cost_usd, concurrency, timeout_s, autolog, retries, retry_backoff_s, "
        "retry_max_backoff_s, max_error_rate, decide_all, warmup, isolation"
    ]


def test_misspelled_inline_case_key_lists_case_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, cases=[{"input": {"q": 1}, "inputs": {"q": 1}}])
    assert problems(path) == [
        f"{path}: cases[0].input: unknown key; valid keys here: id, inputs, expectations, tags, golden"
    ]


def test_misspelled_price_key_lists_price_keys(tmp_path: Path) -> None:
    path = config_with(tmp_path, pricing={"gpt-x": {"input_per_mtok": 1, "output_per_mtok": 2, "cached_per_mtok": 0}})
    assert problems(path) == [
        f"{path}: pricing.gpt-x.cached_per_mtok: unknown key; valid keys here: input_per_mtok, output_per_mtok"
    ]


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=DROP)
    assert problems(path) == [f"{path}: checks: required key is missing"]


def test_a_variant_without_target_or_traces_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, baseline={"label": "v1"})
    assert problems(path) == [
        f"{path}: baseline: give 'target' (module:function), 'http' (an endpoint), 'prompt' (prompts:/NAME@ALIAS) "
        "or 'model' (messages and a model) for gate run, or 'traces' (a selector of stored traces) for gate compare"
    ]


def test_gate_run_names_a_missing_target(tmp_path: Path) -> None:
    path = config_with(tmp_path, baseline=DROP)
    config = load_config(path)  # gate compare can select the baseline's traces by flags
    with pytest.raises(ConfigError) as exc:
        require_run_parts(config, path)
    assert exc.value.problems == [
        f"{path}: baseline.target: required key is missing (gate run calls it: give 'target', 'http', 'prompt' or "
        "'model'; 'traces' selects stored traces for gate compare)"
    ]


def test_empty_checks_list_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[])
    assert problems(path) == [f"{path}: checks: List should have at least 1 item after validation, not 0"]


# --- metric keys ------------------------------------------------------------------------------------------------


def test_unknown_metric_names_the_known_ones(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latncy_ms/p95", at_most=1000)])
    assert problems(path) == [f"{path}: checks[0].metric: unknown metric 'latncy_ms'; known: {', '.join(METRICS)}"]


def test_metric_without_aggregation_shows_the_expected_form(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms", at_most=1000)])
    assert problems(path) == [
        f"{path}: checks[0].metric: 'latency_ms' is not '<metric>/<aggregation>' (e.g. latency_ms/p95)"
    ]


def test_unknown_aggregation_lists_known_ones(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/avg", at_most=1000)])
    assert problems(path) == [
        f"{path}: checks[0].metric: unknown aggregation 'avg'; known: {', '.join(AGGREGATIONS)}, pNN (e.g. p95, p99.9)"
    ]


def test_percentile_above_100_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p101", at_most=1000)])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: checks[0].metric: percentile 'p101' is above 100")):
        load_config(path)


def test_metric_key_with_trailing_newline_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95\n", at_most=1000)])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: checks[0].metric: unknown aggregation")):
        load_config(path)


def test_rate_of_a_non_binary_metric_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/rate", at_most=1000)])
    assert problems(path) == [
        f"{path}: checks[0]: 'rate' is the share of 1s in a 0/1 metric; 'latency_ms' is not 0/1, use mean or pNN"
    ]


def test_percentile_of_binary_metric_suggests_rate(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("error/p95", at_most=0)])
    assert problems(path) == [f"{path}: checks[0]: 'error' is 0/1; use 'error/rate' instead of 'error/p95'"]


# --- bounds -----------------------------------------------------------------------------------------------------


def test_check_without_bound_lists_the_bounds(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95", severity="warn")])
    assert problems(path) == [f"{path}: checks[0]: no bound given; use one or more of: {BOUND_KEYS}"]


def test_at_least_above_at_most_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("llm_calls/mean", at_least=5, at_most=2)])
    assert problems(path) == [f"{path}: checks[0]: at_least (5.0) is above at_most (2.0); no value can pass"]


def test_negative_max_increase_pct_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95", max_increase_pct=-10)])
    assert problems(path) == [f"{path}: checks[0].max_increase_pct: Input should be greater than or equal to 0"]


def test_nan_bound_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95", at_most=float("nan"))])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: checks[0].at_most: ")):
        load_config(path)


def test_severity_other_than_error_or_warn_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, checks=[check("latency_ms/p95", at_most=1000, severity="warning")])
    assert problems(path) == [f"{path}: checks[0].severity: Input should be 'error' or 'warn'"]


# --- targets and cases ------------------------------------------------------------------------------------------


def test_target_without_colon_is_rejected_with_an_example(tmp_path: Path) -> None:
    path = config_with(tmp_path, candidate={"target": "app.new_agent"})
    assert problems(path) == [
        f"{path}: candidate.target: 'app.new_agent' is not 'module:function' (e.g. examples.support_agents:basic_agent)"
    ]


def test_target_with_empty_function_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, candidate={"target": "app:"})
    with pytest.raises(ConfigError, match=re.escape(f"{path}: candidate.target: 'app:' is not 'module:function'")):
        load_config(path)


def test_both_dataset_and_cases_is_rejected(tmp_path: Path) -> None:
    path = config_with(tmp_path, dataset="cases.yaml")
    assert problems(path) == [
        f"{path}: (top level): give exactly one of 'dataset' (a YAML, JSONL or CSV file, an MLflow evaluation "
        "dataset, or stored traces) or 'cases' (a list inline)"
    ]


def test_neither_dataset_nor_cases_is_rejected_by_gate_run_but_not_by_gate_compare(tmp_path: Path) -> None:
    path = config_with(tmp_path, cases=DROP)
    config = load_config(path)  # gate compare reads the inputs from the traces
    with pytest.raises(ConfigError) as exc:
        require_run_parts(config, path)
    assert exc.value.problems == [
        f"{path}: (top level): give exactly one of 'dataset' (a YAML, JSONL or CSV file, an MLflow evaluation "
        "dataset, or stored traces) or 'cases' (a list inline)"
    ]


# --- several at once --------------------------------------------------------------------------------------------


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    path = config_with(
        tmp_path,
        baseline={"target": "app"},
        checks=[check("latency_ms/p95", at_most=1000), check("tokens/mean", at_most=5)],
        run={"repeats": 0},
    )
    assert problems(path) == [
        f"{path}: baseline.target: 'app' is not 'module:function' (e.g. examples.support_agents:basic_agent)",
        f"{path}: run.repeats: Input should be greater than or equal to 1",
        f"{path}: checks[1].metric: unknown metric 'tokens'; known: {', '.join(METRICS)}",
    ]


def test_config_error_message_joins_the_problem_lines(tmp_path: Path) -> None:
    path = config_with(tmp_path, baseline={"target": "a"}, candidate={"target": "b"})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path}: baseline.target: 'a' is not 'module:function' (e.g. examples.support_agents:basic_agent)\n"
        f"{path}: candidate.target: 'b' is not 'module:function' (e.g. examples.support_agents:basic_agent)"
    )
