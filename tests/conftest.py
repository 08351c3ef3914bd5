"""Shared helpers: write a gate project into a temp folder and run `gate` on it as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pytest
import yaml

TESTS = Path(__file__).parent
ROOT = TESTS.parent

QUESTIONS = [
    "How can I track my package?",
    "What's your return policy?",
    "How long does a refund take?",
    "I need help with my account login",
    "Can I cancel my subscription?",
    "Do you ship internationally?",
]


@dataclass
class GateResult:
    """What a `gate` subprocess did."""

    code: int
    stdout: str
    stderr: str

    @property
    def verdict(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]


Isolation = Literal["inline", "process"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "run_isolation(mode): the run.isolation ('inline' or 'process') that the `project` fixture's write_config "
        "writes when the test's own run settings name none; without the marker none is written and the gate's "
        "default (process: a worker process per version) applies. The closest marker wins (a test's over its "
        "module's).",
    )


@dataclass
class Project:
    """A folder with a thresholds.yaml, the test apps and its own SQLite store."""

    path: Path
    # Written as run.isolation unless the config's run settings name one; None: the gate's default (process).
    # Inline saves two worker processes per run (each imports MLflow, ~4 s of CPU): for tests about anything but the
    # workers. Tests about workers, git revisions, misbehaving apps and signals keep the default (see run_isolation).
    isolation: Isolation | None = None

    def write_config(self, **overrides: Any) -> Path:
        config: dict[str, Any] = {
            "version": 1,
            "experiment": "test-gate",
            "cases": [{"id": f"q{i}", "inputs": {"question": q}} for i, q in enumerate(QUESTIONS)],
            "baseline": {"target": "gate_test_apps:agent", "label": "v1"},
            "candidate": {"target": "gate_test_apps:agent", "label": "v2"},
            "run": {"repeats": 1, "max_repeats": 2, "concurrency": 4, "timeout_s": 30},
            "checks": [
                {"metric": "latency_ms/median", "max_increase_pct": 50},
                {"metric": "error/rate", "at_most": 0.0},
                {"metric": "total_tokens/mean", "max_increase_pct": 20},
            ],
        }
        config.update(overrides)
        run = config.get("run")
        if self.isolation is not None and isinstance(run, dict) and "isolation" not in run:
            config["run"] = {**run, "isolation": self.isolation}
        path = self.path / "thresholds.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def gate(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> GateResult:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
        full_env["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.path / 'store' / 'mlflow.db'}"
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "gate", *args],
            cwd=self.path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return GateResult(proc.returncode, proc.stdout, proc.stderr)


def isolation_of(request: pytest.FixtureRequest) -> Isolation | None:
    """The run.isolation asked for by the closest ``run_isolation`` marker of the requesting test (or module)."""
    marker = request.node.get_closest_marker("run_isolation")
    if marker is None:
        return None
    [mode] = marker.args
    if mode not in ("inline", "process"):
        raise ValueError(f"run_isolation({mode!r}): expected 'inline' or 'process'")
    return cast(Isolation, mode)


@pytest.fixture
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Project:
    shutil.copy(TESTS / "gate_test_apps.py", tmp_path / "gate_test_apps.py")
    return Project(tmp_path, isolation_of(request))
