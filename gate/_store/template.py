"""Start a new SQLite MLflow store from a cached, already migrated empty one instead of migrating it from scratch.

MLflow creates a new SQLite store by running every schema migration (~1–2 s of Alembic), and a CI job starts from a
fresh checkout, so every gate run paid that. Instead, the first time, MLflow builds an empty store in a cache
folder, keyed by the MLflow, SQLAlchemy and Alembic versions (``$TRACE_GATE_CACHE_DIR``, else
``$XDG_CACHE_HOME/trace-gate``, else ``~/.cache/trace-gate``; an empty ``TRACE_GATE_CACHE_DIR`` turns this off), and
each new store path is a copy of it. MLflow then opens the copy without migrating: all its tables exist and its
Alembic revision is the head, which is checked before every copy.

The template holds everything MLflow's own store creation writes except the default experiment 0: its artifact
location is where that store was created from (``<cwd>/mlruns/0``), so it is deleted from the template and MLflow
creates it again, as for a fresh store, when it opens each copy. A fresh store and a copy are the same database
(tests/test_store_template.py compares them).

The caller holds the store's lock (``_traces._sqlite_lock``); building the template takes a lock in the cache folder,
and both the template and each copy appear under their name by an atomic rename, so concurrent gates never see half a
file. Anything that goes wrong (no home, a read-only or corrupted cache, another MLflow) only means the store is
created the slow way; a template that fails its checks is built again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Literal

__all__ = ["CACHE_ENV", "cache_dir", "seed_new_store"]

CACHE_ENV = "TRACE_GATE_CACHE_DIR"

Seeded = Literal["copied", "built", "not new", "unavailable"]


def cache_dir() -> Path | None:
    """The folder for the template, or None when it is turned off or there is no home to put it in."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit is not None:
        return Path(explicit) if explicit else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        return (Path(xdg) if xdg else Path.home() / ".cache") / "trace-gate"
    except RuntimeError:  # no HOME and no passwd entry
        return None


def seed_new_store(tracking_uri: str) -> Seeded:
    """Copy the template to a ``sqlite:///`` store path that does not exist yet; never raises.

    Returns ``"copied"`` (or ``"built"`` when the template had to be made first), ``"not new"`` when there is
    nothing to do, ``"unavailable"`` when the store is left for MLflow to create the usual way.
    """
    db_path = _new_db_path(tracking_uri)
    if db_path is None:
        return "not new"
    folder = cache_dir()
    if folder is None:
        return "unavailable"
    try:
        template, built = _usable_template(folder.resolve())
        scratch = db_path.with_name(f"{db_path.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(template, scratch)
            os.replace(scratch, db_path)
        finally:
            scratch.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - any failure leaves the store to MLflow, which creates it as it always did
        return "unavailable"
    return "built" if built else "copied"


def _new_db_path(tracking_uri: str) -> Path | None:
    """The database file of a SQLite URI when it does not exist yet (not for ``:memory:`` or URI options)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///")
    if not path or path == ":memory:" or "?" in path or Path(path).exists():
        return None
    return Path(path)


def _template_name() -> str:
    import mlflow

    versions = f"mlflow-{mlflow.__version__}-sqlalchemy-{metadata.version('sqlalchemy')}"
    return f"empty-store-{versions}-alembic-{metadata.version('alembic')}.db"


def _usable_template(folder: Path) -> tuple[Path, bool]:
    """The template, built first if it is missing or fails its checks; whether it was built."""
    template = folder / _template_name()
    head = _head_revision()
    if _is_usable(template, head):
        return template, False
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder / f"{template.name}.lock"):
        if _is_usable(template, head):  # another gate built it while this one waited
            return template, False
        _build(template)
        if not _is_usable(template, head):
            template.unlink(missing_ok=True)
            raise RuntimeError(f"the store MLflow built in {template} is not at revision {head}")
    return template, True


def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision  # what MLflow checks a store against on opening

    return str(_get_latest_schema_revision())  # type: ignore[no-untyped-call]


def _is_usable(template: Path, head: str) -> bool:
    """A sound SQLite file at the head revision with no experiment (not even the default one)."""
    if not template.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{template.as_uri()}?mode=ro", uri=True)) as db:
            sound = db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            revisions = db.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = db.execute("SELECT count(*) FROM experiments").fetchone()
    except sqlite3.Error:
        return False
    return sound and revisions == [(head,)] and experiments == (0,)


def _build(template: Path) -> None:
    """Let MLflow create and migrate a store, then drop its default experiment; rename it into place when done."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    scratch = template.with_name(f"{template.name}.{uuid.uuid4().hex}.tmp")
    try:
        store = SqlAlchemyStore(f"sqlite:///{scratch}", (template.parent / "unused").as_uri())  # type: ignore[no-untyped-call]
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(scratch)) as db:
            db.execute("DELETE FROM experiments WHERE experiment_id = 0")
            db.commit()
        os.replace(scratch, template)
    finally:
        scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` where fcntl exists; elsewhere two gates may both build (the rename is atomic)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
