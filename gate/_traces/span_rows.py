"""Read many stored traces cheaply, for metrics: trace infos, the tags the gate reads and spans as plain dicts.

MLflow's own read (``search_traces`` with spans) turns every span row into a ``Span`` object through a thread
pool; at 10,000 two-span traces that was ~28 s of a 48 s ``gate score`` (bench/analysis.py). Its search of trace
infos reads every tag and metadata row of every trace (21 per trace in the benchmark's store) through the ORM
session, and pages by OFFSET, so that page k runs the filter over the k pages before it again: a 100,000-trace
``gate compare`` took 340-370 s, with spans already read as dicts. The gate's metrics need little of a trace: its
id, time, duration, state, token and cost columns, the tags in ``INFO_TAGS`` and the metadata in ``INFO_METADATA``,
and five things from each span (its parent, its type, its inputs, its outputs and its attributes, all in the JSON
``content`` column of MLflow's ``spans`` table). Two readers here:

- ``sql_trace_reader``: a selection read straight from a SQL store, a page at a time, in two queries per page: the
  trace infos with the tags and metadata the gate reads (an outer join per key), filtered by MLflow's own filter
  translation (so a filter selects the traces MLflow's ``search_traces`` selects), ordered as MLflow orders them
  (newest first, then by id) and paged by that order's last key instead of an offset; then the page's spans.
- ``span_reader`` / ``with_dict_spans``: the spans of traces that MLflow's public search found, in one query per page.

Both rely on what is not MLflow's public API (the ``spans`` table, and for the first also ``SqlAlchemyStore``'s
filter helpers and ``trace_info`` columns). ``sql_trace_reader`` is used only on a ``SqlAlchemyStore`` itself (not a
subclass) over a database in ``TESTED_DATABASES``, on an MLflow release in ``TESTED_MLFLOW``, and when every private
name it uses is there; ``span_reader`` on any ``SqlAlchemyStore``. Otherwise (a tracking server over http, another
MLflow release) the caller uses MLflow's public read. ``GATE_TRACE_READER=public`` forces MLflow's public read for
both (``search_traces``, spans as MLflow's ``Span`` objects) and ``=sql`` the SQL reader (a config error where it
cannot be used). Traces whose spans are not all in the table (counted against ``mlflow.trace.sizeStats``) are read
with MLflow's ``get_trace``. Scorers get MLflow's own ``Trace`` objects: these paths are only taken when no scorer
needs them. tests/test_read_paths.py checks, on SQLite and PostgreSQL, that both give the same rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gate._errors import ConfigError
from gate._store.store import TAG_PREFIX

__all__ = [
    "INFO_COLUMNS",
    "INFO_METADATA",
    "INFO_TAGS",
    "READERS",
    "READER_ENV",
    "TESTED_DATABASES",
    "TESTED_MLFLOW",
    "DictSpan",
    "InfoColumns",
    "LiteInfo",
    "SqlPages",
    "SqlTraceReader",
    "forced_reader",
    "group_spans",
    "keyset_pages",
    "span_reader",
    "sql_trace_reader",
    "stored_span_ids",
    "with_dict_spans",
    "with_spans",
]

CHUNK = 500  # trace ids per IN (...) query: under SQLite's variable limit
# "public" (MLflow's search_traces and Span objects), "sql" (this module's SQL reader, through MLflow's SQLAlchemy
# store) or "sqlite" (gate/_traces/sqlite_direct.py: Python's sqlite3, MLflow not imported)
READER_ENV = "GATE_TRACE_READER"
READERS = ("public", "sql", "sqlite")
TESTED_MLFLOW = ((3, 17),)  # (major, minor) releases whose private names and trace_info columns were verified
TESTED_DATABASES = ("sqlite", "postgresql")  # SqlAlchemyStore.db_type values tests/test_read_paths.py runs on
# What the SQL reader reads of a trace besides its trace_info row: every tag and metadata key the gate reads from a
# trace read for metrics (gate/_traces/select.py, rows.py, read.py; mlflow.traceName comes from a column). A trace's
# ``info.tags`` and ``info.trace_metadata`` hold these keys only.
INFO_TAGS = (
    *(f"{TAG_PREFIX}{key}" for key in ("variant", "case_id", "repeat", "attempt", "session", "confirm")),
    "mlflow.trace.spansLocation",
)
INFO_METADATA = ("mlflow.sourceRun", "mlflow.trace.sizeStats")
INFO_COLUMNS = (
    "request_id", "timestamp_ms", "execution_time_ms", "status", "trace_name", "request_preview", "response_preview"
)  # fmt: skip


def forced_reader() -> str | None:
    """``GATE_TRACE_READER`` (one of ``READERS``), or None when unset; another value is a config error."""
    value = os.environ.get(READER_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in READERS:
        raise ConfigError(f"{READER_ENV}={value!r}: use 'public' (MLflow's search_traces), 'sql' or 'sqlite'")
    return value


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class _Attributes(Mapping[str, Any]):
    """A span's attributes as stored (JSON-encoded values), each decoded once, when first read."""

    __slots__ = ("_span",)

    def __init__(self, span: DictSpan) -> None:
        self._span = span

    def __getitem__(self, key: str) -> Any:
        return self._span.attribute(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._span.raw_attributes)

    def __len__(self) -> int:
        return len(self._span.raw_attributes)


