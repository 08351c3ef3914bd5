"""Per-trace metrics read from real MLflow traces, and the pure aggregations over them."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import openai
import pytest

from gate._config.schema import PriceConfig
from gate._metrics import (
    ANSWER_METRICS,
    METRICS,
    aggregate,
    compute_metrics,
    extract_values,
    parse_metric_key,
    percentile,
)
from gate.simulator import SimulatorSettings, running_simulator

MODEL = "gpt-4o-mini"
PRICING = {MODEL: PriceConfig(input_per_mtok=0.15, output_per_mtok=0.6)}
# MLflow imports mlflow.pyfunc lazily at the first span; that import warns (UserWarning, "Any type hint is inferred as
# AnyType"), and with filterwarnings=error the warning becomes an exception that MLflow swallows: no span, no trace.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}


@dataclass
class Recorded:
    """One trace read back from the store, with what the app saw while producing it."""

    trace: Any
    returned: str | None
    usage: Any  # the simulator's CompletionUsage, or None when no LLM call finished


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Recorded]]:
    """Three traces in a fresh SQLite store: one LLM call, one that raises, two tools then an LLM call."""
    saved_env = {k: os.environ.get(k) for k in (*_ENV, "MLFLOW_TRACKING_URI")}
    saved_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    os.environ.update(_ENV)
    tmp: Path = tmp_path_factory.mktemp("metrics")
    # set_tracking_uri also resets the tracer provider, so it picks up the sync-export setting above.
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'm.db'}")
    try:
        exp_id = mlflow.create_experiment("metrics", artifact_location=(tmp / "artifacts").as_uri())
        with running_simulator(SimulatorSettings(seed=0, base_latency_ms=1.0, ms_per_token=0.0)) as url:
            mlflow.openai.autolog()
            client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            usages: list[Any] = []

            def ask(question: str) -> str:
                response = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=80
                )
                usages.append(response.usage)
                return response.choices[0].message.content or ""

            @mlflow.trace(span_type="AGENT")
            def simple(question: str) -> str:
                return ask(question)

            @mlflow.trace(span_type="AGENT")
            def failing(question: str) -> str:
                raise RuntimeError(f"tool unavailable for {question!r}")

            @mlflow.trace(span_type="TOOL")
            def lookup(order: int) -> str:
                return f"order {order} shipped"

            @mlflow.trace(span_type="AGENT")
            def with_tools(question: str) -> str:
                facts = [lookup(1), lookup(2)]
                return ask(f"{question} {' '.join(facts)}")

            ids: dict[str, str] = {}
            returned: dict[str, str | None] = {}
            with mlflow.start_run(experiment_id=exp_id):  # the run sends the traces to our experiment
                returned["simple"] = simple("Where is my order?")
                ids["simple"] = mlflow.get_last_active_trace_id()
                with pytest.raises(RuntimeError, match="tool unavailable for 'refund'"):
                    failing("refund")
                returned["failing"] = None
                ids["failing"] = mlflow.get_last_active_trace_id()
                returned["with_tools"] = with_tools("Where are my orders?")
                ids["with_tools"] = mlflow.get_last_active_trace_id()
        traces = {t.info.trace_id: t for t in mlflow.search_traces(locations=[exp_id], return_type="list")}
        assert all(ids.values()), f"a traced call recorded no trace: {ids}"
        assert len(usages) == 2
        assert sorted(traces) == sorted(ids.values())
        usage_by_name = {"simple": usages[0], "failing": None, "with_tools": usages[1]}
        yield {name: Recorded(traces[tid], returned[name], usage_by_name[name]) for name, tid in ids.items()}
    finally:
        mlflow.openai.autolog(disable=True)
        mlflow.set_tracking_uri(saved_uri)  # None unsets it, as before the fixture
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- extraction from real traces ---------------------------------------------------------------


def test_extract_values_returns_every_per_trace_metric(recorded: dict[str, Recorded]) -> None:
    per_trace = {name for name, metric in METRICS.items() if not metric.per_case}
    assert set(extract_values(recorded["simple"].trace)) == per_trace


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_latency_ms_is_the_trace_execution_duration(recorded: dict[str, Recorded], name: str) -> None:
    trace = recorded[name].trace
    assert trace.info.execution_duration is not None
    assert extract_values(trace)["latency_ms"] == float(trace.info.execution_duration)


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_tokens_are_the_trace_token_usage(recorded: dict[str, Recorded], name: str) -> None:
    trace = recorded[name].trace
    values = extract_values(trace)
    assert trace.info.token_usage is not None
    assert values["input_tokens"] == trace.info.token_usage["input_tokens"]
    assert values["output_tokens"] == trace.info.token_usage["output_tokens"]
    assert values["total_tokens"] == trace.info.token_usage["total_tokens"]


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_tokens_match_the_simulator_usage(recorded: dict[str, Recorded], name: str) -> None:
    usage = recorded[name].usage
    values = extract_values(recorded[name].trace)
    assert (values["input_tokens"], values["output_tokens"], values["total_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )


def test_error_is_one_for_a_trace_that_raised(recorded: dict[str, Recorded]) -> None:
    trace = recorded["failing"].trace
    assert trace.info.state.value == "ERROR"
    assert extract_values(trace)["error"] == 1.0


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_error_is_zero_for_an_ok_trace(recorded: dict[str, Recorded], name: str) -> None:
    trace = recorded[name].trace
    assert trace.info.state.value == "OK"
    assert extract_values(trace)["error"] == 0.0


def test_tokens_are_none_for_a_trace_without_token_usage(recorded: dict[str, Recorded]) -> None:
    trace = recorded["failing"].trace
    assert trace.info.token_usage is None
    values = extract_values(trace)
    assert (values["input_tokens"], values["output_tokens"], values["total_tokens"]) == (None, None, None)


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_response_chars_is_the_length_of_the_returned_string(recorded: dict[str, Recorded], name: str) -> None:
    returned = recorded[name].returned
    assert returned
    assert extract_values(recorded[name].trace)["response_chars"] == len(returned)


def test_response_chars_is_none_when_the_root_span_has_no_output(recorded: dict[str, Recorded]) -> None:
    assert extract_values(recorded["failing"].trace)["response_chars"] is None


def test_a_failed_call_counts_in_the_error_rate_only_not_in_latency_tokens_or_length(
    recorded: dict[str, Recorded],
) -> None:
    trace = recorded["failing"].trace
    assert trace.info.execution_duration is not None  # it took time to fail: that is not a latency of an answer
    values = extract_values(trace)
    assert values["error"] == 1.0
    assert all(values[name] is None for name in ANSWER_METRICS)
    assert set(ANSWER_METRICS) == {"latency_ms", "ttft_ms", "input_tokens", "output_tokens", "total_tokens",
                                   "response_chars", "llm_calls", "tool_calls", "span_count"}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "llm_calls", "tool_calls", "span_count"),
    [("simple", 1, 0, 2), ("with_tools", 1, 2, 4)],
)
def test_call_and_span_counts_come_from_span_types(
    recorded: dict[str, Recorded], name: str, llm_calls: int, tool_calls: int, span_count: int
) -> None:
    trace = recorded[name].trace
    values = extract_values(trace)
    types = sorted(span.span_type for span in trace.data.spans)
    assert (values["llm_calls"], values["tool_calls"], values["span_count"]) == (llm_calls, tool_calls, span_count)
    assert types.count("CHAT_MODEL") == llm_calls
    assert types.count("TOOL") == tool_calls


@pytest.mark.parametrize("name", ["simple", "with_tools"])
def test_cost_usd_is_tokens_times_the_price_table(recorded: dict[str, Recorded], name: str) -> None:
    trace = recorded[name].trace
    usage = trace.info.token_usage
    price = PRICING[MODEL]
    expected = (usage["input_tokens"] * price.input_per_mtok + usage["output_tokens"] * price.output_per_mtok) / 1e6
    assert extract_values(trace, PRICING)["cost_usd"] == pytest.approx(expected, rel=1e-12)


def _mlflow_cost(trace: Any) -> float | None:
    # The full mlflow package prices known models itself (trace.info.cost); mlflow-skinny leaves it empty.
    return (trace.info.cost or {}).get("total_cost")


def test_cost_usd_without_a_price_for_the_model_is_mlflows_own_cost_or_unknown(recorded: dict[str, Recorded]) -> None:
    other = {"some-other-model": PriceConfig(input_per_mtok=1.0, output_per_mtok=1.0)}
    trace = recorded["simple"].trace
    assert extract_values(trace, other)["cost_usd"] == _mlflow_cost(trace)
    assert extract_values(trace)["cost_usd"] == _mlflow_cost(trace)


def test_the_price_table_wins_over_mlflows_own_cost(recorded: dict[str, Recorded]) -> None:
    trace = recorded["simple"].trace
    mine = {MODEL: PriceConfig(input_per_mtok=1000.0, output_per_mtok=2000.0)}
    usage = trace.info.token_usage
    expected = (usage["input_tokens"] * 1000.0 + usage["output_tokens"] * 2000.0) / 1e6
    assert extract_values(trace, mine)["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert expected != _mlflow_cost(trace)


# --- pure aggregations -------------------------------------------------------------------------

ARRAYS = [
    [5.0],
    [3.0, 1.0],
    [1.0, 2.0, 3.0, 4.0],
    [12.5, 3.0, 7.25, 100.0, 0.5, 42.0, 8.0],
    [float(v) for v in range(1, 101)],
]


@pytest.mark.parametrize("values", ARRAYS)
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear_interpolation(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("values", ARRAYS)
def test_p0_is_min_and_p100_is_max(values: list[float]) -> None:
    assert aggregate(values, "p0") == min(values)
    assert aggregate(values, "p100") == max(values)


def test_percentile_of_no_values_raises_with_message() -> None:
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)


@pytest.mark.parametrize("aggregation", ["mean", "median", "min", "max", "sum", "rate", "p50", "p99.9"])
def test_aggregate_of_no_values_is_none(aggregation: str) -> None:
    assert aggregate([], aggregation) is None


def test_rate_is_the_mean_of_zeros_and_ones() -> None:
    assert aggregate([1.0, 0.0, 0.0, 1.0, 0.0], "rate") == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("mean", 2.5), ("median", 2.5), ("min", 1.0), ("max", 4.0), ("sum", 10.0), ("p50", 2.5)],
)
def test_aggregate_computes_each_aggregation(aggregation: str, expected: float) -> None:
    assert aggregate([4.0, 1.0, 3.0, 2.0], aggregation) == pytest.approx(expected)


def test_compute_metrics_skips_none_values() -> None:
    rows = [{"latency_ms": 10.0, "cost_usd": None}, {"latency_ms": 30.0, "cost_usd": 2.0}, {"latency_ms": None}]
    assert compute_metrics(rows, ["latency_ms/mean", "cost_usd/sum", "cost_usd/mean"]) == {
        "latency_ms/mean": 20.0,
        "cost_usd/sum": 2.0,
        "cost_usd/mean": 2.0,
    }


def test_compute_metrics_skips_nan_values() -> None:
    rows = [{"latency_ms": 10.0}, {"latency_ms": math.nan}, {"latency_ms": 20.0}]
    assert compute_metrics(rows, ["latency_ms/max", "latency_ms/mean"]) == {
        "latency_ms/max": 20.0,
        "latency_ms/mean": 15.0,
    }


def test_compute_metrics_gives_none_for_a_metric_no_row_has() -> None:
    assert compute_metrics([{"latency_ms": 1.0}, {"cost_usd": None}], ["cost_usd/sum"]) == {"cost_usd/sum": None}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("latency_ms/p95", ("latency_ms", "p95")),
        ("error/rate", ("error", "rate")),
        ("cost_usd/p99.9", ("cost_usd", "p99.9")),
        ("cases_regressed/share", ("cases_regressed", "share")),
    ],
)
def test_parse_metric_key_splits_metric_and_aggregation(key: str, expected: tuple[str, str]) -> None:
    assert parse_metric_key(key) == expected


def test_parse_metric_key_without_slash_names_the_form() -> None:
    with pytest.raises(ValueError, match=r"'latency_ms' is not '<metric>/<aggregation>' \(e\.g\. latency_ms/p95\)"):
        parse_metric_key("latency_ms")


def test_parse_metric_key_unknown_metric_names_the_known_metrics() -> None:
    with pytest.raises(ValueError) as caught:
        parse_metric_key("latency/p95")
    assert str(caught.value) == f"unknown metric 'latency'; known: {', '.join(METRICS)}"


@pytest.mark.parametrize("aggregation", ["average", "p", "p-5", "P95", "p9x", "95"])
def test_parse_metric_key_unknown_aggregation_names_the_known_aggregations(aggregation: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_metric_key(f"latency_ms/{aggregation}")
    message = str(caught.value)
    assert message.startswith(f"unknown aggregation '{aggregation}'; known: ")
    assert "mean, median, min, max, sum, rate, pNN (e.g. p95, p99.9)" in message


@pytest.mark.parametrize("aggregation", ["p101", "p100.5"])
def test_parse_metric_key_percentile_above_100_says_so(aggregation: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_metric_key(f"latency_ms/{aggregation}")
    assert str(caught.value) == f"percentile '{aggregation}' is above 100"


def test_parse_metric_key_per_case_metric_names_the_case_aggregations() -> None:
    with pytest.raises(ValueError) as caught:
        parse_metric_key("cases_regressed/mean")
    assert str(caught.value) == "unknown aggregation 'mean' for 'cases_regressed'; known: count, share"
