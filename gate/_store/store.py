"""Everything that talks to MLflow: the store, the experiment, one run per version, and reading traces back.

MLflow is imported lazily (it costs ~2 s), after ``prepare_environment`` has set what must be set
before import: telemetry off, and an exporter that neither drops traces nor distorts their durations
(docs/design/trace-recording.md).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gate._errors import ConfigError, RunError
from gate._secrets import redact_uri
from gate._store.recording import WriterChoice, default_async_export, start_recording

__all__ = ["TAG_PREFIX", "Store", "absolute_tracking_uri", "open_store", "prepare_environment", "resolve_tracking_uri"]

TAG_PREFIX = "gate."


def prepare_environment() -> None:
    """Set MLflow's environment before it is imported; explicit user settings win."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's judges fetch a model catalog from the internet on first use (~7 s of retries offline) before
    # falling back to the copy they ship; the gate uses the shipped one.
    os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    # Where the buffered writer cannot be used (Store.start_recording), MLflow's exporter writes: off the calls'
    # critical path, by one worker (several race and upload stray traces.json), through a queue far larger than any
    # run, flushed before every read; the count check still catches any trace that does not land
    # (docs/design/trace-recording.md).
    default_async_export()
    os.environ.setdefault("MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS", "1")
    os.environ.setdefault("MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE", "1000000")


def absolute_tracking_uri(uri: str) -> str:
    """A SQLite URI with an absolute path (a worker runs in another folder, e.g. a git revision's checkout)."""
    if not uri.startswith("sqlite:///"):
        return uri
    path = Path(uri.removeprefix("sqlite:///"))
    return uri if path.is_absolute() or str(path) == ":memory:" else f"sqlite:///{path.resolve()}"


