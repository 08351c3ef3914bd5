"""Stored traces as data: select them with MLflow's filter, page through them, and pair them into rows.

Used by ``gate compare`` (selectors, shard gathering) and ``gate run --baseline-from``. A selection is read
page by page (``PAGE`` traces at a time, newest first, up to a fixed "until" instant so that traces arriving
meanwhile cannot shift the pages); each page is reduced to rows and scored before the next is read, so memory
holds rows, not traces.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gate._config.dataset import Case, case_id_for
from gate._config.schema import TraceSelector, parse_instant
from gate._errors import RunError
from gate._metrics import extract_values, output_text, root_output
from gate._secrets import redact_uri
from gate._store.store import TAG_PREFIX
from gate._traces.rows import OUTPUT_CHARS, TraceRow
from gate._traces.span_rows import span_reader, with_dict_spans

__all__ = ["PAGE", "Collected", "Selection", "collect", "iter_pages", "pair_rows", "selection_for"]

PAGE = 500  # traces per search request: MLflow's store answers a 500-trace page with spans in ~0.6 s here
PAGE_ENV = "GATE_SEARCH_PAGE"  # a smaller page for a slow tracking server (and for the paging tests)
PairBy = Literal["auto", "case_id", "inputs", "none"]


@dataclass(frozen=True)
class Selection:
    """One version's traces: where to look and the filter MLflow applies."""

    variant: str
    experiment_id: str
    filter_string: str
    max_traces: int


def _quoted(value: str) -> str:
    return "'" + value + "'"  # the selector model rejects single quotes in values


def selection_for(selector: TraceSelector, variant: str, experiment_id: str, now_s: float) -> Selection:
    """Translate a selector into MLflow's trace filter (every given field must match)."""
    terms = []
    if selector.session is not None:
        terms.append(f"tags.`{TAG_PREFIX}session` = {_quoted(selector.session)}")
        terms.append(f"tags.`{TAG_PREFIX}variant` = {_quoted(selector.variant or variant)}")
    if selector.run_id is not None:
        terms.append(f"metadata.`mlflow.sourceRun` = {_quoted(selector.run_id)}")
    if selector.model_id is not None:
        terms.append(f"metadata.`mlflow.modelId` = {_quoted(selector.model_id)}")
    if selector.trace_name is not None:
        terms.append(f"trace.name = {_quoted(selector.trace_name)}")
    terms += [f"tags.`{key}` = {_quoted(value)}" for key, value in sorted(selector.tags.items())]
    terms += [f"metadata.`{key}` = {_quoted(value)}" for key, value in sorted(selector.metadata.items())]
    if selector.since is not None:
        terms.append(f"timestamp_ms >= {parse_instant(selector.since, now_s)}")
    # Always an upper end: traces that arrive while the pages are read must not shift them.
    until = parse_instant(selector.until, now_s) if selector.until is not None else int(now_s * 1000)
    terms.append(f"timestamp_ms <= {until}")
    return Selection(variant, experiment_id, " AND ".join(terms), selector.max_traces)


def iter_pages(
    client: Any, selection: Selection, tracking_uri: str, include_spans: bool = True
) -> Iterator[tuple[list[Any], str | None]]:
    """The selected traces, newest first, a page at a time (with the next page's token), at most
    ``selection.max_traces`` in all."""
    token: str | None = None
    left = selection.max_traces
    page_size = max(1, int(os.environ.get(PAGE_ENV, PAGE)))
    while left > 0:
        try:
            page = client.search_traces(
                locations=[selection.experiment_id],
                filter_string=selection.filter_string,
                max_results=min(page_size, left),
                order_by=["timestamp_ms DESC"],
                page_token=token,
                include_spans=include_spans,
            )
        except Exception as exc:  # noqa: BLE001 - any store failure is a run error, reported in one line
            raise RunError(
                f"cannot search the {selection.variant}'s traces at {redact_uri(tracking_uri)} "
                f"(filter: {selection.filter_string}): {exc}"
            ) from None
        traces = list(page)
        if traces:
            yield traces, page.token
        left -= len(traces)
        token = page.token
        if not token or not traces:
            return


@dataclass
class _Seen:
    """One trace, reduced, before the pairing is known."""

    row: TraceRow
    case_tag: str | None
    repeat_tag: int | None
    attempt: int
    inputs_id: str
    timestamp_ms: int
    run_id: str | None = None  # the MLflow run the trace links to (mlflow.sourceRun)


@dataclass
class Collected:
    """What the pages of one or more selections gave, before pairing."""

    seen: list[_Seen] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by case tag and by inputs id
    found: dict[str, int] = field(default_factory=dict)  # traces per variant
    more_than_max: dict[str, bool] = field(default_factory=dict)
    runs: dict[str, set[str]] = field(default_factory=dict)  # the MLflow runs the traces point to, per variant


def _inputs(trace: Any) -> dict[str, Any]:
    request = getattr(trace.data, "request", None)
    try:
        value = json.loads(request) if isinstance(request, str) else request
    except ValueError:
        value = request
    return value if isinstance(value, dict) else {"request": value}