_MISSING = object()


class DictSpan:
    """The parts of a stored span that the metrics read, decoded on first use.

    Built from the span's JSON ``content`` (a string, parsed when a part of it is first read, or a dict); with the
    ``spans`` table's ``parent_span_id`` and ``type`` columns, a span whose content nobody reads is never parsed.
    """

    __slots__ = ("_content", "_decoded", "_parent", "_raw", "_type")

    def __init__(self, raw: dict[str, Any] | str, parent_id: Any = _MISSING, span_type: Any = _MISSING) -> None:
        self._content = raw if isinstance(raw, str) else None
        self._raw: dict[str, Any] | None = raw if isinstance(raw, dict) else None
        self._parent = parent_id
        self._type = span_type
        self._decoded: dict[str, Any] = {}

    @property
    def raw(self) -> dict[str, Any]:
        if self._raw is None:
            self._raw = json.loads(self._content or "{}")
            self._content = None
        return self._raw

    @property
    def raw_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = self.raw.get("attributes") or {}
        return attributes

    def attribute(self, key: str) -> Any:
        """One attribute's value, JSON-decoded (once); ``KeyError`` when the span has no such attribute."""
        try:
            return self._decoded[key]
        except KeyError:
            value = self._decoded[key] = _decode(self.raw_attributes[key])
            return value

    def _get(self, key: str) -> Any:
        try:
            return self.attribute(key)
        except KeyError:
            return None

    @property
    def parent_id(self) -> str | None:
        if self._parent is not _MISSING:
            return self._parent or None
        return self.raw.get("parent_span_id") or None

    @property
    def name(self) -> str | None:
        return self.raw.get("name")

    @property
    def attributes(self) -> Mapping[str, Any]:
        """Each value is JSON-decoded when it is first read (the metrics read two or three of a dozen)."""
        return _Attributes(self)

    @property
    def span_type(self) -> str | None:
        if self._type is not _MISSING:
            return self._type  # type: ignore[no-any-return]
        return self._get("mlflow.spanType")  # type: ignore[no-any-return]

    @property
    def inputs(self) -> Any:
        return self._get("mlflow.spanInputs")

    @property
    def outputs(self) -> Any:
        return self._get("mlflow.spanOutputs")

    @property
    def start_time_ns(self) -> int | None:
        value = self.raw.get("start_time_unix_nano")
        return None if value is None else int(value)

    @property
    def events(self) -> list[SpanEvent]:
        return [SpanEvent(e.get("name", ""), int(e.get("time_unix_nano", 0))) for e in self.raw.get("events") or []]


@dataclass(frozen=True)
class SpanEvent:
    """A stored span event's name and time (what ``ttft_ms`` reads)."""

    name: str
    timestamp: int  # ns since the epoch


