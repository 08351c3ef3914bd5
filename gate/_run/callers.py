"""How a round's calls reach the versions: worker processes (``gate._run.workers``), or threads in the gate's own
process (``run.isolation: inline``). Both return one ``CallResult`` per call and leave one trace per finished call
in the store, written out before they return."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from gate._config.schema import Variant
from gate._run.runner import RetryPolicy, run_calls
from gate._store.recording import flush_traces
from gate._store.store import TAG_PREFIX, Store
from gate._traces.rows import Call, CallResult

__all__ = ["Caller", "InlineCaller", "TagsFor"]

TagsFor = Callable[[Call], tuple[dict[str, str], str | None]]  # a call's trace tags and the MLflow run to link


class Caller(Protocol):
    def run(
        self,
        calls: Sequence[Call],
        tags_for: TagsFor,
        concurrency: int,
        timeout_s: float,
        on_result: Callable[[CallResult], None] | None = None,
    ) -> list[CallResult]: ...


class InlineCaller:
    """Both versions imported into the gate's process, called from threads (no isolation; a debugger can step in)."""

    def __init__(self, targets: dict[Variant, Callable[..., Any]], store: Store, retry: RetryPolicy) -> None:
        self.targets, self.store, self.retry = targets, store, retry

    def run(
        self,
        calls: Sequence[Call],
        tags_for: TagsFor,
        concurrency: int,
        timeout_s: float,
        on_result: Callable[[CallResult], None] | None = None,
    ) -> list[CallResult]:
        def context_for(call: Call, attempt: int) -> AbstractContextManager[Any]:
            tags, run_id = tags_for(call)
            return self.store.tracing_context({**tags, f"{TAG_PREFIX}attempt": str(attempt)}, run_id)

        results = run_calls(calls, self.targets, context_for, concurrency, timeout_s, on_result, self.retry)
        flush_traces()
        return results
