"""A buffered trace writer: finished traces held in memory, written to a SQLAlchemy store in batches.

Per batch: ``start_trace`` for every trace in one transaction, then one ``log_spans`` per 1,000 spans: the rows
MLflow's exporter writes, at ~5 ms of CPU per trace instead of ~36 (docs/design/trace-recording.md). A failing batch
is written again trace by trace; a trace that still fails is reported on stderr and kept in ``failed``, never dropped
without a word. ``gate._recorder`` decides when this writer is used and hands it MLflow's finished traces.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["FLUSH_EVERY", "FLUSH_INTERVAL_S", "SPANS_PER_WRITE", "BufferedWriter"]

FLUSH_EVERY = 500  # traces buffered before a background flush: what a crash can lose
# Also write whatever is buffered this often, so that the writing overlaps the calls' waiting for the model instead of
# all landing at the next read (N = 100 at 100 ms: the read's flush was 1.8 s of a 9.4 s run). Calls of both versions
# are interleaved, so the CPU this takes from them falls on both alike.
FLUSH_INTERVAL_S = 0.5
SPANS_PER_WRITE = 1000  # spans per log_spans call
# A worker process (docs/design/workers.md) holds its traces until the gate asks for them between rounds, when no
# call is in flight: a write during the calls takes the GIL from them and shows up in the latency they measure.
# Up to this many: what a round may keep in memory (a few KB each) and what a worker's crash can lose.
HOLD_AT_MOST = 5000


@dataclass
class _Pending:
    trace: Any  # mlflow.entities.Trace
    prompts: Any


class BufferedWriter:
    """Finished traces held in memory and written to a SQLAlchemy store in batches; failures are reported."""

    def __init__(self, store: Any, tracking_uri: str, flush_every: int = FLUSH_EVERY) -> None:
        self.store = store
        self.tracking_uri = tracking_uri
        self.flush_every = flush_every
        self.failed: list[tuple[str, str]] = []  # (trace id, error) of traces that could not be written
        self.written = 0
        self._buffer: list[_Pending] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self.hold = False  # write only when flushed (or HOLD_AT_MOST are waiting), not every FLUSH_INTERVAL_S
        self._flusher = threading.Thread(target=self._flush_in_background, name="gate-trace-writer", daemon=True)
        self._flusher.start()

    @property
    def pending(self) -> int:
        """Traces handed over and not yet written (or reported failed)."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def add(self, trace: Any, prompts: Any = ()) -> None:
        """Called by MLflow's exporter, in the thread that ended the trace's root span: must stay cheap."""
        with self._lock:
            self._buffer.append(_Pending(trace, prompts))
            full = len(self._buffer) >= (HOLD_AT_MOST if self.hold else self.flush_every)
        if full:
            self._wake.set()

    def flush(self, deadline_s: float | None = None) -> bool:
        """Write every trace handed over so far; with a deadline, give up waiting then (the write goes on)."""
        if deadline_s is None:
            self._flush_now()
            return True
        flusher = threading.Thread(target=self._flush_now, name="gate-trace-flush", daemon=True)
        flusher.start()
        flusher.join(deadline_s)
        return not flusher.is_alive()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _flush_in_background(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._stopped:
                return
            with self._lock:
                waiting = len(self._buffer) >= HOLD_AT_MOST if self.hold else bool(self._buffer)
            if waiting:
                self._flush_now()

    def _flush_now(self) -> None:
        with self._flush_lock:
            while True:
                with self._lock:
                    chunk, self._buffer = self._buffer[: self.flush_every], self._buffer[self.flush_every :]
                    self._in_flight = len(chunk)
                if not chunk:
                    return
                failed_before = len(self.failed)
                try:
                    self._write(chunk)
                except Exception as exc:  # noqa: BLE001 - a bug of ours must not lose the chunk without a word
                    self.failed += [(p.trace.info.trace_id, f"{type(exc).__name__}: {exc}") for p in chunk]
                finally:
                    with self._lock:
                        self._in_flight = 0
                if len(self.failed) > failed_before:
                    self._report(self.failed[failed_before:])

    def _write(self, chunk: list[_Pending]) -> None:
        from mlflow.tracing.utils import add_size_stats_to_trace_metadata

        store = _with_cached_experiments(self.store)
        for item in chunk:
            add_size_stats_to_trace_metadata(item.trace)  # as the exporter does, before start_trace
        # start_trace before log_spans: the plain INSERT path (the other order takes a slow merge path).
        try:
            infos = _start_traces_together(store, [item.trace.info for item in chunk])
        except Exception:  # noqa: BLE001 - nothing was committed: again trace by trace, each in its own transaction
            infos = [self._start_trace(store, item) for item in chunk]
        started: dict[str, list[tuple[_Pending, Any]]] = {}
        for item, info in zip(chunk, infos, strict=True):
            if info is not None:
                started.setdefault(item.trace.info.experiment_id, []).append((item, info))
        for location, items in started.items():
            for batch in _batches(items):
                try:
                    store.log_spans(location, [span for item, _ in batch for span in item.trace.data.spans])
                except Exception:  # noqa: BLE001 - retried trace by trace; what still fails is reported
                    batch = [(item, info) for item, info in batch if self._log_spans(store, location, item)]
                for item, info in batch:
                    self._finish(item, info)
                    self.written += 1

    def _start_trace(self, store: Any, item: _Pending) -> Any:
        """The stored TraceInfo, or None (the failure recorded) after one retry."""
        for attempt in range(2):
            try:
                return store.start_trace(item.trace.info)
            except Exception as exc:  # noqa: BLE001 - any store failure: retry once, then report
                if attempt:
                    self.failed.append((item.trace.info.trace_id, f"start_trace: {type(exc).__name__}: {exc}"))
        return None

    def _log_spans(self, store: Any, location: str, item: _Pending) -> bool:
        try:
            store.log_spans(location, item.trace.data.spans)
            return True
        except Exception as exc:  # noqa: BLE001 - any store failure is reported
            self.failed.append((item.trace.info.trace_id, f"log_spans: {type(exc).__name__}: {exc}"))
            return False

    def _finish(self, item: _Pending, info: Any) -> None:
        """The rest of the exporter's ``_log_trace``: attachments and prompt links (both rare; neither fatal)."""
        attachments: dict[str, Any] = {}
        for span in item.trace.data.spans:
            attachments.update(getattr(span, "_attachments", None) or {})
        if not attachments and not item.prompts:
            return
        from mlflow.tracing.client import TracingClient
        from mlflow.tracing.export.utils import try_link_prompts_to_trace

        client = TracingClient(self.tracking_uri)
        try:
            if attachments:
                client._upload_attachments(info, attachments)
            try_link_prompts_to_trace(client, item.trace.info.trace_id, item.prompts, synchronous=False)
        except Exception as exc:  # noqa: BLE001 - MLflow only warns here too
            print(f"gate: warning: trace {item.trace.info.trace_id}: attachments or prompts: {exc}", file=sys.stderr)

    def _report(self, failures: list[tuple[str, str]]) -> None:
        examples = "; ".join(f"{trace_id}: {error}" for trace_id, error in failures[:3])
        print(
            f"gate: error: {len(failures)} traces could not be written to the store ({examples}); "
            "the run counts them as missing",
            file=sys.stderr,
        )


def _batches(items: list[tuple[_Pending, Any]]) -> list[list[tuple[_Pending, Any]]]:
    batches: list[list[tuple[_Pending, Any]]] = [[]]
    spans = 0
    for item in items:
        count = len(item[0].trace.data.spans)
        if batches[-1] and spans + count > SPANS_PER_WRITE:
            batches.append([])
            spans = 0
        batches[-1].append(item)
        spans += count
    return batches


class _RolledBackError(Exception):
    """A start_trace rolled the shared transaction back (its trace already existed): redo the chunk one by one."""


def _start_traces_together(store: Any, infos: list[Any]) -> list[Any]:
    """``start_trace`` for each trace in ONE transaction (half its cost: one session and commit, not one per trace).

    ``start_trace`` opens its session through ``store.ManagedSessionMaker``; a copy of the store hands it the shared
    one. If any trace raises or makes ``start_trace`` roll back (its conflict path), nothing is committed.
    """
    from sqlalchemy import event

    rolled_back: list[bool] = []
    with store.ManagedSessionMaker(read_only=False) as session:
        event.listen(session, "after_soft_rollback", lambda *_: rolled_back.append(True))
        joined = copy.copy(store)
        joined.ManagedSessionMaker = lambda read_only=True: contextlib.nullcontext(session)
        stored = [joined.start_trace(info) for info in infos]
        if rolled_back:
            raise _RolledBackError
    return stored


def _with_cached_experiments(store: Any) -> Any:
    """A copy of the store whose ``get_experiment`` is read once per flush (start_trace reads it every time).

    A copy, not a patch: other threads reading experiments through the shared store are unaffected.
    """
    cached: dict[str, Any] = {}
    read = store.get_experiment

    def get_experiment(experiment_id: str) -> Any:
        if experiment_id not in cached:
            cached[experiment_id] = read(experiment_id)
        return cached[experiment_id]

    flushing = copy.copy(store)
    flushing.get_experiment = get_experiment
    return flushing