def _expected_spans(info: Any) -> int | None:
    stats = (getattr(info, "trace_metadata", None) or {}).get("mlflow.trace.sizeStats")
    try:
        return int(json.loads(stats)["num_spans"]) if stats else None
    except (ValueError, KeyError, TypeError):
        return None


def _complete(found: dict[str, list[DictSpan]], infos: Sequence[Any]) -> dict[str, list[DictSpan]]:
    """Only the traces that have at least as many spans as their size stats count."""
    expected = {info.trace_id: _expected_spans(info) for info in infos}
    return {
        trace_id: spans
        for trace_id, spans in found.items()
        if expected.get(trace_id) is None or len(spans) >= (expected[trace_id] or 0)
    }


def _in_tracking_store(info: Any) -> bool:
    return (info.tags or {}).get("mlflow.trace.spansLocation") == "TRACKING_STORE"


def _sql_store(client: Any) -> Any:
    """The client's ``SqlAlchemyStore``, or None."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except (ImportError, AttributeError):
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def _spans_of(connection: Any, infos: Sequence[Any]) -> dict[str, list[DictSpan]]:
    """The spans in the ``spans`` table of the traces that keep them there, by trace id (one query per CHUNK)."""
    from mlflow.store.tracking.dbmodels.models import SqlSpan
    from sqlalchemy import select

    ids = stored_span_ids(infos)
    rows: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        query: Any = select(
            SqlSpan.trace_id, SqlSpan.parent_span_id, SqlSpan.type, SqlSpan.start_time_unix_nano, SqlSpan.content
        )
        query = query.where(SqlSpan.trace_id.in_(ids[start : start + CHUNK]))
        rows += connection.execute(query).all()
    return group_spans(rows)


def stored_span_ids(infos: Sequence[Any]) -> list[str]:
    """The ids of the traces that keep their spans in the ``spans`` table."""
    return [info.trace_id for info in infos if _in_tracking_store(info)]


def group_spans(rows: Iterable[Sequence[Any]]) -> dict[str, list[DictSpan]]:
    """``spans`` rows (trace id, parent span id, type, start time, content) as each trace's spans, in MLflow's order
    (SqlAlchemyStore._get_spans_with_trace_info): the root first, then by start time."""
    found: dict[str, list[tuple[bool, int, DictSpan]]] = {}
    for trace_id, parent, span_type, started, content in rows:
        if content:  # "" is a payload archived away: the trace is incomplete here, read by MLflow
            found.setdefault(trace_id, []).append((parent is not None, started, DictSpan(content, parent, span_type)))
    return {trace_id: [s for *_, s in sorted(spans, key=lambda t: t[:2])] for trace_id, spans in found.items()}


def span_reader(client: Any) -> Callable[[Sequence[Any]], dict[str, list[DictSpan]]] | None:
    """A function from trace infos to their spans (only traces whose spans were all found), or None."""
    store = _sql_store(client)
    if store is None or forced_reader() == "public":
        return None
    try:
        import sqlalchemy  # noqa: F401
        from mlflow.store.tracking.dbmodels.models import SqlSpan  # noqa: F401
    except ImportError:
        return None

    def read(infos: Sequence[Any]) -> dict[str, list[DictSpan]]:
        with store.ManagedSessionMaker() as session:
            return _complete(_spans_of(session.connection(), infos), infos)

    return read


class _SpanData:
    """A trace's spans as dicts; ``request`` (the root span's inputs, decoded) as MLflow's ``TraceData`` has it."""

    __slots__ = ("spans",)

    def __init__(self, spans: list[DictSpan]) -> None:
        self.spans = spans

    def _root(self) -> DictSpan | None:
        return next((s for s in self.spans if s.parent_id is None), None)

    @property
    def request(self) -> Any:
        root = self._root()
        return root.inputs if root is not None else None

    @property
    def request_json(self) -> str | None:
        """The root span's inputs as stored (JSON), undecoded: the same text as MLflow's ``TraceData.request``."""
        root = self._root()
        value = root.raw_attributes.get("mlflow.spanInputs") if root is not None else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class _LiteTrace:
    """A stored trace's info with its spans as dicts: what the metrics read, without MLflow's Span objects."""

    info: Any
    data: _SpanData


