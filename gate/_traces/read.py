"""Read a gate session's traces back from the store, for matching against the calls that made them."""

from __future__ import annotations

from typing import Any

from gate._errors import RunError
from gate._secrets import redact_uri
from gate._store.recording import flush_traces
from gate._store.store import TAG_PREFIX, Store
from gate._traces.span_rows import span_reader, with_dict_spans

__all__ = ["fetch_session_traces"]


def fetch_session_traces(
    store: Store, session: str, repeats: range | None = None, shard: str | None = None, spans_as_dicts: bool = False
) -> list[Any]:
    """The traces of this gate session (of one repeat, when ``repeats`` is a single one; of one shard,
    when ``shard`` is given), with spans: MLflow's ``Span`` objects, or with ``spans_as_dicts`` (no scorer
    needs more than the metrics do) plain dicts read in one query per page where the store allows it."""
    import mlflow

    flush_traces()
    filter_string = (
        f"tags.`{TAG_PREFIX}session` = '{session}'"
        + (f" AND tags.`{TAG_PREFIX}repeat` = '{repeats.start}'" if repeats is not None and len(repeats) == 1 else "")
        + (f" AND tags.`{TAG_PREFIX}shard` = '{shard}'" if shard else "")
    )
    reader = span_reader(store.client) if spans_as_dicts else None
    try:
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
                max_results=500,
                page_token=token,
                include_spans=False,
            )
            traces += with_dict_spans(store.client, list(page), reader)
            token = page.token
            if not token:
                return traces
    except Exception as exc:  # noqa: BLE001 - any store failure is a run error, reported in one line
        raise RunError(f"cannot read traces back from {redact_uri(store.tracking_uri)}: {exc}") from None
