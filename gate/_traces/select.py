"""Stored traces as data: select them with MLflow's filter, page through them, and pair them into rows.

Used by ``gate compare`` (selectors, shard gathering) and ``gate run --baseline-from``. A selection is read
page by page (``PAGE`` traces at a time, newest first, up to a fixed "until" instant so that traces arriving
meanwhile cannot shift the pages); each page is reduced to rows and scored before the next is read, so memory
holds rows, not traces. When no scorer needs MLflow's ``Trace`` objects, the pages come from a SQLite store's tables
through Python's sqlite3 (gate/_traces/sqlite_direct.py: MLflow not imported) or from the SQL store's tables through
MLflow's SQLAlchemy store (gate/_traces/span_rows.py ``sql_trace_reader``), each where it is verified (two queries a
page, paged by key), else from MLflow's ``search_traces`` (paged by offset) with the spans read as dicts where the
store allows it.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Literal

from gate._config.dataset import Case, case_id_for
from gate._config.schema import TraceSelector, parse_instant
from gate._errors import RunError
from gate._metrics import extract_values, output_text, root_output
from gate._secrets import redact_uri
from gate._store.store import TAG_PREFIX
from gate._traces.rows import CONFIRM_TAG, OUTPUT_CHARS, TraceRow
from gate._traces.span_rows import SqlPages, SqlTraceReader, span_reader, sql_trace_reader, with_dict_spans
from gate._traces.sqlite_direct import DirectPages, DirectReader, Term, direct_reader

__all__ = [
    "PAGE",
    "SQL_PAGE",
    "Collected",
    "Selection",
    "collect",
    "filter_string",
    "iter_pages",
    "page_size",
    "pair_rows",
    "recorded_apart",
    "selection_for",
]

PAGE = 500  # traces per search request (MLflow's search_traces: also one request to a tracking server)
# Traces per page of the SQL reader: its memory while a page is read is ~15 KB per trace (span JSON, parsed),
# freed when the page ends; 500 read no faster (10,000 traces: 2.2-2.5 s CPU either way) and peaked 4 MB higher
# (a 10,000-trace `gate compare`: 301 against 297 MB), 1,000 and 2,000 +8 and +22 MB (bench/analysis.py).
SQL_PAGE = 250
PAGE_ENV = "GATE_SEARCH_PAGE"  # a smaller page for a slow tracking server (and for the paging tests); sets both
PairBy = Literal["auto", "case_id", "inputs", "none"]
Reader = Literal["sqlite", "sql", "public"]  # the direct SQLite reader, the SQL reader, MLflow's search_traces


@dataclass(frozen=True)
class Selection:
    """One version's traces: where to look and the filter MLflow applies."""

    variant: str
    experiment_id: str
    filter_string: str
    max_traces: int
    # The same filter as terms, for the direct SQLite reader (gate/_traces/sqlite_direct.py); None: only the string.
    terms: tuple[Term, ...] | None = None


def _quoted(value: str) -> str:
    return "'" + value + "'"  # the selector model rejects single quotes in values


def selection_for(selector: TraceSelector, variant: str, experiment_id: str, now_s: float) -> Selection:
    """Translate a selector into MLflow's trace filter (every given field must match)."""
    terms: list[Term] = []
    if selector.session is not None:
        terms.append(("tag", f"{TAG_PREFIX}session", selector.session))
        terms.append(("tag", f"{TAG_PREFIX}variant", selector.variant or variant))
    if selector.run_id is not None:
        terms.append(("metadata", "mlflow.sourceRun", selector.run_id))
    if selector.model_id is not None:
        terms.append(("metadata", "mlflow.modelId", selector.model_id))
    if selector.trace_name is not None:
        terms.append(("name", "", selector.trace_name))
    terms += [("tag", key, value) for key, value in sorted(selector.tags.items())]
    terms += [("metadata", key, value) for key, value in sorted(selector.metadata.items())]
    if selector.since is not None:
        terms.append(("since", "", parse_instant(selector.since, now_s)))
    # Always an upper end: traces that arrive while the pages are read must not shift them.
    until = parse_instant(selector.until, now_s) if selector.until is not None else int(now_s * 1000)
    terms.append(("until", "", until))
    return Selection(variant, experiment_id, filter_string(terms), selector.max_traces, tuple(terms))


