"""`gate` against a shared MLflow tracking server (`tracking_uri: http://...`), as with the embedded store.

A real `mlflow server` (tests/mlflow_server.py) on PostgreSQL, and on SQLite; the gate runs as a subprocess.
The SQLite-backed run and the unreachable server keep the gate's default, a worker process per version (the workers
write the traces to the server, and must stop when the server cannot be reached); the PostgreSQL-backed run and its
`gate score` run the versions inline, sparing two worker processes.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from conftest import QUESTIONS, Project
from mlflow import MlflowClient
from mlflow_server import MlflowServer, free_port

pytest_plugins = ["mlflow_server"]
ON_SERVER = pytest.mark.xdist_group("mlflow_server")  # one server per worker: its users share the worker (loadgroup)

CASES = [{"id": f"q{i}", "inputs": {"question": q}} for i, q in enumerate(QUESTIONS[:3])]
SMALL = {
    "cases": CASES,
    "run": {"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 30},
    "scorers": [{"name": "words", "target": "gate_test_apps:answer_words"}],
    "checks": [{"metric": "error/rate", "at_most": 0.0}, {"metric": "words/mean", "max_increase_pct": 50}],
}


def _session_traces(uri: str, verdict: dict[str, Any], include_spans: bool = False) -> list[Any]:
    return list(
        MlflowClient(uri).search_traces(
            locations=[verdict["mlflow"]["experiment_id"]],
            filter_string=f"tags.`gate.session` = '{verdict['mlflow']['session']}'",
            include_spans=include_spans,
            max_results=500,
        )
    )


def _run_against(project: Project, server: MlflowServer) -> dict[str, Any]:
    """`gate run` with --tracking-uri: the verdict's counts, and one trace per call in the server."""
    project.write_config(**SMALL)
    result = project.gate("run", "--simulate", "--tracking-uri", server.uri)
    assert result.code == 0, result.stderr
    verdict = result.verdict
    assert verdict["status"] == "pass"
    assert verdict["mlflow"]["tracking_uri"] == server.uri
    for variant in ("baseline", "candidate"):
        assert verdict["variants"][variant]["calls"] == verdict["variants"][variant]["traces"] == len(CASES)
    assert verdict["spend"]["calls"] == 2 * len(CASES)
    assert not (project.path / "store").exists()  # the flag beat MLFLOW_TRACKING_URI: nothing went to SQLite

    traces = _session_traces(server.uri, verdict, include_spans=True)
    assert len(traces) == verdict["spend"]["calls"]
    assert Counter(t.info.tags["gate.variant"] for t in traces) == {"baseline": 3, "candidate": 3}
    assert sorted(t.info.tags["gate.case_id"] for t in traces) == sorted(c["id"] for c in CASES for _ in range(2))
    assert all(len(t.data.spans) >= 2 for t in traces)  # the target's span and the autologged OpenAI call
    # Spans went to the server's database, not as traces.json files to its artifact store.
    assert {t.info.tags.get("mlflow.trace.spansLocation") for t in traces} == {"TRACKING_STORE"}
    return verdict


@ON_SERVER
@pytest.mark.run_isolation("inline")
def test_run_and_score_against_a_postgres_backed_server(project: Project, postgres_mlflow_server: MlflowServer) -> None:
    server = postgres_mlflow_server
    verdict = _run_against(project, server)

    # `gate score` re-reads the session from the server and writes its feedback there.
    scored = project.gate("score", "--session", verdict["mlflow"]["session"], "--tracking-uri", server.uri)
    assert scored.code == 0, scored.stderr
    assert scored.verdict["spend"]["calls"] == 0
    assert scored.verdict["scorers"]["words"]["scored"] == 2 * len(CASES)
    assert [c["candidate"] for c in scored.verdict["checks"]] == [c["candidate"] for c in verdict["checks"]]
    feedback = [
        a
        for t in _session_traces(server.uri, verdict)
        for a in t.info.assessments
        if a.source.source_id == "gate:words" and a.valid is not False
    ]
    assert len(feedback) == 2 * len(CASES)


@ON_SERVER
@pytest.mark.run_isolation("process")  # the workers write the traces to the server
def test_run_against_a_sqlite_backed_server(project: Project, sqlite_mlflow_server: MlflowServer) -> None:
    _run_against(project, sqlite_mlflow_server)


@pytest.mark.run_isolation("process")  # the workers started meanwhile must stop too
def test_an_unreachable_tracking_server_exits_3_in_one_line(project: Project) -> None:
    project.write_config(**SMALL)
    uri = f"http://gate:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = project.gate("run", "--simulate", "--tracking-uri", uri)
    elapsed = time.monotonic() - started
    assert result.code == 3, result.stderr
    assert "Traceback" not in result.stderr
    shown = uri.replace("hunter2", "***")
    message = (
        f"cannot reach the MLflow tracking server at {shown}: Connection refused; is `mlflow server` running there?"
    )
    assert message in result.stderr.splitlines()[-1]
    assert result.verdict["error"] == message and result.verdict["reason"] == "run"
    assert "hunter2" not in result.stdout + result.stderr
    assert elapsed < 60  # not MLflow's ~4 minutes of request retries
