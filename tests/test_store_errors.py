"""One line, not a traceback, when the store cannot be used: a tracking URI through a file (exit 2), an
experiment deleted in MLflow (exit 3)."""

from __future__ import annotations

import pytest
from conftest import Project


def test_a_tracking_uri_through_a_file_is_exit_2_naming_the_file(project: Project) -> None:
    project.write_config()
    (project.path / "notes.txt").write_text("a file, not a folder")
    uri = f"sqlite:///{project.path / 'notes.txt' / 'mlflow.db'}"
    result = project.gate("run", "--simulate", "--no-progress", "--tracking-uri", uri)
    assert result.code == 2, result.stderr
    assert (
        f"ConfigError: tracking URI {uri}: cannot create the store's folder {project.path / 'notes.txt'}: "
        f"{project.path / 'notes.txt'} is a file, not a folder; set tracking_uri (or --tracking-uri, "
        "MLFLOW_TRACKING_URI) to a folder you can write"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_an_experiment_deleted_in_mlflow_is_exit_3_saying_how_to_restore_it(project: Project) -> None:
    import mlflow

    (project.path / "store").mkdir()
    client = mlflow.MlflowClient(f"sqlite:///{project.path / 'store' / 'mlflow.db'}")
    experiment_id = client.create_experiment("test-gate")
    client.delete_experiment(experiment_id)
    project.write_config(run={"isolation": "inline"})
    result = project.gate("run", "--simulate", "--no-progress")
    assert result.code == 3, result.stderr
    assert (
        f"RunError: experiment 'test-gate' was deleted in MLflow (id {experiment_id}); restore it "
        f"(mlflow experiments restore --experiment-id {experiment_id}) or set another experiment"
    ) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused_with_exit_2(project: Project, uri: str) -> None:
    project.write_config(run={"isolation": "inline"})
    result = project.gate("run", "--simulate", "--no-progress", "--tracking-uri", uri)
    assert result.code == 2, result.stderr
    assert (
        f"ConfigError: tracking URI {uri}: an in-memory SQLite database is a new, empty one for every connection and "
        "process, so the gate could not read back its traces; use a file, e.g. sqlite:///.gate/mlflow.db"
    ) in result.stderr
    assert "@mlflow.trace" not in result.stderr


def test_a_reused_session_id_is_exit_2_before_any_call(project: Project) -> None:
    project.write_config(run={"isolation": "inline", "max_repeats": 1, "warmup": False})
    first = project.gate("run", "--simulate", "--no-progress", "--session", "nightly-42")
    assert first.code == 0, first.stderr
    again = project.gate("run", "--simulate", "--no-progress", "--session", "nightly-42")
    assert again.code == 2
    assert "usage: --session nightly-42: a gate run with this session id already ran in this store (MLflow run " in (
        again.stderr
    )
    assert "@mlflow.trace" not in again.stderr
