"""Each version in a worker process of its own: async and streaming apps, and apps that crash or hang the process.

The gate runs as a subprocess on a folder of its own, against the simulator over real HTTP and a real SQLite store;
the workers are real processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, Project

HANG_BOUND_S = 150  # a hung app must end the gate well within this


@pytest.fixture
def apps(tmp_path: Path) -> Project:
    shutil.copy(TESTS / "gate_worker_apps.py", tmp_path / "gate_worker_apps.py")
    return Project(tmp_path)


def _config(apps: Project, candidate: str, baseline: str = "agent", **run: Any) -> None:
    apps.write_config(
        cases=[
            {"id": "q0", "inputs": {"question": "Where is my parcel?"}},
            {"id": "q1", "inputs": {"question": "How long does a refund take?"}},
            {"id": "q2", "inputs": {"question": "Can I change my address?"}},
            {"id": "q3", "inputs": {"question": "Do you ship abroad?"}},
        ],
        baseline={"target": f"gate_worker_apps:{baseline}"},
        candidate={"target": f"gate_worker_apps:{candidate}"},
        run={"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 20, "warmup": False, **run},
        checks=[{"metric": "response_chars/mean", "max_increase_pct": 1000}],
    )


def _variant(verdict: dict[str, Any], name: str) -> dict[str, Any]:
    return verdict["variants"][name]  # type: ignore[no-any-return]


def test_an_async_target_is_awaited_on_one_event_loop(apps: Project) -> None:
    _config(apps, "async_agent", baseline="async_agent", repeats=2, max_repeats=2, concurrency=8)
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    for name in ("baseline", "candidate"):
        assert (_variant(result.verdict, name)["calls"], _variant(result.verdict, name)["traces"]) == (8, 8)
        assert _variant(result.verdict, name)["errors"] == 0
        assert result.verdict["metrics"][name]["total_tokens/mean"] > 0  # the OpenAI call inside is traced too


@pytest.mark.parametrize("streaming", ["streaming_agent", "async_streaming_agent"])
def test_a_streaming_target_is_consumed_and_its_time_to_first_chunk_measured(apps: Project, streaming: str) -> None:
    _config(apps, streaming, baseline=streaming)  # a non-streaming baseline has no ttft_ms: the check would be missing
    apps.write_config(
        **{
            **_read(apps),
            "checks": [{"metric": "ttft_ms/median", "at_most": 10_000}, {"metric": "error/rate", "at_most": 0}],
        }
    )
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    check = next(c for c in result.verdict["checks"] if c["metric"] == "ttft_ms/median")
    assert check["candidate"] is not None and check["candidate"] > 0
    for case in result.verdict["cases"]:
        assert case["candidate"]["output"]  # the chunks the app yielded are the answer MLflow recorded


def _read(apps: Project) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((apps.path / "thresholds.yaml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_a_worker_killed_mid_run_is_replaced_and_its_lost_calls_are_errors(apps: Project) -> None:
    _config(apps, "killed_once")
    result = apps.gate("run", "--simulate", env={"GATE_TEST_MARKER": str(apps.path / "killed.marker")})
    assert (apps.path / "killed.marker").exists()
    assert result.code in (0, 1), result.stderr  # decided: not a run error, not a hang
    candidate = _variant(result.verdict, "candidate")
    assert candidate["calls"] == 4
    assert candidate["errors"] >= 1
    assert any("WorkerDied: the candidate worker exited (exit code -9)" in e for e in candidate["first_errors"])
    assert candidate["traces"] + candidate["errors"] >= 4  # every call is a trace or a named error


def test_a_worker_that_keeps_dying_ends_the_run_with_exit_3(apps: Project) -> None:
    _config(apps, "exits_always", concurrency=1, repeats=2, max_repeats=2)  # one call at a time: a death per call
    result = apps.gate("run", "--simulate", timeout=HANG_BOUND_S)
    assert result.code == 3, result.stderr
    assert "the candidate worker was lost 4 times in this run (last: exit code 7)" in result.verdict["error"]
    assert "Traceback" not in result.stderr


def test_a_worker_whose_interpreter_hangs_is_replaced_and_the_run_ends(apps: Project) -> None:
    _config(apps, "holds_the_interpreter", timeout_s=3)
    result = apps.gate("run", "--simulate", timeout=HANG_BOUND_S)
    assert "the candidate worker stopped responding (no heartbeat" in result.stderr
    candidate = _variant(result.verdict, "candidate")
    assert candidate["errors"] >= 1
    assert result.code in (0, 1, 3), result.stderr


def test_what_the_app_writes_to_fd_1_goes_to_stderr_not_into_the_verdict(apps: Project) -> None:
    _config(apps, "writes_to_fd_1")
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert result.verdict["status"] == "pass"  # stdout parses as the verdict alone
    assert "raw bytes on fd 1 from the app" in result.stderr and "print() from the app" in result.stderr


def test_inline_isolation_runs_both_versions_in_the_gates_process(apps: Project) -> None:
    _config(apps, "agent", isolation="inline")
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert "worker process" not in result.stderr


def test_a_version_can_run_in_another_interpreter(apps: Project) -> None:
    import sys

    _config(apps, "agent")
    config = _read(apps)
    config["baseline"]["python"] = sys.executable  # e.g. a venv built from the base branch's requirements
    apps.write_config(**config)
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    missing = {**config, "baseline": {**config["baseline"], "python": "venvs/base/bin/python"}}
    apps.write_config(**missing)
    result = apps.gate("run", "--simulate")
    assert result.code == 2
    assert "thresholds.yaml: baseline.python: 'venvs/base/bin/python' is not an executable Python interpreter" in (
        result.stderr
    )


def test_an_app_that_points_mlflow_elsewhere_at_import_still_records_into_the_gates_store(apps: Project) -> None:
    elsewhere = apps.path / "production.db"
    (apps.path / "prod_app.py").write_text(
        "import mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{elsewhere}')  # the app's production server\n"
        "from gate_worker_apps import agent\n",
        encoding="utf-8",
    )
    _config(apps, "agent")
    config = _read(apps)
    config["candidate"] = {"target": "prod_app:agent"}
    apps.write_config(**config)
    result = apps.gate("run", "--simulate")
    assert result.code == 0, result.stderr
    assert _variant(result.verdict, "candidate")["traces"] == 4
    assert f"gate: the app sets MLflow's tracking URI to sqlite:///{elsewhere} when imported" in result.stderr
    assert not elsewhere.exists()


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_forked_worker_looks_from_inside_as_a_fresh_interpreter_does(apps: Project, start: str) -> None:
    # By default a worker is forked from a copy of the gate made with MLflow imported (gate/_run/forkserver.py);
    # GATE_WORKER_START=exec starts each as `python -c`. The app must not be able to tell them apart.
    _config(apps, "reports_its_process", baseline="reports_its_process")
    env = {"GATE_TEST_MARKER": "seen by the app", **({"GATE_WORKER_START": "exec"} if start == "exec" else {})}
    result = apps.gate("run", "--simulate", env=env)
    assert result.code == 0, result.stderr
    forked = "each version runs in a worker process of its own, forked with MLflow already imported"
    assert (forked in result.stderr) == (start == "fork"), result.stderr
    answers = {json.dumps(c[v]["output"]) for c in result.verdict["cases"] for v in ("baseline", "candidate")}
    assert len(answers) == 1, answers
    assert json.loads(json.loads(answers.pop())) == {
        "argv": ["-c"],
        "cwd": str(apps.path),
        "fd_1_is_stderr": True,
        "marker": "seen by the app",
        "path0": str(apps.path),  # the search path the gate gives the target, first
        "pipes_beyond_stdio": 1,
        "sigint_ignored": True,
        "sigterm_default": True,
        "stdin_is_a_pipe": True,
        "unbuffered": "1",
    }


def test_a_fork_server_that_dies_leaves_the_next_workers_to_fresh_interpreters(apps: Project) -> None:
    _config(apps, "kills_its_fork_server")
    result = apps.gate("run", "--simulate", env={"GATE_TEST_MARKER": str(apps.path / "killed.marker")})
    assert (apps.path / "killed.marker").read_text(encoding="utf-8") == "server killed"
    assert result.code in (0, 1), result.stderr  # decided: not a run error
    assert "gate: cannot fork a worker (" in result.stderr
    assert "starting a fresh interpreter instead" in result.stderr
    candidate = _variant(result.verdict, "candidate")
    assert candidate["calls"] == 4
    assert any("WorkerDied: the candidate worker exited (exit code -9)" in e for e in candidate["first_errors"])
    assert candidate["traces"] + candidate["errors"] >= 4


FORK_PROBE = """
import threading, sys
from gate._run.forkserver import ForkServer
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()
server = ForkServer.start(("json",))
print("forks" if server is not None else "no fork server")
if server is not None:
    server.close()
"""


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        ("none", {}, "forks"),
        ("thread", {}, "no fork server"),  # a copy of a process with threads would hold locks nobody releases
        ("none", {"GATE_WORKER_START": "exec"}, "no fork server"),
    ],
)
def test_the_fork_server_is_made_only_from_a_process_without_threads(
    setting: str, env: dict[str, str], expected: str
) -> None:
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", FORK_PROBE, setting],
        env={**{k: v for k, v in os.environ.items() if k != "GATE_WORKER_START"}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, expected, "")
