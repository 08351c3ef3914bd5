"""Stored traces read from a SQLite store with Python's own ``sqlite3``: MLflow is not imported.

``gate compare`` on a SQLite store spent ~3.5 s of its 10 s at 10,000 traces before reading one: importing MLflow
(~2.2 s, pandas and its SQL store module included) and opening its ``SqlAlchemyStore`` (alembic's check of the schema,
~1 s). Neither is needed to read what the metrics read. This reader opens the database read-only, checks its schema
revision (``alembic_version``) against the revisions it was verified on, and reads a selection a page at a time in two
queries, as the SQL reader of gate/_traces/span_rows.py does through MLflow's store: the trace infos with the tags and
metadata the gate reads, newest first, paged by key; then the page's spans.

The filter is built from the selection's terms (``Selection.terms``, from the same selector as its MLflow filter
string) the way MLflow 3.17's ``SqlAlchemyStore.search_traces`` applies each to its tables: a tag or metadata
equality is a row of ``trace_tags`` / ``trace_request_metadata``; ``mlflow.traceName`` is the ``trace_name`` column and
``mlflow.trace.session`` the ``session_id`` column; ``mlflow.sourceRun`` also matches traces linked to the run in
``entity_associations``. Keys MLflow treats otherwise (token usage and cost metadata, linked prompts) are not
translated: such a selection is read through MLflow. tests/test_read_paths.py checks that this reader, the SQL reader
and MLflow's ``search_traces`` give the same rows.

A gathered session's runs (``gate compare --session``) are read from the ``runs`` and ``tags`` tables as
``search_runs`` reads them (active runs only). A trace whose spans are not all in the ``spans`` table is read with
MLflow's ``get_trace`` (MLflow imported then). ``GATE_TRACE_READER=sqlite`` makes "cannot be used" a config error
naming why; ``=sql`` or ``=public`` skip this reader.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gate._errors import ConfigError
from gate._traces.span_rows import (
    CHUNK,
    INFO_COLUMNS,
    INFO_METADATA,
    INFO_TAGS,
    READER_ENV,
    InfoColumns,
    forced_reader,
    group_spans,
    keyset_pages,
    stored_span_ids,
    with_spans,
)

__all__ = ["TESTED_SCHEMAS", "DirectPages", "DirectReader", "StoredRun", "Term", "direct_reader"]

# alembic head revisions of MLflow's tracking schema whose tables this reader was verified on (tests/test_read_paths.py)
TESTED_SCHEMAS = {"dc11669786a5": "MLflow 3.17"}
# The trace_info columns MLflow 3.17 turns back into token usage and cost (trace_analytics TOKEN_/COST_COLUMN_BY_KEY:
# each key is its column's name).
TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_input_tokens_above_1hr",
)
COST_COLUMNS = ("input_cost", "output_cost", "total_cost")
# ("tag" | "metadata", key, value): an equality; ("name", "", value): the trace name; ("since" | "until", "", ms)
Term = tuple[str, str, Any]
_UNTRANSLATED = {
    ("tag", "mlflow.linkedPrompts"),
    ("metadata", "mlflow.trace.tokenUsage"),
    ("metadata", "mlflow.trace.cost"),
}
_BIGINT = 2**63


def _token_count(value: Any) -> int | None:
    """A token column's value as MLflow 3.17 reads it (``trace_analytics.token_count_or_none``): an integral number
    within a signed 64-bit integer, else None."""
    if type(value) is int:
        return value if -_BIGINT <= value < _BIGINT else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not number.is_finite() or number != number.to_integral_value() or not -_BIGINT <= number < _BIGINT:
        return None
    return int(number)


def _sqlite_file(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    return path if path.is_file() else None


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection, closed on the way out (sqlite3's own ``with`` only ends a transaction): this reader
    never writes, and never creates a database where none is."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class RunInfo:
    """What the gate reads of an MLflow run's info (``mlflow.entities.RunInfo``)."""

    run_id: str
    status: str
    start_time: int | None