def _lite(info: Any, spans: list[DictSpan]) -> _LiteTrace:
    return _LiteTrace(info, _SpanData(spans))


def with_dict_spans(
    client: Any, traces: list[Any], reader: Callable[[Sequence[Any]], dict[str, list[DictSpan]]]
) -> list[Any]:
    """Traces read without spans, given their spans as dicts (MLflow's own read for any the table lacks)."""
    spans = reader([t.info for t in traces])
    out: list[Any] = []
    for trace in traces:
        mine = spans.get(trace.info.trace_id)
        if mine is None:  # spans elsewhere (artifact store) or not all in the table: MLflow's own read
            out.append(client.get_trace(trace.info.trace_id))
            continue
        out.append(_lite(trace.info, mine))
    return out


# --- the SQL reader: trace infos, their tags and their spans, two queries a page -----------------------------------


@dataclass
class LiteInfo:
    """A trace's info as the SQL reader reads it: what ``mlflow.entities.TraceInfo`` gives for the same trace, for
    the fields the gate reads (``tags`` and ``trace_metadata`` hold only ``INFO_TAGS`` and ``INFO_METADATA``)."""

    trace_id: str
    request_time: int
    execution_duration: int | None
    state: Any  # mlflow.entities.TraceState
    tags: dict[str, str]
    trace_metadata: dict[str, str]
    token_usage: dict[str, int] | None
    cost: dict[str, float] | None
    request_preview: str | None = None
    response_preview: str | None = None
    assessments: list[Any] = field(default_factory=list)  # not read: scorers take MLflow's own path


_NO_KEY = (2**63 - 1, "")  # a page key before every trace: the first page's