def resolve_tracking_uri(flag: str | None, config_value: str | None, default: str) -> str:
    """Precedence: --tracking-uri, then MLFLOW_TRACKING_URI, then the config, then the default."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or config_value or default


API_PROBE_S = 15.0  # one read of a tracking server's API before the run, bounded (MLflow's own wait is minutes)


class Store:
    """An MLflow tracking store with the gate's experiment selected."""

    def __init__(self, tracking_uri: str, experiment: str, create: bool = True) -> None:
        import mlflow
        from mlflow import MlflowClient

        from gate._store.template import seed_new_store

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # migrations and flush notices are noise here
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if tracking_uri.rstrip("/") in ("sqlite:", "sqlite://", "sqlite:///:memory:"):
            raise ConfigError(
                f"tracking URI {tracking_uri}: an in-memory SQLite database is a new, empty one for every connection "
                "and process, so the gate could not read back its traces; use a file, e.g. sqlite:///.gate/mlflow.db"
            )
        if tracking_uri.startswith("sqlite:///") and not create:
            db_path = Path(tracking_uri.removeprefix("sqlite:///"))
            if not db_path.is_file():
                raise RunError(
                    f"no MLflow store at {db_path}: the file does not exist; point --tracking-uri (or tracking_uri, "
                    "MLFLOW_TRACKING_URI) at the store the traces were recorded in"
                )
        elif tracking_uri.startswith("sqlite:///"):
            db_path = Path(tracking_uri.removeprefix("sqlite:///"))
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                blocking = next((p for p in db_path.parents if p.is_file()), None)
                why = f"{blocking} is a file, not a folder" if blocking else exc.strerror or str(exc)
                raise ConfigError(
                    f"tracking URI {redact_uri(tracking_uri)}: cannot create the store's folder {db_path.parent}: "
                    f"{why}; set tracking_uri (or --tracking-uri, MLFLOW_TRACKING_URI) to a folder you can write"
                ) from None
        self.tracking_uri = tracking_uri
        self.writer: WriterChoice | None = None  # set by start_recording
        mlflow.set_tracking_uri(tracking_uri)
        self._require_reachable()
        try:
            # Two gates opening a new SQLite store at once race in MLflow's schema migrations and in creating
            # the experiment; a file lock next to the database serialises just this part.
            with _sqlite_lock(tracking_uri):
                if create:
                    seed_new_store(tracking_uri)  # a new SQLite store starts as a copy of a migrated one (~1.5 s less)
                self.client = MlflowClient(tracking_uri)
                self.experiment_id = self._experiment(experiment, create)
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is a run error, reported in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunError(f"cannot open the MLflow store at {redact_uri(tracking_uri)}: {first}") from None
        mlflow.set_experiment(experiment_id=self.experiment_id)

    def _experiment(self, name: str, create: bool) -> str:
        """The experiment's id, creating it if needed (and ``create``). On a shared server another gate (a shard) may
        create it between our lookup and our create: then the create fails as a duplicate and the lookup finds it."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise RunError(
                f"experiment '{name}' was deleted in MLflow (id {found.experiment_id}); restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or set another experiment"
            )
        if found is not None:
            return str(found.experiment_id)
        if not create:
            raise RunError(
                f"no experiment named '{name}' at {redact_uri(self.tracking_uri)}, so no traces to read; set "
                "'experiment' in the config to the one the traces were recorded in"
            )
        try:
            return str(self.client.create_experiment(name, artifact_location=self._artifact_location()))
        except MlflowException as exc:
            if (
                exc.error_code != "RESOURCE_ALREADY_EXISTS"
                or (found := self.client.get_experiment_by_name(name)) is None
            ):
                raise
            return str(found.experiment_id)

    def _require_reachable(self) -> None:
        """Fail in seconds when nothing answers at an http(s) URI, not after MLflow's ~4 min of request retries."""
        import ssl
        import urllib.error
        import urllib.request

        parts = urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https"):
            return
        where = f"cannot reach the MLflow tracking server at {redact_uri(self.tracking_uri)}"
        try:
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            netloc = f"{host}:{parts.port}" if parts.port else str(host)  # no user:password: MLflow sends those
            health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
            urllib.request.urlopen(health, timeout=10).close()
            # A server can answer /health and hang on its API (a stuck database): MLflow would then wait 120 s per
            # request, retried 7 times, per request. One API read, bounded, says so in seconds.
            search = parts.path.rstrip("/") + "/api/2.0/mlflow/experiments/search"
            api = urlunsplit((parts.scheme, netloc, search, "max_results=1", ""))
            try:
                urllib.request.urlopen(api, timeout=API_PROBE_S).close()
            except TimeoutError:
                raise RunError(
                    f"{where}: it answers /health but its API gave no answer within {API_PROBE_S:g} s (is its "
                    "database reachable?)"
                ) from None
        except urllib.error.HTTPError:
            return  # something answered (a 401, a proxy, a path prefix): MLflow's own requests say what is wrong
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                return  # MLflow has its own TLS settings (MLFLOW_TRACKING_SERVER_CERT_PATH, ..._INSECURE_TLS)
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise RunError(f"{where}: {reason}; is `mlflow server` running there?") from None
        except TimeoutError:
            raise RunError(f"{where}: no answer within 10 s") from None
        except (OSError, ValueError) as exc:
            raise RunError(f"{where}: {exc}") from None

    def _artifact_location(self) -> str | None:
        # Keep artifacts next to a local database, not in ./mlruns of whatever folder CI runs in.
        if self.tracking_uri.startswith("sqlite:///"):
            folder = Path(self.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"
            return folder.as_uri()
        return None

    def start_run(self, name: str, tags: Mapping[str, str]) -> str:
        """Create an MLflow run (not made active: calls run in many threads) and return its id."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        return str(run.info.run_id)

    def finish_run(self, run_id: str, metrics: Mapping[str, float | None], status: str) -> None:
        """Log the version's aggregated metrics to its run and close it."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = [Metric(key, float(v), now, 0) for key, v in metrics.items() if v is not None]
        if logged:
            self.client.log_batch(run_id, metrics=logged)
        self.client.set_terminated(run_id, status=status)

    @staticmethod
    def tracing_context(tags: Mapping[str, str], run_id: str | None) -> AbstractContextManager[Any]:
        """Tags and run link for every trace created inside (MLflow's public ``tracing.context``)."""
        import mlflow

        return mlflow.tracing.context(tags=dict(tags), metadata={"mlflow.sourceRun": run_id} if run_id else None)

    def start_recording(self) -> WriterChoice:
        """Choose and switch on the writer of this run's traces (buffered, or MLflow's exporter); say which on stderr.

        Call before the first traced call. docs/design/trace-recording.md.
        """
        self.writer = start_recording(self.tracking_uri, self.experiment_id)
        print(f"gate: {self.writer.describe()}", file=sys.stderr)
        return self.writer


@contextmanager
def _sqlite_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` for a SQLite store (no-op elsewhere, and where fcntl is missing)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent first runs may race there
        yield
        return
    lock_path = Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_store(tracking_uri: str, experiment: str, create: bool = True) -> Store:
    """Open the store and the experiment, creating either if needed; ``create=False`` (commands that read what is
    recorded): a missing SQLite file or experiment is a ``RunError`` instead, and nothing is written."""
    return Store(tracking_uri, experiment, create)
