"""Read a gate session's traces back from the store, for matching against the calls that made them."""

from __future__ import annotations

from typing import Any

from gate._errors import RunError
from gate._secrets import redact_uri
from gate._store.recording import flush_traces
from gate._store.store import TAG_PREFIX, Store
from gate._traces.select import PAGE, SQL_PAGE, page_size
from gate._traces.span_rows import span_reader, sql_trace_reader, with_dict_spans

__all__ = ["fetch_session_traces"]

ALL = 1 << 62  # no cap on a session's traces: every one must be matched to its call


def fetch_session_traces(
    store: Store, session: str, repeats: range | None = None, shard: str | None = None, spans_as_dicts: bool = False
) -> list[Any]:
    """The traces of this gate session (of ``repeats`` only, when given; of one shard, when ``shard`` is given),
    with spans: MLflow's ``Span`` objects, or with ``spans_as_dicts`` (no scorer
    needs more than the metrics do) plain dicts, read by the SQL reader where it is verified (two queries a page)
    and else by MLflow's search with one span query per page where the store allows it (gate/_traces/span_rows.py)."""

    flush_traces()
    filter_string = (
        f"tags.`{TAG_PREFIX}session` = '{session}'"
        + (f" AND tags.`{TAG_PREFIX}repeat` = '{repeats.start}'" if repeats is not None and len(repeats) == 1 else "")
        + (f" AND tags.`{TAG_PREFIX}shard` = '{shard}'" if shard else "")
    )
    traces = _read(store, filter_string, spans_as_dicts)
    if repeats is None or len(repeats) == 1 or repeats.start == 0:
        return traces  # the filter already selected them, or they are all this session has so far
    # A round of several repeats after the first (the adaptive loop's later looks): the store's filter selects one
    # tag value at a time, so the earlier rounds' traces are read too and left out here.
    return [t for t in traces if int(t.info.tags.get(f"{TAG_PREFIX}repeat", -1)) in repeats]


def _read(store: Store, filter_string: str, spans_as_dicts: bool) -> list[Any]:
    import mlflow

    sql = sql_trace_reader(store.client) if spans_as_dicts else None  # GATE_TRACE_READER misspelt: exit 2
    try:
        if sql is not None:
            pages = sql.pages(str(store.experiment_id), filter_string, ALL, page_size(SQL_PAGE))
            return [trace for page in pages for trace in page]
        reader = span_reader(store.client) if spans_as_dicts else None
        if reader is None:
            found = mlflow.search_traces(
                locations=[store.experiment_id], filter_string=filter_string, return_type="list"
            )
            return list(found)
        traces: list[Any] = []
        token = None
        while True:
            page = store.client.search_traces(
                locations=[store.experiment_id],
                filter_string=filter_string,
                max_results=page_size(PAGE),
                page_token=token,
                include_spans=False,
            )
            traces += with_dict_spans(store.client, list(page), reader)
            token = page.token
            if not token:
                return traces
    except Exception as exc:  # noqa: BLE001 - any store failure is a run error, reported in one line
        raise RunError(f"cannot read traces back from {redact_uri(store.tracking_uri)}: {exc}") from None