def filter_string(terms: Sequence[Term]) -> str:
    """MLflow's trace filter for these terms (every one must match)."""
    out = []
    for kind, key, value in terms:
        if kind == "name":
            out.append(f"trace.name = {_quoted(value)}")
        elif kind in ("tag", "metadata"):
            out.append(f"{'tags' if kind == 'tag' else 'metadata'}.`{key}` = {_quoted(value)}")
        else:
            out.append(f"timestamp_ms {'>=' if kind == 'since' else '<='} {value}")
    return " AND ".join(out)


def iter_pages(
    client: Any, selection: Selection, tracking_uri: str, include_spans: bool = True
) -> Iterator[tuple[list[Any], str | None]]:
    """The selected traces, newest first, a page at a time (with the next page's token), at most
    ``selection.max_traces`` in all."""
    token: str | None = None
    left = selection.max_traces
    size = page_size()
    while left > 0:
        try:
            page = client.search_traces(
                locations=[selection.experiment_id],
                filter_string=selection.filter_string,
                max_results=min(size, left),
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


@dataclass(slots=True)
class _Seen:
    """One trace, reduced, before the pairing is known."""

    row: TraceRow
    case_tag: str | None
    repeat_tag: int | None
    attempt: int
    inputs_id: str
    timestamp_ms: int
    run_id: str | None = None  # the MLflow run the trace links to (mlflow.sourceRun)
    session: str = ""  # the gate session that recorded it (gate.session), "" for traces the gate did not record
    confirm: bool = False  # a confirmation run's trace (CONFIRM_TAG): not one of the session's balanced runs


@dataclass
class Collected:
    """What the pages of one or more selections gave, before pairing."""

    seen: list[_Seen] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # by case tag and by inputs id
    found: dict[str, int] = field(default_factory=dict)  # traces per variant
    more_than_max: dict[str, bool] = field(default_factory=dict)
    runs: dict[str, set[str]] = field(default_factory=dict)  # the MLflow runs the traces point to, per variant
    readers: dict[str, Reader] = field(default_factory=dict)  # how each variant's traces were read


def _inputs(trace: Any) -> dict[str, Any]:
    request = getattr(trace.data, "request", None)
    try:
        value = json.loads(request) if isinstance(request, str) else request
    except ValueError:
        value = request
    return value if isinstance(value, dict) else {"request": value}


def _request_text(trace: Any) -> str | None:
    """The trace's inputs as stored (JSON text), when the trace has them as text: the key of ``_inputs_of``."""
    text = getattr(trace.data, "request_json", None)  # spans read as dicts
    if text is None:
        text = getattr(trace.data, "request", None)  # MLflow's TraceData: the same text
    return text if isinstance(text, str) else None


def _inputs_of(trace: Any, known: dict[str, tuple[dict[str, Any], str]] | None) -> tuple[dict[str, Any], str]:
    """A trace's inputs and their case id; with ``known``, decoded and hashed once per distinct inputs text (the
    traces then share one inputs dict: only where no scorer, which could change it, gets the cases)."""
    text = _request_text(trace) if known is not None else None
    if known is not None and text is not None and (hit := known.get(text)) is not None:
        return hit
    inputs = _inputs(trace)
    found = inputs, case_id_for(inputs)
    if known is not None and text is not None:
        known[text] = found
    return found


@contextmanager
def _young_collections() -> Iterator[Callable[[], object]]:
    """Only young-generation garbage collections while a selection is read (``gc.collect(1)`` after each page).

    The rows kept from every page make Python's automatic full collections scan a heap that grows with the
    selection: 1.9 s of a 10 s `gate compare` of 10,000 traces, 14.6 s of 75 s at 100,000 (bench/analysis.py's
    stores; gc.callbacks). A page's own garbage is young when its page ends, so collecting the young generations
    then frees it as before; the rows and traces are not cyclic (reference counts free them).
    """
    if not gc.isenabled():  # the caller's choice: leave it
        yield lambda: None
        return
    gc.disable()
    try:
        yield lambda: gc.collect(1)
    finally:
        gc.enable()


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

    ``need_traces=False`` (no scorer looks at MLflow's ``Trace`` objects): the direct SQLite reader (no MLflow;
    gate/_traces/sqlite_direct.py) or the SQL reader where it is verified, else MLflow's search with spans read as
    plain dicts where the store allows it (gate/_traces/span_rows.py); ``into.readers`` says which. ``client`` may be
    None where the caller knows the direct reader applies (``direct_reader``).
    """
    variant = selection.variant
    count = 0
    pages = _pages(client, selection, tracking_uri, need_traces)
    into.readers[variant] = pages.name
    known: dict[str, tuple[dict[str, Any], str]] | None = None if need_traces else {}  # inputs text -> inputs, id
    same: dict[str, str] = {}  # one str object per distinct case tag and run id: rows are kept to the end
    with _young_collections() as page_done:
        for traces in pages:
            _collect_page(traces, variant, pricing, into, score_page, known, same)
            count += len(traces)
            page_done()
    into.found[variant] = into.found.get(variant, 0) + count
    into.more_than_max[variant] = count >= selection.max_traces and pages.more()


def _collect_page(
    traces: list[Any],
    variant: str,
    pricing: Mapping[str, Any],
    into: Collected,
    score_page: Callable[[list[TraceRow], dict[str, Any], dict[str, Case]], list[TraceRow]],
    known: dict[str, tuple[dict[str, Any], str]] | None,
    same: dict[str, str],
) -> None:
    """One page's traces reduced to rows and scored, into ``into``."""
    rows, cases, page_seen = [], {}, []
    for trace in traces:
        tags, metadata = trace.info.tags, trace.info.trace_metadata
        inputs, inputs_id = _inputs_of(trace, known)
        case_tag = tags.get(f"{TAG_PREFIX}case_id")
        case_tag = None if case_tag is None else same.setdefault(case_tag, case_tag)
        run_id = metadata.get("mlflow.sourceRun")
        run_id = None if run_id is None else same.setdefault(run_id, run_id)
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
                run_id,
                same.setdefault(session, session) if (session := tags.get(f"{TAG_PREFIX}session")) else "",
                tags.get(CONFIRM_TAG) == "true",
            )
        )
        into.inputs.setdefault(row.case_id, inputs)
        into.inputs.setdefault(inputs_id, inputs)
        cases[row.case_id] = Case(row.case_id, inputs)
        rows.append(row)
        if run_id:
            into.runs.setdefault(variant, set()).add(run_id)
    scored = score_page(rows, {t.info.trace_id: t for t in traces}, cases)
    for seen, row in zip(page_seen, scored, strict=True):
        seen.row = row
    into.seen += page_seen