@dataclass(frozen=True)
class RunData:
    tags: dict[str, str]


@dataclass(frozen=True)
class StoredRun:
    """An MLflow run as ``MlflowClient.search_runs`` gives it, for the fields the gate reads."""

    info: RunInfo
    data: RunData


@dataclass
class DirectReader:
    """A SQLite store's traces, read with ``sqlite3``; ``get_trace`` is MLflow's read for incomplete traces."""

    tracking_uri: str
    path: Path
    schema: str  # the alembic revision
    get_trace: Callable[[str], Any] | None = None

    def experiment(self, name: str) -> tuple[str, str] | None:
        """The id and lifecycle stage of the experiment of this name, or None."""
        with _connect(self.path) as conn:
            sql = "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?"
            row = conn.execute(sql, (name,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def runs(self, experiment_id: str, tag: str, value: str) -> list[StoredRun]:
        """The active runs of the experiment whose tag ``tag`` is ``value`` (``search_runs``' default view)."""
        with _connect(self.path) as conn:
            found = conn.execute(
                "SELECT r.run_uuid, r.status, r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ?",
                (int(experiment_id), tag, value),
            ).fetchall()
            tags: dict[str, dict[str, str]] = {row[0]: {} for row in found}
            ids = list(tags)
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                for run_id, key, val in conn.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({', '.join('?' * len(chunk))})", chunk
                ):
                    tags[run_id][key] = val
        return [StoredRun(RunInfo(run_id, status, start), RunData(tags[run_id])) for run_id, status, start in found]

    def pages(self, experiment_id: str, terms: Sequence[Term], max_traces: int, page_size: int) -> DirectPages:
        return DirectPages(self, experiment_id, tuple(terms), max_traces, page_size)

    def mlflow_get_trace(self, trace_id: str) -> Any:
        """MLflow's own read of one trace (a client is made, and MLflow imported, on first use)."""
        if self.get_trace is None:
            from mlflow import MlflowClient

            self.get_trace = MlflowClient(self.tracking_uri).get_trace
        return self.get_trace(trace_id)


def translatable(terms: Sequence[Term] | None) -> str | None:
    """Why these terms cannot be read here, or None."""
    if terms is None:
        return "the selection has no terms to translate (only an MLflow filter string)"
    for kind, key, _ in terms:
        if (kind, key) in _UNTRANSLATED:
            return f"MLflow filters {kind} {key!r} in its own way"
    return None


def _where(terms: Sequence[Term]) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``t`` (a trace_info row) and their parameters, one per term."""
    clauses: list[str] = []
    params: list[Any] = []
    for kind, key, value in terms:
        if kind == "name" or (kind == "tag" and key == "mlflow.traceName"):
            clauses.append("t.trace_name = ?")
            params.append(value)
        elif kind == "metadata" and key == "mlflow.trace.session":
            clauses.append("t.session_id = ?")
            params.append(value)
        elif kind in ("tag", "metadata"):
            table = "trace_tags" if kind == "tag" else "trace_request_metadata"
            exists = f"EXISTS (SELECT 1 FROM {table} x WHERE x.request_id = t.request_id AND x.key = ? AND x.value = ?)"
            if kind == "metadata" and key == "mlflow.sourceRun":  # MLflow also counts traces linked to the run
                exists = (
                    f"({exists} OR EXISTS (SELECT 1 FROM entity_associations a WHERE a.source_id = t.request_id "
                    "AND a.source_type = 'trace' AND a.destination_type = 'run' AND a.destination_id = ?))"
                )
                params += [key, value, value]
            else:
                params += [key, value]
            clauses.append(exists)
        elif kind == "since":
            clauses.append("t.timestamp_ms >= ?")
            params.append(int(value))
        elif kind == "until":
            clauses.append("t.timestamp_ms <= ?")
            params.append(int(value))
        else:
            raise ValueError(f"unknown selection term {kind!r}")
    return clauses, params


_NO_KEY = (2**63 - 1, "")  # a page key before every trace: the first page's


@dataclass
class DirectPages:
    """The pages of one selection; after the last, ``more`` says whether the selection holds more than was read."""

    reader: DirectReader
    experiment_id: str
    terms: tuple[Term, ...]
    max_traces: int
    page_size: int
    more: bool = False
    _columns: InfoColumns = field(default_factory=lambda: InfoColumns(TOKEN_COLUMNS, COST_COLUMNS, _token_count))

    def statement(self) -> tuple[str, list[Any]]:
        """The page query (as span_rows.SqlTraceReader.statement builds it through MLflow), with the parameters
        before the page key's."""
        columns = [f"t.{c}" for c in (*INFO_COLUMNS, *TOKEN_COLUMNS, *COST_COLUMNS)]
        joins, params = [], []
        for i, (table, key) in enumerate(
            [("trace_tags", k) for k in INFO_TAGS] + [("trace_request_metadata", k) for k in INFO_METADATA]
        ):
            columns.append(f"j{i}.value")
            joins.append(f"LEFT JOIN {table} j{i} ON j{i}.request_id = t.request_id AND j{i}.key = ?")
            params.append(key)
        clauses, where_params = _where(self.terms)
        # The plain bound first: SQLite's planner takes it as the index range's end.
        clauses = ["t.experiment_id = ?", *clauses, "t.timestamp_ms <= ?", "(t.timestamp_ms < ? OR t.request_id > ?)"]
        sql = (
            f"SELECT {', '.join(columns)} FROM trace_info t {' '.join(joins)} WHERE {' AND '.join(clauses)} "
            "ORDER BY t.timestamp_ms DESC, t.request_id LIMIT ?"
        )
        return sql, [*params, int(self.experiment_id), *where_params]

    def __iter__(self) -> Iterator[list[Any]]:
        sql, params = self.statement()
        with _connect(self.reader.path) as conn:

            def page(limit: int, after: tuple[int, str] | None) -> tuple[list[Any], bool]:
                after_ms, after_id = after or _NO_KEY
                rows = conn.execute(sql, [*params, after_ms, after_ms, after_id, limit + 1]).fetchall()
                infos = [self._columns.info(row) for row in rows[:limit]]
                return with_spans(infos, _spans(conn, infos), self.reader.mlflow_get_trace), len(rows) > limit

            yield from keyset_pages(page, self.max_traces, self.page_size, self)


def _spans(conn: sqlite3.Connection, infos: Sequence[Any]) -> dict[str, list[Any]]:
    ids = stored_span_ids(infos)
    rows: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        rows += conn.execute(
            "SELECT trace_id, parent_span_id, type, start_time_unix_nano, content FROM spans "
            f"WHERE trace_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
    return group_spans(rows)


def _revision(path: Path) -> str | None:
    try:
        with _connect(path) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def direct_reader(tracking_uri: str, terms: Sequence[Sequence[Term] | None] = ()) -> DirectReader | None:
    """The direct reader for this store and these selections' terms, or None where it is not verified.

    ``GATE_TRACE_READER=sqlite`` makes "cannot be used here" a config error naming why; ``sql`` and ``public`` skip it.
    """
    forced = forced_reader()
    if forced in ("sql", "public"):
        return None
    path = _sqlite_file(tracking_uri)
    revision = _revision(path) if path is not None else None
    if path is None:
        why: str | None = "the tracking URI is not an existing SQLite file"
    elif revision not in TESTED_SCHEMAS:
        tested = ", ".join(f"{r} ({v})" for r, v in TESTED_SCHEMAS.items())
        why = f"the store's schema revision is {revision or 'unknown'}; verified on {tested}"
    else:
        why = next((w for t in terms if (w := translatable(t)) is not None), None)
    if why is not None:
        if forced == "sqlite":
            raise ConfigError(f"{READER_ENV}=sqlite, but the direct SQLite reader cannot be used: {why}")
        return None
    assert path is not None and revision is not None
    return DirectReader(tracking_uri, path, revision)
