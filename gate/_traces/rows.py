"""What the gate knows of one call and one trace: the planned call, its result, and the trace reduced to a row.

``match_traces`` pairs every finished call with exactly one trace; anything else is a discrepancy the caller must
not ignore (the gate never passes on missing data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gate._metrics import extract_values, output_text, root_output, without_answer_metrics
from gate._store.store import TAG_PREFIX

if TYPE_CHECKING:  # annotations only: a worker process imports this module and needs no config models
    from gate._config.dataset import Case
    from gate._config.schema import Variant

__all__ = [
    "CONFIRM_TAG",
    "OUTPUT_CHARS",
    "Call",
    "CallResult",
    "TraceRow",
    "match_traces",
    "spent_usd",
    "unjoined_server_spans",
]

OUTPUT_CHARS = 2000
# On the traces of confirmation runs (a per-case check's flagged cases, run again): a stored session read back later
# leaves them out of its rows, as the run that made them did (gate/_decide/per_case.py).
CONFIRM_TAG = f"{TAG_PREFIX}confirm"


@dataclass(frozen=True)
class Call:
    """One call of one version on one case."""

    variant: Variant
    case: Case
    repeat: int


@dataclass(frozen=True)
class CallResult:
    """What happened to a call. ``error`` is None when the target returned."""

    call: Call
    error: str | None
    timed_out: bool = False
    attempts: int = 1  # 1 + retries; the last attempt's trace is the data point


@dataclass(frozen=True, slots=True)  # slots: a row per trace is kept to the end (100,000 in a large compare)
class TraceRow:
    """One trace, reduced to what the gate needs: where it came from and its metric values."""

    trace_id: str | None
    variant: str
    case_id: str
    repeat: int
    values: Mapping[str, float | None]
    output: str | None = None  # the answer, cut to OUTPUT_CHARS, for reports


def _key(variant: str, case_id: str, repeat: int) -> str:
    return f"{variant}/{case_id}#{repeat}"


def match_traces(
    traces: Sequence[Any], results: Sequence[CallResult], pricing: Mapping[str, Any]
) -> tuple[list[TraceRow], list[str]]:
    """Pair each finished call with exactly one trace; return the rows and every discrepancy found.

    A call that returned or raised must have left exactly one trace. A timed-out call may not have,
    so it becomes an error row with no trace. Anything else is a problem the caller must not ignore.
    """
    by_key: dict[str, list[Any]] = {}
    final_attempt = {_key(r.call.variant, r.call.case.id, r.call.repeat): r.attempts - 1 for r in results}
    for trace in traces:
        tags = trace.info.tags
        key = _key(
            tags.get(f"{TAG_PREFIX}variant", "?"),
            tags.get(f"{TAG_PREFIX}case_id", "?"),
            int(tags.get(f"{TAG_PREFIX}repeat", -1)),
        )
        attempt = int(tags.get(f"{TAG_PREFIX}attempt", 0))
        if attempt < final_attempt.get(key, 0):
            continue  # an attempt that failed transiently and was retried: the last attempt is the data point
        by_key.setdefault(key, []).append(trace)
    rows: list[TraceRow] = []
    missing: list[str] = []
    duplicated: list[str] = []
    for result in results:
        call: Call = result.call
        key = _key(call.variant, call.case.id, call.repeat)
        found = by_key.pop(key, [])
        if result.timed_out:
            rows.append(TraceRow(None, call.variant, call.case.id, call.repeat, {"error": 1.0}))
            continue
        if not found:
            missing.append(key)
            continue
        if len(found) > 1:
            duplicated.append(key)
            continue
        trace = found[0]
        text = output_text(root_output(getattr(trace.data, "spans", None) or []))
        values = extract_values(trace, pricing)
        if result.error is not None:  # SystemExit/KeyboardInterrupt leave an OK trace: the call still failed
            values = without_answer_metrics(values)
        rows.append(
            TraceRow(
                trace.info.trace_id,
                call.variant,
                call.case.id,
                call.repeat,
                values,
                None if text is None else text[:OUTPUT_CHARS],
            )
        )
    problems = []
    finished = sum(not r.timed_out for r in results)
    if missing:
        problems.append(
            f"expected {finished} traces, {len(missing)} missing (e.g. {', '.join(missing[:3])}); a target must be "
            "decorated with @mlflow.trace, must not change MLflow's tracking URI or experiment or turn tracing off "
            "while it runs, and traces must not be dropped by the exporter"
        )
    if duplicated:
        problems.append(
            f"{len(duplicated)} calls left more than one trace (e.g. {', '.join(duplicated[:3])}); decorate the "
            "target with @mlflow.trace so each call is one trace"
        )
    strays = list(by_key)  # every matched key was popped above
    if strays:
        problems.append(f"{len(strays)} traces in this session match no call (e.g. {', '.join(strays[:3])})")
    return rows, problems


def spent_usd(rows: Sequence[TraceRow]) -> float | None:
    """What the app's traced calls cost, or None when some trace's cost is unknown."""
    costs = [r.values.get("cost_usd") for r in rows if r.trace_id]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


def unjoined_server_spans(rows: Sequence[TraceRow], modes: Mapping[str, str], labels: Mapping[str, str]) -> list[str]:
    """Problems (exit 3) for HTTP versions whose server's spans did not join every trace.

    ``modes`` maps a version to its ``http.server_spans``: ``auto`` (if any answered trace has the server's spans,
    every one must), ``required`` (every one must), ``off``. The gate's own span is the root; anything more came
    from the server. A trace without them would count no LLM calls, tools or spans: miscounted, not measured.
    """
    problems = []
    for variant, mode in modes.items():
        answered = [r for r in rows if r.variant == variant and r.trace_id and not r.values.get("error")]
        bare = sum(1 for r in answered if (r.values.get("span_count") or 0) <= 1)
        if mode == "off" or not bare or (mode == "auto" and bare == len(answered)):
            continue
        problems.append(
            f"{variant} ({labels.get(variant, variant)}): {bare} of {len(answered)} traces have no spans from the "
            "server (the server's spans did not join the gate's traces); a server traced with MLflow must log to "
            "the gate's tracking store with MLFLOW_USE_BATCH_SPAN_PROCESSOR=false (docs/versions.md), or set "
            "http.server_spans: off"
        )
    return problems
