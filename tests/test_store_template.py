"""A new SQLite store starts as a copy of a cached, migrated empty store: real stores in tmp_path, cache in tmp_path."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.store.db.utils
import pytest

from gate._store.store import Store
from gate._store.template import CACHE_ENV, seed_new_store


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.chdir(tmp_path)  # MLflow's default experiment points at <cwd>/mlruns
    return folder


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs MLflow runs its schema migrations on (a spy: the real migrations still run)."""
    calls: list[str] = []
    real: Callable[[Any], None] = mlflow.store.db.utils._upgrade_db

    def upgrade(engine: Any) -> None:
        calls.append(str(engine.url))
        real(engine)

    monkeypatch.setattr(mlflow.store.db.utils, "_upgrade_db", upgrade)
    return calls


def uri(path: Path) -> str:
    return f"sqlite:///{path}"


def the_template(cache: Path) -> Path:
    [template] = cache.glob("empty-store-mlflow-*.db")
    return template


def revision(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        [(version,)] = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(version)


def contents(path: Path) -> tuple[list[Any], dict[str, list[Any]]]:
    """The schema and every row, with the experiments' creation and update times left out."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        # Alembic's batch migrations write a table's CHECK constraints in arbitrary order, even in two fresh stores.
        schema = sorted(
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master")
        )
        rows = {
            name: sorted(db.execute(f'SELECT * FROM "{name}"').fetchall())
            for kind, name, _ in schema
            if kind == "table"
        }
        rows["experiments"] = db.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, workspace FROM experiments"
        ).fetchall()
    return schema, rows


def test_a_new_store_is_a_working_copy_at_the_head_revision(cache: Path, tmp_path: Path) -> None:
    db = tmp_path / "ci" / "mlflow.db"
    store = Store(uri(db), "gate-test")
    head = mlflow.store.db.utils._get_latest_schema_revision()
    assert revision(db) == revision(the_template(cache)) == head
    run_id = store.start_run("gate-test-run", {"gate.session": "s1"})

    @mlflow.trace
    def agent(question: str) -> str:
        return question.upper()

    with store.tracing_context({"gate.session": "s1"}, run_id):
        agent("hello")
    mlflow.flush_trace_async_logging()
    traces = mlflow.search_traces(locations=[store.experiment_id], return_type="list")
    assert [t.info.tags["gate.session"] for t in traces] == ["s1"]
    store.finish_run(run_id, {"latency_ms/p95": 1.0}, "FINISHED")
    assert store.client.get_run(run_id).data.metrics == {"latency_ms/p95": 1.0}


def test_a_copied_store_holds_what_a_freshly_migrated_one_holds(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(uri(tmp_path / "copied" / "mlflow.db"), "gate-test")
    monkeypatch.setenv(CACHE_ENV, "")  # off: MLflow creates and migrates this one itself
    Store(uri(tmp_path / "fresh" / "mlflow.db"), "gate-test")
    copied, fresh = contents(tmp_path / "copied" / "mlflow.db"), contents(tmp_path / "fresh" / "mlflow.db")
    assert copied[0] == fresh[0]
    assert copied[1]["experiments"][0] == (0, "Default", str(tmp_path / "mlruns" / "0"), "active", "default")
    assert {t: r for t, r in copied[1].items() if t != "experiments"} == {
        t: r for t, r in fresh[1].items() if t != "experiments"
    }
    assert [e[0:2] + e[3:] for e in copied[1]["experiments"]] == [e[0:2] + e[3:] for e in fresh[1]["experiments"]]


def test_a_second_store_reuses_the_template_without_migrating(
    cache: Path, tmp_path: Path, migrations: list[str]
) -> None:
    Store(uri(tmp_path / "first.db"), "gate-test")
    assert len(migrations) == 1  # the template's, built in the cache folder
    assert str(cache) in migrations[0]
    template = the_template(cache)
    built = template.stat().st_mtime_ns
    assert seed_new_store(uri(tmp_path / "second.db")) == "copied"
    Store(uri(tmp_path / "second.db"), "gate-test")
    Store(uri(tmp_path / "third.db"), "gate-test")
    assert len(migrations) == 1
    assert template.stat().st_mtime_ns == built


def test_an_existing_store_is_left_alone(cache: Path, tmp_path: Path) -> None:
    Store(uri(tmp_path / "m.db"), "gate-test")
    before = (tmp_path / "m.db").read_bytes()
    assert seed_new_store(uri(tmp_path / "m.db")) == "not new"
    assert (tmp_path / "m.db").read_bytes() == before
    assert seed_new_store("sqlite:///:memory:") == "not new"
    assert seed_new_store("http://127.0.0.1:5000") == "not new"


def test_a_cache_dir_that_cannot_be_made_falls_back_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrations: list[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    assert seed_new_store(uri(tmp_path / "m.db")) == "unavailable"
    store = Store(uri(tmp_path / "m.db"), "gate-test")
    assert store.client.get_experiment(store.experiment_id).name == "gate-test"
    assert len(migrations) == 1  # MLflow migrated the store itself, as without a template
    assert not list(tmp_path.glob("*.tmp"))


def test_an_empty_cache_variable_turns_the_template_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "")
    assert seed_new_store(uri(tmp_path / "m.db")) == "unavailable"
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("damage", [b"garbage, not SQLite", b""])
def test_a_corrupted_template_is_built_again(cache: Path, tmp_path: Path, damage: bytes) -> None:
    Store(uri(tmp_path / "first.db"), "gate-test")
    template = the_template(cache)
    template.write_bytes(damage)
    assert seed_new_store(uri(tmp_path / "second.db")) == "built"
    assert revision(template) == revision(tmp_path / "first.db")
    store = Store(uri(tmp_path / "second.db"), "gate-test")
    assert store.experiment_id == "1"


def test_a_template_at_another_revision_is_built_again(cache: Path, tmp_path: Path) -> None:
    Store(uri(tmp_path / "first.db"), "gate-test")
    template = the_template(cache)
    with contextlib.closing(sqlite3.connect(template)) as db:
        db.execute("UPDATE alembic_version SET version_num = 'an-older-one'")
        db.commit()
    assert seed_new_store(uri(tmp_path / "second.db")) == "built"
    Store(uri(tmp_path / "second.db"), "gate-test")


OPEN_STORE = """
import sys
from gate._store import template as _store_template
from gate._store.store import Store

builds = []
real_build = _store_template._build
_store_template._build = lambda template: (builds.append(template), real_build(template))
store = Store("sqlite:///" + sys.argv[1], "gate-race")
print(store.experiment_id, len(builds))
"""


@pytest.mark.parametrize("same_store", [True, False], ids=["same-store", "two-stores"])
def test_two_gates_creating_stores_at_once_both_succeed_and_build_once(
    cache: Path, tmp_path: Path, same_store: bool
) -> None:
    paths = [tmp_path / "m.db"] * 2 if same_store else [tmp_path / "a.db", tmp_path / "b.db"]
    gates = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for path in paths
    ]
    outputs = [gate.communicate(timeout=120) for gate in gates]
    assert [gate.returncode for gate in gates] == [0, 0], [err for _, err in outputs]
    results = [out.split() for out, _ in outputs]
    assert [experiment for experiment, _ in results] == ["1", "1"]
    assert sorted(builds for _, builds in results) == ["0", "1"]
    assert revision(the_template(cache)) == revision(paths[0])
    assert not list(tmp_path.glob("*.tmp")) and not list(cache.glob("*.tmp"))
