"""How finished traces reach the store: buffered and written in batches, or by MLflow's own exporter.

MLflow's exporter writes each trace to a SQL store in ~10 separate transactions (~36 ms of CPU per 2-span trace).
The buffered writer lets the exporter hand each finished trace to memory instead (a hook on its private
``MlflowV3SpanExporter._log_trace`` / ``_export_spans_incrementally``), then writes a batch through the store's own
``start_trace`` (one per trace) and one ``log_spans`` for all their spans: the same rows, ~5 ms per trace. It is used
only where it was verified (a plain SQLAlchemy store, the MLflow versions in ``TESTED_MLFLOW``) and after a one-trace
self-test; otherwise MLflow's exporter writes (asynchronously, one worker). docs/design/trace-recording.md.
"""

from __future__ import annotations

import atexit
import copy
import inspect
import os
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from gate._errors import ConfigError, RunError

__all__ = ["TESTED_MLFLOW", "BufferedWriter", "WriterChoice", "default_async_export", "flush_traces", "start_recording"]

TESTED_MLFLOW = ((3, 17),)  # (major, minor) releases whose private exporter hooks were verified
WRITER_ENV = "GATE_TRACE_WRITER"  # "buffered" or "mlflow" forces a writer
ASYNC_ENV = "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"
FLUSH_EVERY = 500  # traces buffered before a background flush: what a crash can lose
SPANS_PER_WRITE = 1000  # spans per log_spans call
EXIT_FLUSH_S = 5.0
SELFTEST_TAG = "gate.selftest"

_state: dict[str, Any] = {"written": None, "active": None, "hooked": False, "atexit": False}


def default_async_export() -> None:
    """MLflow's exporter exports asynchronously unless the user chose; remember which, before MLflow is imported."""
    if os.environ.get(ASYNC_ENV) is None or os.environ[ASYNC_ENV] == _state["written"]:
        _set_async_export(True)


def _set_async_export(on: bool) -> None:
    _state["written"] = os.environ[ASYNC_ENV] = "true" if on else "false"


def _user_chose_export() -> bool:
    value = os.environ.get(ASYNC_ENV)
    return value is not None and value != _state["written"]


@dataclass(frozen=True)
class WriterChoice:
    """Which writer records this run's traces, and why."""

    writer: Literal["buffered", "mlflow"]
    reason: str

    def describe(self) -> str:
        if self.writer == "buffered":
            return f"traces are written by the buffered writer ({self.reason})"
        mode = "async, 1 worker" if os.environ.get(ASYNC_ENV, "").lower() in ("true", "1") else "sync"
        return f"traces are written by MLflow's exporter ({mode}): {self.reason}"


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
            full = len(self._buffer) >= self.flush_every
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
            self._wake.wait()
            self._wake.clear()
            if self._stopped:
                return
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
        started: dict[str, list[tuple[_Pending, Any]]] = {}
        for item in chunk:
            add_size_stats_to_trace_metadata(item.trace)  # as the exporter does, before start_trace
            # start_trace before log_spans: the plain INSERT path (the other order takes a slow merge path).
            info = self._start_trace(store, item)
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


def _active() -> BufferedWriter | None:
    writer: BufferedWriter | None = _state["active"]
    return writer


def _install_hooks() -> str | None:
    """Route MLflow's exporter through the active writer (once per process); the reason when it cannot."""
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter as Exporter
    from mlflow.tracing.utils import maybe_get_request_id

    if _state["hooked"]:
        return None
    expected = {
        "_log_trace": ["self", "trace", "prompts", "workspace"],
        "_export_spans_incrementally": ["self", "spans"],
    }
    for name, params in expected.items():
        found = list(inspect.signature(getattr(Exporter, name, lambda: None)).parameters)
        if found != params:
            return f"MLflow's exporter changed: {name}{tuple(found)} (expected {tuple(params)})"
    log_trace, export_spans = Exporter._log_trace, Exporter._export_spans_incrementally

    def writer_for(exporter: Any) -> BufferedWriter | None:
        writer = _active()
        if writer is None or type(exporter) is not Exporter or exporter._client.tracking_uri != writer.tracking_uri:
            return None
        return None if maybe_get_request_id(is_evaluate=True) else writer  # mlflow.genai.evaluate reads at once

    def hooked_log_trace(self: Any, trace: Any, prompts: Any, workspace: str | None = None) -> None:
        writer = writer_for(self)
        if writer is None:
            log_trace(self, trace, prompts, workspace)
        else:
            writer.add(trace, prompts)

    def hooked_export_spans(self: Any, spans: Any) -> None:
        if writer_for(self) is None:  # else the spans are written with their trace
            export_spans(self, spans)

    Exporter._log_trace = hooked_log_trace  # type: ignore[method-assign]
    Exporter._export_spans_incrementally = hooked_export_spans  # type: ignore[method-assign]
    _state["hooked"] = True
    return None


