"""Versions that are deployed HTTP endpoints: real servers on loopback (tests/gate_endpoint_server.py), traced with
MLflow into the gate's store and answering through the simulator over real HTTP, called by `gate run`."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, Project

from gate.simulator import SimulatorSettings, running_simulator

SECRET = "staging-token-3f9a1c77e2"


@dataclass
class Deployment:
    """A tracking store, the simulator, and the servers started on it."""

    folder: Path
    store_uri: str
    simulator_url: str
    procs: list[subprocess.Popen[str]]

    def serve(self, *args: str, join: bool = True, token: str | None = None) -> str:
        """Start a server; its URL once it listens. ``join=False`` leaves MLflow's default span processor on."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
        env |= {"OPENAI_BASE_URL": self.simulator_url, "OPENAI_API_KEY": "sk-test-not-real"}
        if join:
            env["MLFLOW_USE_BATCH_SPAN_PROCESSOR"] = "false"
        if token:
            env["ENDPOINT_TOKEN"] = token
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "gate_endpoint_server.py"), "--tracking-uri", self.store_uri,
             "--experiment", "test-gate", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until it listens (or dies: then the line is empty)
        assert line.startswith("port="), f"the test server did not start: {line!r}"
        return f"http://127.0.0.1:{line.strip().removeprefix('port=')}/answer"

    def project(self, tmp_path: Path) -> Project:
        return Project(tmp_path)

    def gate(self, project: Project, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> Any:
        return project.gate(*args, env={"MLFLOW_TRACKING_URI": self.store_uri, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("deployment")
    with running_simulator(SimulatorSettings(seed=3)) as url:
        d = Deployment(folder, f"sqlite:///{folder / 'mlflow.db'}", url, [])
        try:
            yield d
        finally:
            for proc in d.procs:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def production(deployment: Deployment) -> str:
    return deployment.serve("--max-tokens", "40")


@pytest.fixture(scope="module")
def staging(deployment: Deployment) -> str:
    return deployment.serve("--max-tokens", "90", "--delay-ms", "20", token=SECRET)


def http_config(project: Project, baseline: dict[str, Any], candidate: dict[str, Any], **more: Any) -> Path:
    return project.write_config(
        baseline={"label": "production", "http": baseline},
        candidate={"label": "staging", "http": candidate},
        **more,
    )


def test_staging_vs_production_joins_the_servers_spans_and_keeps_the_token_secret(
    deployment: Deployment, production: str, staging: str, tmp_path: Path
) -> None:
    project = deployment.project(tmp_path)
    http_config(
        project,
        {"url": production, "output": "answer"},
        {"url": staging, "output": "answer", "headers": {"Authorization": "Bearer ${STAGING_TOKEN}"}},
        run={"repeats": 2, "max_repeats": 2, "concurrency": 4, "timeout_s": 30},
        checks=[
            {"metric": "output_tokens/mean", "max_increase_pct": 20},
            {"metric": "error/rate", "at_most": 0.0},
        ],
    )
    report = tmp_path / "report.md"
    result = deployment.gate(project, "run", "--report", f"markdown:{report}", env={"STAGING_TOKEN": SECRET})

    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["variants"]["baseline"]["kind"] == "http"
    assert verdict["variants"]["baseline"]["url"] == production
    assert verdict["variants"]["candidate"]["url"] == staging
    assert verdict["variants"]["candidate"]["errors"] == 0  # the token reached the server: no 401
    tokens = next(c for c in verdict["checks"] if c["metric"] == "output_tokens/mean")
    assert tokens["status"] == "fail" and tokens["candidate"] > tokens["baseline"]

    import mlflow

    client = mlflow.MlflowClient(deployment.store_uri)
    session = verdict["mlflow"]["session"]
    experiment = client.get_experiment_by_name("test-gate").experiment_id
    traces = client.search_traces(
        locations=[experiment], filter_string=f"tags.`gate.session` = '{session}'", max_results=100
    )
    assert len(traces) == 24  # 6 cases x 2 repeats x 2 versions, each one trace
    for trace in traces:
        names = [s.name for s in trace.data.spans]
        assert names[0] == "POST /answer"  # the gate's own span is the root ...
        assert {"support_service", "Completions"} <= set(names)  # ... with the server's spans under it
        usage = trace.info.token_usage
        assert usage and usage["output_tokens"] > 0
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.attributes["http.response.status_code"] == 200

    written = [result.stdout, result.stderr, report.read_text()]
    assert all(SECRET not in text for text in written)
    for db in (Path(deployment.store_uri.removeprefix("sqlite:///")), tmp_path / "store" / "mlflow.db"):
        if db.exists():
            assert SECRET.encode() not in db.read_bytes()
            with sqlite3.connect(db) as conn:  # also every text in the store, in case the file were compressed
                for (value,) in conn.execute("SELECT value FROM tags UNION ALL SELECT value FROM trace_tags"):
                    assert SECRET not in str(value)


def test_a_header_naming_an_unset_variable_is_exit_2_before_any_call(
    deployment: Deployment, production: str, tmp_path: Path
) -> None:
    project = deployment.project(tmp_path)
    http_config(
        project, {"url": production}, {"url": production, "headers": {"Authorization": "Bearer ${NOT_SET_TOKEN}"}}
    )
    result = deployment.gate(project, "run")
    assert result.code == 2, result.stderr
    assert (
        "thresholds.yaml: candidate.http.headers.Authorization: names ${NOT_SET_TOKEN}, which is not set in the "
        "environment; set it (a CI secret) or remove it"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    validated = deployment.gate(project, "validate")
    assert validated.code == 2 and "NOT_SET_TOKEN" in validated.stderr


def test_a_body_template_naming_an_input_no_case_has_is_exit_2(
    deployment: Deployment, production: str, tmp_path: Path
) -> None:
    project = deployment.project(tmp_path)
    http_config(project, {"url": production}, {"url": production, "body": {"q": "{{ inputs.qestion }}", "lang": "en"}})
    result = deployment.gate(project, "validate")
    assert result.code == 2
    assert (
        "thresholds.yaml: candidate.http.body: names input 'qestion', which case 'q0' does not have "
        "(its inputs: question)"
    ) in result.stderr


def test_an_endpoint_answering_500_is_an_error_data_point_named_in_the_verdict(
    deployment: Deployment, production: str, tmp_path: Path
) -> None:
    broken = deployment.serve("--mode", "error500")
    project = deployment.project(tmp_path)
    http_config(
        project,
        {"url": production, "output": "answer"},
        {"url": broken, "output": "answer"},
        run={"repeats": 1, "max_repeats": 1, "retries": 1, "retry_backoff_s": 0, "isolation": "inline"},
        checks=[{"metric": "error/rate", "max_increase": 0.1}],
    )
    result = deployment.gate(project, "run")
    assert result.code == 1, result.stderr
    candidate = result.verdict["variants"]["candidate"]
    assert candidate["errors"] == 6 and candidate["retries"] == 6  # 500 is transient: retried once, then counted
    assert candidate["first_errors"] == [f'EndpointError: {broken}: HTTP 500: {{"error": "internal error"}}']
    assert result.verdict["variants"]["baseline"]["errors"] == 0


def test_a_hanging_endpoint_gives_timed_out_data_points_within_the_timeout(
    deployment: Deployment, production: str, tmp_path: Path
) -> None:
    hanging = deployment.serve("--mode", "hang")
    project = deployment.project(tmp_path)
    http_config(
        project,
        {"url": production, "output": "answer"},
        {"url": hanging, "output": "answer", "timeout_s": 1.5},
        run={"repeats": 1, "max_repeats": 1, "retries": 0, "concurrency": 12, "isolation": "inline", "warmup": False},
        checks=[{"metric": "error/rate", "max_increase": 0.1}],
    )
    started = time.monotonic()
    result = deployment.gate(project, "run", timeout=120)  # the test's own bound: a hang fails it, never blocks CI
    assert result.code == 1, result.stderr
    assert result.verdict["variants"]["candidate"]["first_errors"] == [
        f"EndpointUnreachableError: {hanging}: no answer within 1.5 s"
    ]
    assert time.monotonic() - started < 100


def test_a_refused_endpoint_stops_the_run_in_seconds_naming_it(deployment: Deployment, tmp_path: Path) -> None:
    with __import__("socket").socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/answer"
        project = deployment.project(tmp_path)
        http_config(project, {"url": closed}, {"url": closed}, run={"isolation": "inline"})
        result = deployment.gate(project, "run", timeout=60)
    assert result.code == 3
    assert f"thresholds.yaml: baseline.http.url: cannot connect to {closed}: Connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_spans_lost_under_mlflows_default_span_processor_are_reported_not_miscounted(
    deployment: Deployment, production: str, tmp_path: Path
) -> None:
    # MLflow's default (batched) span processor exports the server's spans after the request's trace context is
    # gone, and drops them without a word: this pins that behaviour, and that the gate says so.
    unjoined = deployment.serve("--max-tokens", "40", join=False)
    project = deployment.project(tmp_path)
    http_config(
        project,
        {"url": production, "output": "answer", "server_spans": "required"},
        {"url": unjoined, "output": "answer", "server_spans": "required"},
        run={"repeats": 1, "max_repeats": 1, "isolation": "inline"},
        checks=[{"metric": "output_tokens/mean", "max_increase_pct": 50}],
    )
    result = deployment.gate(project, "run")
    assert result.code == 3, result.stderr
    # how many are lost depends on when the batch was exported: all, most of the time
    found = re.search(r"candidate \(staging\): (\d) of 6 traces have no spans from the server", result.stderr)
    assert found is not None and int(found[1]) >= 1, result.stderr
    assert (
        "(the server's spans did not join the gate's traces); a server traced with MLflow must log to the gate's "
        "tracking store with MLFLOW_USE_BATCH_SPAN_PROCESSOR=false (docs/versions.md), or set http.server_spans: off"
    ) in result.stderr
    assert "baseline (production)" not in result.stderr  # the joined one is whole