def collect(
    client: Any,
    selection: Selection,
    tracking_uri: str,
    pricing: Mapping[str, Any],
    into: Collected,
    score_page: Callable[[list[TraceRow], dict[str, Any], dict[str, Case]], list[TraceRow]],
    need_traces: bool = True,
) -> None:
    """Read a selection page by page into ``into``; ``score_page`` adds scores while each page's traces exist.

    ``need_traces=False`` (no scorer looks at MLflow's ``Trace`` objects): spans are read as plain dicts,
    one query per page, where the store allows it (gate/_traces/span_rows.py).
    """
    variant = selection.variant
    count, last_token = 0, None
    reader = None if need_traces else span_reader(client)
    for traces, token in iter_pages(client, selection, tracking_uri, include_spans=reader is None):
        if reader is not None:
            traces = with_dict_spans(client, traces, reader)
        last_token = token
        rows, cases, page_seen = [], {}, []
        for trace in traces:
            tags, metadata = trace.info.tags, trace.info.trace_metadata
            inputs = _inputs(trace)
            inputs_id = case_id_for(inputs)
            case_tag = tags.get(f"{TAG_PREFIX}case_id")
            text = output_text(root_output(getattr(trace.data, "spans", None) or []))
            row = TraceRow(
                trace.info.trace_id,
                variant,
                case_tag or inputs_id,
                0,
                extract_values(trace, pricing),
                None if text is None else text[:OUTPUT_CHARS],
            )
            repeat = tags.get(f"{TAG_PREFIX}repeat")
            page_seen.append(
                _Seen(
                    row,
                    case_tag,
                    int(repeat) if repeat is not None and repeat.isdigit() else None,
                    int(tags.get(f"{TAG_PREFIX}attempt", "0") or 0),
                    inputs_id,
                    int(trace.info.request_time or 0),
                    metadata.get("mlflow.sourceRun"),
                )
            )
            into.inputs.setdefault(row.case_id, inputs)
            into.inputs.setdefault(inputs_id, inputs)
            cases[row.case_id] = Case(row.case_id, inputs)
            rows.append(row)
            if run_id := metadata.get("mlflow.sourceRun"):
                into.runs.setdefault(variant, set()).add(run_id)
        scored = score_page(rows, {t.info.trace_id: t for t in traces}, cases)
        for seen, row in zip(page_seen, scored, strict=True):
            seen.row = row
        into.seen += page_seen
        count += len(traces)
    into.found[variant] = into.found.get(variant, 0) + count
    into.more_than_max[variant] = count >= selection.max_traces and _has_more(client, selection, last_token)


def _has_more(client: Any, selection: Selection, token: str | None) -> bool:
    """Whether the selection holds more traces than were read (one trace, without spans)."""
    if not token:
        return False
    page = client.search_traces(
        locations=[selection.experiment_id],
        filter_string=selection.filter_string,
        max_results=1,
        order_by=["timestamp_ms DESC"],
        page_token=token,
        include_spans=False,
    )
    return bool(list(page))


@dataclass(frozen=True)
class Paired:
    """Rows ready for the statistics, and how they were paired."""

    rows: list[TraceRow]
    pair_by: Literal["case_id", "inputs", "none"]
    why: str


def _choose(seen: Sequence[_Seen], pair_by: PairBy) -> tuple[Literal["case_id", "inputs", "none"], str]:
    if pair_by != "auto":
        return pair_by, "pair_by in the config"
    if seen and all(s.case_tag for s in seen):
        return "case_id", "every trace carries the gate.case_id tag"
    ids = {v: {s.inputs_id for s in seen if s.row.variant == v} for v in ("baseline", "candidate")}
    common = ids["baseline"] & ids["candidate"]
    shared = [s for s in seen if s.inputs_id in common]
    if seen and len(shared) >= len(seen) / 2:
        return "inputs", f"{len(shared)} of {len(seen)} traces have inputs the other version also ran"
    return "none", (
        f"only {len(shared)} of {len(seen)} traces have inputs the other version also ran, too few to pair by "
        "(set pair_by: inputs to pair those anyway)"
    )


def pair_rows(seen: Sequence[_Seen], pair_by: PairBy) -> Paired:
    """Give every row its case and repeat by the pairing chosen; the last attempt of a retried call counts."""
    mode, why = _choose(seen, pair_by)
    if mode == "case_id":
        untagged = sum(1 for s in seen if not s.case_tag)
        if untagged:
            raise RunError(
                f"pair_by: case_id, but {untagged} of {len(seen)} selected traces have no gate.case_id tag; "
                "use pair_by: inputs (same inputs are the same case) or none"
            )
        latest: dict[tuple[str, str, int], _Seen] = {}
        ordinal: dict[tuple[str, str], int] = {}
        for s in sorted(seen, key=lambda s: s.timestamp_ms):
            repeat = s.repeat_tag
            if repeat is None:  # tagged by hand, not by a gate run: number them in time order
                slot = (s.row.variant, s.case_tag or "")
                repeat = ordinal[slot] = ordinal.get(slot, -1) + 1
            key = (s.row.variant, s.case_tag or "", repeat)
            if key not in latest or latest[key].attempt <= s.attempt:
                latest[key] = replace(s, repeat_tag=repeat)
        rows = [replace(s.row, case_id=s.case_tag or "", repeat=s.repeat_tag or 0) for s in latest.values()]
        return Paired(rows, mode, why)
    if mode == "inputs":
        counter: dict[tuple[str, str], int] = {}
        rows = []
        for s in sorted(seen, key=lambda s: s.timestamp_ms):
            n = counter[(s.row.variant, s.inputs_id)] = counter.get((s.row.variant, s.inputs_id), -1) + 1
            rows.append(replace(s.row, case_id=s.inputs_id, repeat=n))
        return Paired(rows, mode, why)
    return Paired([replace(s.row, case_id=s.row.trace_id or "", repeat=0) for s in seen], mode, why)


def now() -> float:
    """The instant a selection's relative window ends (a function, so tests can see what was used)."""
    return time.time()