@dataclass
class SqlTraceReader:
    """Pages of a selection, read from a ``SqlAlchemyStore``'s tables (see the module's docstring)."""

    client: Any
    store: Any
    why: str

    def pages(self, experiment_id: str, filter_string: str, max_traces: int, page_size: int) -> SqlPages:
        return SqlPages(self, experiment_id, filter_string, max_traces, page_size)

    def statement(self, experiment_id: str, filter_string: str) -> Any:
        """The page query: a trace_info row with token and cost columns, then a column per ``INFO_TAGS`` and
        ``INFO_METADATA`` key; traces after the key (``after_ms``, ``after_id``), newest first, ``limit`` of them."""
        from mlflow.store.tracking import sqlalchemy_store as sa_store
        from mlflow.store.tracking.dbmodels.models import SqlTraceInfo, SqlTraceMetadata, SqlTraceTag
        from mlflow.store.tracking.utils.trace_analytics import COST_COLUMN_BY_KEY, TOKEN_COLUMN_BY_KEY
        from sqlalchemy import and_, bindparam, or_
        from sqlalchemy.orm import aliased

        store = self.store
        columns = [getattr(SqlTraceInfo, name) for name in INFO_COLUMNS]
        columns += [
            getattr(SqlTraceInfo, column) for column in (*TOKEN_COLUMN_BY_KEY.values(), *COST_COLUMN_BY_KEY.values())
        ]
        with store.ManagedSessionMaker() as session:
            # As SqlAlchemyStore.search_traces (MLflow 3.17) builds its query, with our columns and paging.
            locations = [int(e) for e in store._filter_experiment_ids(session, [experiment_id])]
            location: Any = SqlTraceInfo.experiment_id.in_(locations)
            query = store._trace_query(session).with_entities(*columns)
            scoped = store._trace_query(session).filter(location)
            filters = sa_store._get_filter_clauses_for_search_traces(
                filter_string, session, store._get_dialect(), scoped
            )
            query = store._apply_trace_filter_clauses(query, *filters).filter(location)
            extra = [(SqlTraceTag, key) for key in INFO_TAGS] + [(SqlTraceMetadata, key) for key in INFO_METADATA]
            for table, key in extra:
                alias = aliased(table)
                on = and_(alias.request_id == SqlTraceInfo.request_id, alias.key == key)
                query = query.outerjoin(alias, on).add_columns(alias.value)
            after_ms, after_id = bindparam("after_ms"), bindparam("after_id")
            # The plain bound first: SQLite's planner takes it as the index range's end (else every page would scan
            # down from the filter's own upper bound, "timestamp_ms <= until").
            query = query.filter(SqlTraceInfo.timestamp_ms <= after_ms).filter(
                or_(SqlTraceInfo.timestamp_ms < after_ms, SqlTraceInfo.request_id > after_id)
            )
            query = query.order_by(SqlTraceInfo.timestamp_ms.desc(), SqlTraceInfo.request_id)
            return query.statement.limit(bindparam("limit"))

    def page(self, statement: Any, limit: int, after: tuple[int, str] | None) -> tuple[list[Any], bool]:
        """Up to ``limit`` traces after the key ``after`` (newest first), with spans; and whether more follow."""
        from mlflow.entities import TraceState
        from mlflow.store.tracking.utils.trace_analytics import (
            COST_COLUMN_BY_KEY,
            TOKEN_COLUMN_BY_KEY,
            token_count_or_none,
        )

        def tokens(value: Any) -> int | None:
            if type(value) is int and -(2**63) <= value < 2**63:  # what token_count_or_none makes of an int
                return value
            counted: int | None = token_count_or_none(value)
            return counted

        after_ms, after_id = after or _NO_KEY
        columns = InfoColumns(tuple(TOKEN_COLUMN_BY_KEY), tuple(COST_COLUMN_BY_KEY), tokens)
        with self.store.ManagedSessionMaker() as session:
            connection = session.connection()
            params = {"after_ms": after_ms, "after_id": after_id, "limit": limit + 1}
            rows = connection.execute(statement, params).all()  # plain rows: no ORM objects
            infos = [columns.info(row, TraceState) for row in rows[:limit]]
            found = _spans_of(connection, infos)
        return with_spans(infos, found, self.client.get_trace), len(rows) > limit


@dataclass(frozen=True)
class InfoColumns:
    """A page row's layout: ``INFO_COLUMNS``, the token columns, the cost columns, then a value per ``INFO_TAGS`` and
    ``INFO_METADATA`` key (None where the trace has none); ``tokens`` reads a token column as MLflow does."""

    token_keys: tuple[str, ...]
    cost_keys: tuple[str, ...]
    tokens: Callable[[Any], int | None]

    def info(self, row: Sequence[Any], state: Callable[[str], Any] = str) -> LiteInfo:
        first_token = len(INFO_COLUMNS)
        first_cost = first_token + len(self.token_keys)
        first_tag = first_cost + len(self.cost_keys)
        first_metadata = first_tag + len(INFO_TAGS)
        trace_id, time_ms, duration, status, name, request_preview, response_preview = row[:first_token]
        tags = {key: v for key, v in zip(INFO_TAGS, row[first_tag:first_metadata], strict=True) if v is not None}
        if name is not None:
            tags["mlflow.traceName"] = name
        metadata = {key: v for key, v in zip(INFO_METADATA, row[first_metadata:], strict=True) if v is not None}
        # As MLflow turns these columns back into token usage and cost (compatibility_metadata_from_columns).
        usage = {
            k: n
            for k, v in zip(self.token_keys, row[first_token:first_cost], strict=True)
            if (n := self.tokens(v)) is not None
        }
        cost = {k: v for k, v in zip(self.cost_keys, row[first_cost:first_tag], strict=True) if v is not None}
        return LiteInfo(
            trace_id,
            time_ms,
            duration,
            state(status),
            tags,
            metadata,
            usage or None,
            cost or None,
            request_preview,
            response_preview,
        )


