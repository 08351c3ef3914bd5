"""One line, not a traceback, when the store cannot be used: a tracking URI through a file (exit 2), an
experiment deleted in MLflow (exit 3)."""

from __future__ import annotations

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