def page_size(default: int = PAGE) -> int:
    """Traces per page: ``GATE_SEARCH_PAGE``, else ``default``."""
    return max(1, int(os.environ.get(PAGE_ENV, default)))


class _PublicPages:
    """A selection's pages through MLflow's ``search_traces`` (spans as dicts when a span reader is given)."""

    name: Reader = "public"

    def __init__(self, client: Any, selection: Selection, tracking_uri: str, need_traces: bool) -> None:
        self.client, self.selection, self.tracking_uri = client, selection, tracking_uri
        self.reader = None if need_traces else span_reader(client)
        self.token: str | None = None

    def __iter__(self) -> Iterator[list[Any]]:
        include_spans = self.reader is None
        for traces, token in iter_pages(self.client, self.selection, self.tracking_uri, include_spans=include_spans):
            self.token = token
            yield traces if self.reader is None else with_dict_spans(self.client, traces, self.reader)

    def more(self) -> bool:
        return _has_more(self.client, self.selection, self.token)


class _SqlPages:
    """A selection's pages through the SQL reader; a store error is a run error, as on the public path."""

    name: Reader = "sql"

    def __init__(self, reader: SqlTraceReader, selection: Selection, tracking_uri: str) -> None:
        self.selection, self.tracking_uri = selection, tracking_uri
        self.pages: SqlPages | DirectPages = reader.pages(
            selection.experiment_id, selection.filter_string, selection.max_traces, page_size(SQL_PAGE)
        )

    def __iter__(self) -> Iterator[list[Any]]:
        pages = iter(self.pages)
        while True:
            try:
                traces = next(pages)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - any store failure is a run error, reported in one line
                raise RunError(
                    f"cannot read the {self.selection.variant}'s traces at {redact_uri(self.tracking_uri)} "
                    f"(filter: {self.selection.filter_string}): {exc} (GATE_TRACE_READER=public reads them through "
                    "MLflow's search_traces instead)"
                ) from None
            yield traces

    def more(self) -> bool:
        return self.pages.more


