"""Shards of one gate, run as separate processes at once into a real `mlflow server`, gathered into one verdict.

The shards run their versions inline (in each gate's process): what is tested is the gathering on a shared server,
and three gates at once with two worker processes each would start six more MLflow imports on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import QUESTIONS, Project
from mlflow_server import MlflowServer

pytest_plugins = ["mlflow_server"]

pytestmark = pytest.mark.run_isolation("inline")

CONFIG = {
    "cases": [{"id": f"q{i}", "inputs": {"question": q}} for i, q in enumerate(QUESTIONS)],
    "run": {"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 30},
    "checks": [
        {"metric": "error/rate", "at_most": 0.0},
        {"metric": "total_tokens/mean", "max_increase_pct": 20},
    ],
}


def test_two_shards_at_once_gather_into_one_verdict_and_a_missing_shard_is_exit_3(
    project: Project, postgres_mlflow_server: MlflowServer
) -> None:
    uri = postgres_mlflow_server.uri
    project.write_config(**CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env["MLFLOW_TRACKING_URI"] = uri
    runs = {  # session, shard: both shards of session A and only the first of session B, all at once
        ("shards-a", "1/2"),
        ("shards-a", "2/2"),
        ("shards-b", "1/2"),
    }
    procs = {
        key: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gate",
                "run",
                "--simulate",
                "--no-progress",
                "--session",
                key[0],
                "--shard",
                key[1],
            ],
            cwd=project.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key in sorted(runs)
    }
    for key, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{key}: {err[-2000:]}"

    gathered = project.gate("compare", "--session", "shards-a", "--tracking-uri", uri)
    assert gathered.code == 0, gathered.stderr
    verdict = gathered.verdict
    assert verdict["status"] == "pass"
    assert verdict["comparison"]["shards"] == ["1/2", "2/2"]
    assert verdict["mlflow"]["tracking_uri"] == uri
    assert {v: r["traces"] for v, r in verdict["variants"].items()} == {"baseline": 6, "candidate": 6}
    assert sorted(c["case_id"] for c in verdict["cases"]) == [f"q{i}" for i in range(6)]
    assert all(c["n_pairs"] == 6 for c in verdict["checks"])

    missing = project.gate("compare", "--session", "shards-b", "--tracking-uri", uri)
    assert missing.code == 3
    assert "session shards-b is incomplete: no run recorded for shard 2/2 baseline, 2/2 candidate" in missing.stderr
    assert missing.verdict["status"] == "error"