def with_spans(
    infos: Sequence[LiteInfo], found: dict[str, list[DictSpan]], get_trace: Callable[[str], Any]
) -> list[Any]:
    """Each info with its spans; ``get_trace`` (MLflow's own read) for a trace whose spans are elsewhere (the
    artifact store) or not all in the table."""
    complete = _complete(found, infos)
    return [
        _lite(info, mine) if (mine := complete.get(info.trace_id)) is not None else get_trace(info.trace_id)
        for info in infos
    ]


@dataclass
class SqlPages:
    """The pages of one selection; after the last, ``more`` says whether the selection holds more than was read."""

    reader: SqlTraceReader
    experiment_id: str
    filter_string: str
    max_traces: int
    page_size: int
    more: bool = False

    def __iter__(self) -> Iterator[list[Any]]:
        statement = self.reader.statement(self.experiment_id, self.filter_string)
        yield from keyset_pages(
            lambda limit, after: self.reader.page(statement, limit, after), self.max_traces, self.page_size, self
        )


class _Capped(Protocol):
    more: bool


def keyset_pages(
    page: Callable[[int, tuple[int, str] | None], tuple[list[Any], bool]],
    max_traces: int,
    page_size: int,
    pages: _Capped,
) -> Iterator[list[Any]]:
    """Up to ``max_traces`` traces, ``page_size`` a page, each page read by ``page(limit, key)`` after the last one's
    key (None: the first page) and saying whether more follow; ``pages.more`` is set when the selection holds more
    than ``max_traces``."""
    left, after = max_traces, None
    while left > 0:
        traces, more = page(min(page_size, left), after)
        if traces:
            yield traces
        left -= len(traces)
        if not more:
            return
        if left <= 0:
            pages.more = True
            return
        last = traces[-1].info
        after = (last.request_time, last.trace_id)


def sql_trace_reader(client: Any) -> SqlTraceReader | None:
    """The SQL reader for this client's store, or None where only MLflow's public read is verified.

    ``GATE_TRACE_READER=sql`` makes "cannot be used here" a config error naming why.
    """
    forced = forced_reader()
    if forced == "public":
        return None
    why = _unusable(client)
    if why is not None:
        if forced == "sql":
            raise ConfigError(f"{READER_ENV}=sql, but the SQL trace reader cannot be used: {why}")
        return None
    store = client._tracking_client.store
    import mlflow

    return SqlTraceReader(client, store, f"MLflow {mlflow.__version__}, {store.db_type} store")


def _unusable(client: Any) -> str | None:
    """Why the SQL reader cannot read this client's store, or None."""
    try:
        import mlflow
        from mlflow.store.tracking import sqlalchemy_store as sa_store
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except (ImportError, AttributeError) as exc:
        return f"MLflow's SQL store is not importable ({exc})"
    if type(store) is not SqlAlchemyStore:
        return f"the store is a {type(store).__name__}, not MLflow's SqlAlchemyStore"
    if store.db_type not in TESTED_DATABASES:
        return f"verified on {', '.join(TESTED_DATABASES)} only, not {store.db_type}"
    version = tuple(int(p) for p in mlflow.__version__.split(".")[:2] if p.isdigit())
    if version not in TESTED_MLFLOW:
        tested = ", ".join(f"{a}.{b}.x" for a, b in TESTED_MLFLOW)
        return f"MLflow {mlflow.__version__} is untested with it (tested: {tested})"
    needed = [
        (sa_store, "_get_filter_clauses_for_search_traces"),
        (store, "_filter_experiment_ids"),
        (store, "_trace_query"),
        (store, "_apply_trace_filter_clauses"),
        (store, "_get_dialect"),
    ]
    missing = [name for owner, name in needed if not callable(getattr(owner, name, None))]
    if missing:
        return f"MLflow {mlflow.__version__} lacks {', '.join(missing)}"
    try:
        from mlflow.store.tracking.utils.trace_analytics import (  # noqa: F401
            COST_COLUMN_BY_KEY,
            TOKEN_COLUMN_BY_KEY,
            token_count_or_none,
        )
    except ImportError as exc:
        return f"MLflow {mlflow.__version__}: {exc}"
    return None
