"""Which writer records the traces: the buffered writer where it was verified, else MLflow's own exporter.

MLflow's exporter writes each trace to a SQL store in ~10 separate transactions (~36 ms of CPU per 2-span trace).
Here its private ``MlflowV3SpanExporter._log_trace`` / ``_export_spans_incrementally`` are hooked so that it hands
each finished trace to ``gate._buffered_writer.BufferedWriter`` instead, which writes them in batches. That is done
only for a plain SQLAlchemy store, on the MLflow releases in ``TESTED_MLFLOW``, after a one-trace self-test, and unless
the user configured MLflow's export; otherwise MLflow's exporter writes (async, one worker). ``GATE_TRACE_WRITER``
forces either. docs/design/trace-recording.md.
"""

from __future__ import annotations

import atexit
import inspect
import os
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from gate._errors import ConfigError, RunError
from gate._store.buffered_writer import BufferedWriter

__all__ = [
    "TESTED_DATABASES",
    "TESTED_MLFLOW",
    "WriterChoice",
    "default_async_export",
    "flush_traces",
    "start_recording",
    "stop_recording",
]

TESTED_MLFLOW = ((3, 17),)  # (major, minor) releases whose private exporter hooks were verified
TESTED_DATABASES = ("sqlite", "postgresql")  # SqlAlchemyStore.db_type values the writer was verified on
WRITER_ENV = "GATE_TRACE_WRITER"  # "buffered" or "mlflow" forces a writer
ASYNC_ENV = "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"
EXIT_FLUSH_S = 30.0
SELFTEST_TAG = "gate.selftest"

_state: dict[str, Any] = {"written": None, "active": None, "hooked": False, "atexit": False}


def default_async_export() -> None:
    """MLflow's exporter exports asynchronously unless the user chose; remember which, before MLflow is imported."""
    if os.environ.get(ASYNC_ENV) is None or os.environ[ASYNC_ENV] == _state["written"]:
        _set_async_export(True)


def _set_async_export(on: bool) -> None:
    _state["written"] = os.environ[ASYNC_ENV] = "true" if on else "false"


def environment_for_child() -> dict[str, str]:
    """This process's environment as the user set it: without the export setting the gate itself wrote, so a
    child process (a version's worker) chooses its writer as the gate would."""
    env = dict(os.environ)
    if not _user_chose_export():
        env.pop(ASYNC_ENV, None)
    return env


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
    if store.db_type not in TESTED_DATABASES:
        return f"the buffered writer is verified on {', '.join(TESTED_DATABASES)} only, not {store.db_type}", store
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
    stop_recording()
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
        writer = BufferedWriter(store, mlflow.get_tracking_uri())  # the URI MLflow's exporter was built with
        _state["active"] = writer
        _set_async_export(False)  # the buffer takes traces as their root span ends, in the caller's thread
        mlflow.set_experiment(experiment_id=experiment_id)  # rebuilds MLflow's exporter, which reads the setting
        problem = _self_test(writer, experiment_id)
        if problem is None:
            if not _state["atexit"]:
                atexit.register(_flush_at_exit)
                _state["atexit"] = True
            return WriterChoice("buffered", f"MLflow {mlflow.__version__}, {store.db_type} store, self-test passed")
        stop_recording()
        reason = f"the buffered writer's self-test failed: {problem}"
    if forced == "buffered":
        raise RunError(f"{WRITER_ENV}=buffered cannot be used: {reason}")
    if not _user_chose_export():
        _set_async_export(True)
        mlflow.set_experiment(experiment_id=experiment_id)
    return WriterChoice("mlflow", reason)


def hold_writes() -> None:
    """Write traces only when flushed (a worker process between rounds), if the buffered writer records them."""
    writer = _active()
    if writer is not None:
        writer.hold = True


def stop_recording() -> None:
    """Write out and switch off the buffered writer, if one is on (MLflow's exporter then writes as configured)."""
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