class _DirectPages(_SqlPages):
    """A selection's pages through the direct SQLite reader (MLflow not imported)."""

    name: Reader = "sqlite"

    def __init__(self, reader: DirectReader, selection: Selection, tracking_uri: str) -> None:
        assert selection.terms is not None
        self.selection, self.tracking_uri = selection, tracking_uri
        self.pages = reader.pages(selection.experiment_id, selection.terms, selection.max_traces, page_size(SQL_PAGE))


def _pages(
    client: Any, selection: Selection, tracking_uri: str, need_traces: bool
) -> _PublicPages | _SqlPages | _DirectPages:
    """How to read a selection, when no scorer needs MLflow's traces: the direct SQLite reader, else the SQL reader
    where each is verified; else MLflow's search. ``client`` None: only the direct reader (the caller checked)."""
    direct = None if need_traces else direct_reader(tracking_uri, [selection.terms])
    if direct is not None:
        if client is not None:
            direct.get_trace = client.get_trace
        return _DirectPages(direct, selection, tracking_uri)
    if client is None:
        raise RunError(f"cannot read the {selection.variant}'s traces at {redact_uri(tracking_uri)} without MLflow")
    reader = None if need_traces else sql_trace_reader(client)
    if reader is not None:
        return _SqlPages(reader, selection, tracking_uri)
    return _PublicPages(client, selection, tracking_uri, need_traces)


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


def recorded_apart(seen: Sequence[_Seen]) -> str | None:
    """Why the versions' traces were not recorded together, or None when they were.

    Together: the two versions' time spans overlap by at least half of the shorter one (an interleaved session, or
    two deployments serving side by side); a version recorded in an instant lies inside the other's span.
    """
    spans = {}
    for variant in ("baseline", "candidate"):
        times = [s.timestamp_ms for s in seen if s.row.variant == variant]
        if not times:
            return None  # nothing to compare: the checks say so themselves
        spans[variant] = (min(times), max(times))
    (b0, b1), (c0, c1) = spans["baseline"], spans["candidate"]
    overlap = min(b1, c1) - max(b0, c0)
    shorter = min(b1 - b0, c1 - c0)
    if overlap >= 0 and overlap >= shorter / 2:
        return None
    first, second = ("baseline", "candidate") if b0 <= c0 else ("candidate", "baseline")
    return (
        f"the {first}'s traces were recorded {_when(spans[first])}, the {second}'s {_when(spans[second])}: "
        "not together, so a change in the provider's speed would read as the candidate's; select traces of one "
        "interleaved session (session: S) or of versions serving side by side"
    )