def _unsupported(tracking_uri: str, forced: bool) -> tuple[str | None, Any]:
    """Why the buffered writer cannot be used here (None if it can), and the store."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracing.client import TracingClient

    store = TracingClient(tracking_uri).store
    if type(store) is not SqlAlchemyStore:
        return f"the store is a {type(store).__name__}, not a local SQL database (SqlAlchemyStore)", store
    version = tuple(int(p) for p in mlflow.__version__.split(".")[:2] if p.isdigit())
    if not forced and version not in TESTED_MLFLOW:
        tested = ", ".join(f"{a}.{b}.x" for a, b in TESTED_MLFLOW)
        return f"MLflow {mlflow.__version__} is untested with the buffered writer (tested: {tested})", store
    return _install_hooks(), store


def _self_test(writer: BufferedWriter, experiment_id: str) -> str | None:
    """Record one two-span trace through the writer, read it back, delete it; the problem found, if any."""
    import mlflow
    from mlflow import MlflowClient

    marker = uuid.uuid4().hex
    with mlflow.tracing.context(tags={SELFTEST_TAG: marker}):
        with mlflow.start_span("gate-selftest", span_type="CHAIN") as root:
            root.set_inputs({"check": "buffered writer"})
            with mlflow.start_span("gate-selftest-child", span_type="TOOL") as child:
                child.set_outputs("ok")
            root.set_outputs("ok")
    trace_id = root.trace_id
    if writer.pending != 1:
        return "MLflow's exporter did not hand the trace to the buffer"
    writer.flush()
    client = MlflowClient(writer.tracking_uri)
    try:
        if writer.failed:
            return f"the trace could not be written: {writer.failed[0][1]}"
        trace = client.get_trace(trace_id)
        spans = {s.name: s for s in trace.data.spans}
        if (
            set(spans) != {"gate-selftest", "gate-selftest-child"}
            or spans["gate-selftest-child"].parent_id != spans["gate-selftest"].span_id
            or trace.info.tags.get(SELFTEST_TAG) != marker
            or trace.info.tags.get("mlflow.trace.spansLocation") != "TRACKING_STORE"
            or "mlflow.trace.sizeBytes" not in trace.info.trace_metadata
        ):
            return f"the trace read back differs from the one recorded: spans {sorted(spans)}, tags {trace.info.tags}"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure here means: do not trust this path
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            client.delete_traces(experiment_id, trace_ids=[trace_id])
        except Exception as exc:  # noqa: BLE001 - the trace carries no gate.session tag: no run ever counts it
            print(f"gate: warning: could not delete the self-test trace {trace_id}: {exc}", file=sys.stderr)


def start_recording(tracking_uri: str, experiment_id: str) -> WriterChoice:
    """Choose the writer for this process's traces, switch it on, and say which and why.

    Call after the store and experiment are set up and before any traced call. ``GATE_TRACE_WRITER`` forces a writer:
    ``mlflow`` always works; ``buffered`` raises ``RunError`` where it cannot work instead of falling back.
    """
    import mlflow

    forced = os.environ.get(WRITER_ENV, "").strip().lower()
    if forced not in ("", "buffered", "mlflow"):
        raise ConfigError(f"{WRITER_ENV}={forced!r}: unknown trace writer; known: buffered, mlflow")
    _stop_active()
    reason: str | None = None
    store: Any = None
    if forced == "mlflow":
        reason = f"{WRITER_ENV}=mlflow"
    elif not forced and _user_chose_export():
        reason = f"{ASYNC_ENV} is set, so MLflow's exporter runs as configured"
    else:
        try:
            reason, store = _unsupported(tracking_uri, forced == "buffered")
        except Exception as exc:  # noqa: BLE001 - MLflow internals moved: use the public path
            reason = f"{type(exc).__name__}: {exc}"
    if reason is None:
        writer = BufferedWriter(store, store_uri(tracking_uri))
        _state["active"] = writer
        _set_async_export(False)  # the buffer takes traces as their root span ends, in the caller's thread
        mlflow.set_experiment(experiment_id=experiment_id)  # rebuilds MLflow's exporter, which reads the setting
        problem = _self_test(writer, experiment_id)
        if problem is None:
            if not _state["atexit"]:
                atexit.register(_flush_at_exit)
                _state["atexit"] = True
            return WriterChoice("buffered", f"MLflow {mlflow.__version__}, SQL store, self-test passed")
        _stop_active()
        reason = f"the buffered writer's self-test failed: {problem}"
    if forced == "buffered":
        raise RunError(f"{WRITER_ENV}=buffered cannot be used: {reason}")
    if not _user_chose_export():
        _set_async_export(True)
        mlflow.set_experiment(experiment_id=experiment_id)
    return WriterChoice("mlflow", reason)


def store_uri(tracking_uri: str) -> str:
    """The tracking URI as MLflow's exporter holds it (resolved), to recognise the exporters of this store."""
    from mlflow.tracing.client import TracingClient

    return str(TracingClient(tracking_uri).tracking_uri)


def _stop_active() -> None:
    writer = _active()
    if writer is not None:
        writer.flush()
        writer.stop()
        _state["active"] = None


def flush_traces(deadline_s: float | None = None) -> bool:
    """Write out every trace recorded so far, whichever writer holds it; False if the deadline passed first."""
    writer = _active()
    if writer is not None:
        return writer.flush(deadline_s)
    if os.environ.get(ASYNC_ENV, "").lower() not in ("true", "1"):
        return True
    import mlflow

    if deadline_s is None:
        mlflow.flush_trace_async_logging()
        return True
    flusher = threading.Thread(target=mlflow.flush_trace_async_logging, name="gate-flush", daemon=True)
    flusher.start()
    flusher.join(deadline_s)
    return not flusher.is_alive()


def _flush_at_exit() -> None:
    writer = _active()
    if writer is not None and writer.pending and not writer.flush(EXIT_FLUSH_S):
        print(f"gate: error: {writer.pending} traces were still being written at exit and are lost", file=sys.stderr)
