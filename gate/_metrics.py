"""Per-trace metrics read from MLflow ``Trace`` objects, and the aggregations over them.

Every value comes from the trace itself (never from a timer of our own), so a gate over stored
traces computes the same numbers as a gate that just produced them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AGGREGATIONS",
    "METRICS",
    "SUMMARY_KEYS",
    "Metric",
    "TraceValues",
    "aggregate",
    "compute_metrics",
    "count_values",
    "extract_values",
    "is_percentile",
    "metric_info",
    "output_text",
    "parse_metric_key",
    "percentile",
    "root_output",
    "split_metric_key",
]

LLM_SPAN_TYPES = frozenset({"CHAT_MODEL", "LLM"})


@dataclass(frozen=True)
class Metric:
    """A per-trace metric: its unit for messages, and whether it is 0/1."""

    name: str
    unit: str
    binary: bool = False
    description: str = ""
    per_case: bool = False  # computed over the cases of a run, not read from each trace


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_ms", "ms", description="trace execution duration"),
        Metric("error", "", binary=True, description="1 when the trace state is ERROR (or the call timed out)"),
        Metric("input_tokens", "tokens", description="trace token usage, input"),
        Metric("output_tokens", "tokens", description="trace token usage, output"),
        Metric("total_tokens", "tokens", description="trace token usage, total"),
        Metric("cost_usd", "USD", description="the config's price table, else MLflow's own trace cost"),
        Metric("response_chars", "chars", description="length of the root span's output"),
        Metric("ttft_ms", "ms", description="time to the first streamed chunk (generator targets; else no value)"),
        Metric("llm_calls", "calls", description="CHAT_MODEL and LLM spans"),
        Metric("tool_calls", "calls", description="TOOL spans"),
        Metric("span_count", "spans", description="all spans"),
        Metric("cases_regressed", "cases", per_case=True, description="cases the candidate made worse"),
    )
}

AGGREGATIONS = ("mean", "median", "min", "max", "sum", "rate")
CASE_AGGREGATIONS = ("count", "share")
_PERCENTILE = re.compile(r"p\d+(\.\d+)?")

# Per-trace values of one trace: metric name -> value, or None where the trace has no such value.
TraceValues = Mapping[str, float | None]


def metric_info(metric: str) -> Metric:
    """The built-in metric, or a scorer's (unitless, aggregated like any number; booleans are 0/1)."""
    return METRICS.get(metric) or Metric(metric, "", description="scorer")


def split_metric_key(key: str) -> tuple[str, str]:
    """Split an already validated ``<metric>/<aggregation>`` key."""
    metric, _, aggregation = key.partition("/")
    return metric, aggregation


def parse_metric_key(key: str, scorers: Collection[str] = ()) -> tuple[str, str]:
    """Split ``latency_ms/p95`` into (metric, aggregation); raise ``ValueError`` naming what is valid.

    ``scorers`` are the names of the config's scorers, which are metrics too.
    """
    metric, sep, aggregation = key.partition("/")
    if not sep:
        raise ValueError(f"'{key}' is not '<metric>/<aggregation>' (e.g. latency_ms/p95)")
    if metric not in METRICS and metric not in scorers:
        known = ", ".join([*METRICS, *scorers])
        raise ValueError(f"unknown metric '{metric}'; known: {known}")
    if metric not in METRICS:
        if aggregation not in AGGREGATIONS and not _PERCENTILE.fullmatch(aggregation):
            raise ValueError(f"unknown aggregation '{aggregation}'; known: {', '.join(AGGREGATIONS)}, pNN")
        return metric, aggregation
    if METRICS[metric].per_case:
        if aggregation not in CASE_AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation '{aggregation}' for '{metric}'; known: {', '.join(CASE_AGGREGATIONS)}"
            )
        return metric, aggregation
    if aggregation not in AGGREGATIONS and not _PERCENTILE.fullmatch(aggregation):
        raise ValueError(
            f"unknown aggregation '{aggregation}'; known: {', '.join(AGGREGATIONS)}, pNN (e.g. p95, p99.9)"
        )
    if aggregation.startswith("p") and float(aggregation[1:]) > 100:
        raise ValueError(f"percentile '{aggregation}' is above 100")
    return metric, aggregation


def is_percentile(aggregation: str) -> bool:
    """``p95``, ``p99.9``: a percentile named by its level (``median`` is not one here)."""
    return _PERCENTILE.fullmatch(aggregation) is not None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks, as numpy's default."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate(values: Sequence[float], aggregation: str) -> float | None:
    """Aggregate the non-missing values of one metric; None when there are none."""
    if not values:
        return None
    if aggregation in ("mean", "rate"):
        return float(statistics.fmean(values))
    if aggregation == "median":
        return float(statistics.median(values))
    if aggregation == "min":
        return float(min(values))
    if aggregation == "max":
        return float(max(values))
    if aggregation == "sum":
        return float(math.fsum(values))
    return percentile(values, float(aggregation[1:]))


def _span_type(span: Any) -> str:
    return str(getattr(span, "span_type", None) or "UNKNOWN")


def _price(span: Any, pricing: Mapping[str, Any]) -> float | None:
    """Cost of one LLM span from the price table; None when its model has no price."""
    attributes = getattr(span, "attributes", None) or {}
    usage = attributes.get("mlflow.chat.tokenUsage")
    if not usage:
        return 0.0  # a call that failed before usage was reported costs nothing we can see
    model = attributes.get("mlflow.llm.model") or (getattr(span, "inputs", None) or {}).get("model")
    price = pricing.get(str(model)) if model else None
    if price is None:
        return None
    return (
        float(
            usage.get("input_tokens", 0) * price.input_per_mtok + usage.get("output_tokens", 0) * price.output_per_mtok
        )
        / 1e6
    )


