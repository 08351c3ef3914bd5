"""Read the spans of many stored traces cheaply, for metrics: one SQL query per page, spans as plain dicts.

MLflow's own read (``search_traces`` with spans) turns every span row into a ``Span`` object through a thread
pool; at 10,000 two-span traces that was ~28 s of a 48 s ``gate score`` (bench/analysis.py). The gate's metrics
need five things from a span: its parent, its type, its inputs, its outputs and its attributes — all in the JSON
``content`` column of MLflow's ``spans`` table. This module reads that column for a page of trace ids and wraps each
span dict in ``DictSpan``, which answers those five lazily.

It relies on the SQL store's ``spans`` table (``mlflow.store.tracking.dbmodels.models.SqlSpan``), which is not a
public API: ``span_reader`` returns None — and the caller uses MLflow's public read — for any store that is not a
``SqlAlchemyStore`` (a tracking server over http), when the import fails, and for traces whose spans are not all in
the table (counted against the trace's ``mlflow.trace.sizeStats``). Scorers get MLflow's own ``Trace`` objects:
this path is only taken when no scorer needs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DictSpan", "span_reader", "with_dict_spans"]

CHUNK = 500  # trace ids per IN (...) query: under SQLite's variable limit


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class _Attributes(Mapping[str, Any]):
    """A span's attributes as stored (JSON-encoded values), decoded one at a time."""

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> Any:
        return _decode(self._raw[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


class DictSpan:
    """The parts of a stored span that the metrics read, decoded on first use."""

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw

    @property
    def parent_id(self) -> str | None:
        return self._raw.get("parent_span_id") or None

    @property
    def name(self) -> str | None:
        return self._raw.get("name")

    @property
    def attributes(self) -> Mapping[str, Any]:
        """Each value is JSON-decoded when it is read (the metrics read two or three of a dozen)."""
        return _Attributes(self._raw.get("attributes") or {})

    @property
    def span_type(self) -> str | None:
        return _decode((self._raw.get("attributes") or {}).get("mlflow.spanType"))  # type: ignore[no-any-return]

    @property
    def inputs(self) -> Any:
        return _decode((self._raw.get("attributes") or {}).get("mlflow.spanInputs"))

    @property
    def outputs(self) -> Any:
        return _decode((self._raw.get("attributes") or {}).get("mlflow.spanOutputs"))

    @property
    def start_time_ns(self) -> int | None:
        value = self._raw.get("start_time_unix_nano")
        return None if value is None else int(value)

    @property
    def events(self) -> list[SpanEvent]:
        return [SpanEvent(e.get("name", ""), int(e.get("time_unix_nano", 0))) for e in self._raw.get("events") or []]


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


def span_reader(client: Any) -> Callable[[Sequence[Any]], dict[str, list[DictSpan]]] | None:
    """A function from trace infos to their spans (only traces whose spans were all found), or None."""
    try:
        from mlflow.store.tracking.dbmodels.models import SqlSpan
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except (ImportError, AttributeError):
        return None
    if not isinstance(store, SqlAlchemyStore):
        return None

    def read(infos: Sequence[Any]) -> dict[str, list[DictSpan]]:
        ids = [
            info.trace_id for info in infos if (info.tags or {}).get("mlflow.trace.spansLocation") == "TRACKING_STORE"
        ]
        found: dict[str, list[DictSpan]] = {}
        with store.ManagedSessionMaker() as session:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                rows = session.query(SqlSpan.trace_id, SqlSpan.content).filter(SqlSpan.trace_id.in_(chunk)).all()
                for trace_id, content in rows:
                    if content:
                        found.setdefault(trace_id, []).append(DictSpan(json.loads(content)))
        expected = {info.trace_id: _expected_spans(info) for info in infos}
        return {
            trace_id: spans
            for trace_id, spans in found.items()
            if expected.get(trace_id) is None or len(spans) >= (expected[trace_id] or 0)
        }

    return read


@dataclass(frozen=True)
class _SpanData:
    spans: list[Any]
    request: Any


@dataclass(frozen=True)
class _LiteTrace:
    """A stored trace's info with its spans as dicts: what the metrics read, without MLflow's Span objects."""

    info: Any
    data: _SpanData


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
        root = next((s for s in mine if s.parent_id is None), None)
        out.append(_LiteTrace(trace.info, _SpanData(mine, root.inputs if root is not None else None)))
    return out