def _when(span: tuple[int, int]) -> str:
    start, end = (datetime.fromtimestamp(t / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") for t in span)
    return f"at {start}" if start == end else f"from {start} to {end}"


def pair_rows(seen: Sequence[_Seen], pair_by: PairBy) -> Paired:
    """Give every row its case and repeat by the pairing chosen; the last attempt of a retried call counts, and
    confirmation runs (a per-case check's second stage in the run that made them) do not."""
    with _young_collections():  # a new row per row: no full collections over the selection's rows meanwhile
        return _pair_rows([s for s in seen if not s.confirm], pair_by)


def _pair_rows(seen: Sequence[_Seen], pair_by: PairBy) -> Paired:
    mode, why = _choose(seen, pair_by)
    if mode == "case_id":
        untagged = sum(1 for s in seen if not s.case_tag)
        if untagged:
            raise RunError(
                f"pair_by: case_id, but {untagged} of {len(seen)} selected traces have no gate.case_id tag; "
                "use pair_by: inputs (same inputs are the same case) or none"
            )
        # A retried call leaves a trace per attempt: within one session the last attempt of a (case, repeat) counts.
        # Traces of different sessions are different measurements and all count, numbered as further repeats.
        latest: dict[tuple[str, str, str, int], _Seen] = {}
        ordinal: dict[tuple[str, str, str], int] = {}
        for s in sorted(seen, key=lambda s: s.timestamp_ms):
            repeat = s.repeat_tag
            if repeat is None:  # tagged by hand, not by a gate run: number them in time order
                slot = (s.row.variant, s.session, s.case_tag or "")
                repeat = ordinal[slot] = ordinal.get(slot, -1) + 1
            key = (s.row.variant, s.session, s.case_tag or "", repeat)
            if key not in latest or latest[key].attempt <= s.attempt:
                latest[key] = s
        rows = [_as_case(s.row, key[2], repeat) for key, s, repeat in _numbered(latest)]
        return Paired(rows, mode, why)
    if mode == "inputs":
        counter: dict[tuple[str, str], int] = {}
        rows = []
        for s in sorted(seen, key=lambda s: s.timestamp_ms):
            n = counter[(s.row.variant, s.inputs_id)] = counter.get((s.row.variant, s.inputs_id), -1) + 1
            rows.append(_as_case(s.row, s.inputs_id, n))
        return Paired(rows, mode, why)
    return Paired([_as_case(s.row, s.row.trace_id or "", 0) for s in seen], mode, why)


def _numbered(
    latest: Mapping[tuple[str, str, str, int], _Seen],
) -> Iterator[tuple[tuple[str, str, str, int], _Seen, int]]:
    """Each kept trace with its repeat: its own where its (version, case) has traces of one session only, else
    0, 1, ... in the order of the sessions' first traces, then of their repeats."""
    sessions: dict[tuple[str, str], set[str]] = {}
    first: dict[str, int] = {}
    for (variant, session, case, _), s in latest.items():
        sessions.setdefault((variant, case), set()).add(session)
        first[session] = min(first.get(session, s.timestamp_ms), s.timestamp_ms)
    counter: dict[tuple[str, str], int] = {}
    for key in sorted(latest, key=lambda k: (first[k[1]], k[1], k[3])):
        variant, session, case, repeat = key
        if len(sessions[(variant, case)]) > 1:
            repeat = counter[(variant, case)] = counter.get((variant, case), -1) + 1
        yield key, latest[key], repeat


_ROW_FIELDS = tuple(f.name for f in fields(TraceRow))


def _as_case(row: TraceRow, case_id: str, repeat: int) -> TraceRow:
    """``replace(row, case_id=..., repeat=...)``, without its per-call cost (~10x) while TraceRow has these fields."""
    if _ROW_FIELDS == ("trace_id", "variant", "case_id", "repeat", "values", "output"):
        return TraceRow(row.trace_id, row.variant, case_id, repeat, row.values, row.output)
    return replace(row, case_id=case_id, repeat=repeat)


def now() -> float:
    """The instant a selection's relative window ends (a function, so tests can see what was used)."""
    return time.time()