def _cost(trace: Any, spans: Sequence[Any], pricing: Mapping[str, Any]) -> float | None:
    """The ``pricing:`` table when it prices every LLM span (the user's prices win), else MLflow's own cost
    (the full ``mlflow`` package prices known models; ``mlflow-skinny`` does not), else unknown."""
    root = next((s for s in spans if getattr(s, "parent_id", None) is None), None)
    attributes = getattr(root, "attributes", None) or {}
    if attributes.get("mlflow.chat.tokenUsage") and attributes.get("mlflow.llm.model"):
        priced = [root]  # an answer's own usage and model (an HTTP version's root span) covers the spans below it
    else:
        priced = [s for s in spans if _span_type(s) in LLM_SPAN_TYPES]
    total = 0.0
    for span in priced:
        price = _price(span, pricing)
        if price is None:
            break
        total += price
    else:
        return total
    cost = getattr(trace.info, "cost", None)
    if cost and cost.get("total_cost") is not None:
        return float(cost["total_cost"])
    return None


def root_output(spans: Sequence[Any]) -> Any:
    """The app's answer: the root span's outputs (None when there is no root or no output)."""
    root = next((s for s in spans if getattr(s, "parent_id", None) is None), None)
    return None if root is None else root.outputs


def output_text(outputs: Any) -> str | None:
    """The answer as text: strings as they are, anything else as JSON."""
    if outputs is None:
        return None
    return outputs if isinstance(outputs, str) else json.dumps(outputs, default=str, ensure_ascii=False)


def _response_chars(spans: Sequence[Any]) -> float | None:
    text = output_text(root_output(spans))
    return None if text is None else float(len(text))


CHUNK_EVENT_PREFIX = "mlflow.chunk.item."  # MLflow's span event per chunk a traced generator yields


def _ttft_ms(spans: Sequence[Any]) -> float | None:
    """Milliseconds from the root span's start to its first chunk event (a streamed answer), else None."""
    root = next((s for s in spans if getattr(s, "parent_id", None) is None), None)
    start = getattr(root, "start_time_ns", None)
    if root is None or start is None:
        return None
    times = [e.timestamp for e in (getattr(root, "events", None) or []) if e.name.startswith(CHUNK_EVENT_PREFIX)]
    return (min(times) - start) / 1e6 if times else None


def extract_values(trace: Any, pricing: Mapping[str, Any] | None = None) -> dict[str, float | None]:
    """Read every built-in metric from one MLflow ``Trace``."""
    info = trace.info
    spans = list(getattr(trace.data, "spans", None) or [])
    usage = info.token_usage or {}
    state = getattr(info.state, "value", info.state)
    types = [_span_type(s) for s in spans]
    duration = info.execution_duration
    values = {
        "latency_ms": float(duration) if duration is not None else None,
        "error": 1.0 if state == "ERROR" else 0.0,
        "input_tokens": _opt(usage.get("input_tokens")),
        "output_tokens": _opt(usage.get("output_tokens")),
        "total_tokens": _opt(usage.get("total_tokens")),
        "cost_usd": _cost(trace, spans, pricing or {}),
        "response_chars": _response_chars(spans),
        "ttft_ms": _ttft_ms(spans),
        "llm_calls": float(sum(t in LLM_SPAN_TYPES for t in types)),
        "tool_calls": float(sum(t == "TOOL" for t in types)),
        "span_count": float(len(spans)),
    }
    return without_answer_metrics(values) if state == "ERROR" else values


# What a failed call has no true value of: its latency is how fast it failed, its tokens and length those of no
# answer. Counting them would make a version that fails fast look faster and cheaper; a failed call counts in
# error/rate (and in cost_usd, which it may have spent) only.
ANSWER_METRICS = (
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "response_chars",
    "llm_calls",
    "tool_calls",
    "span_count",
)


def without_answer_metrics(values: dict[str, float | None]) -> dict[str, float | None]:
    """A failed call's values: error 1, and none of the metrics of an answer (``ANSWER_METRICS``)."""
    return {**values, **dict.fromkeys(ANSWER_METRICS), "error": 1.0}


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def compute_metrics(rows: Sequence[TraceValues], keys: Sequence[str]) -> dict[str, float | None]:
    """Aggregate per-trace rows into ``{metric_key: value}`` for the given keys."""
    columns: dict[str, list[float]] = {}
    for row in rows:
        for name, value in row.items():
            if value is not None and not math.isnan(value):
                columns.setdefault(name, []).append(value)
    out: dict[str, float | None] = {}
    for key in keys:
        metric, aggregation = split_metric_key(key)
        out[key] = aggregate(columns.get(metric, []), aggregation)
    return out


def count_values(rows: Sequence[TraceValues], metric: str) -> int:
    """How many rows carry a value for ``metric``."""
    return sum(1 for row in rows if row.get(metric) is not None)


SUMMARY_KEYS: tuple[str, ...] = (
    "latency_ms/mean",
    "latency_ms/p50",
    "latency_ms/p95",
    "error/rate",
    "input_tokens/mean",
    "output_tokens/mean",
    "total_tokens/mean",
    "total_tokens/sum",
    "cost_usd/sum",
    "response_chars/mean",
    "llm_calls/mean",
    "span_count/mean",
)
