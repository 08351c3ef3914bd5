"""Shared helpers: write a gate project into a temp folder and run `gate` on it as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Project:
    """A folder with a thresholds.yaml, the test apps and its own SQLite store."""

    path: Path

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


@pytest.fixture
def project(tmp_path: Path) -> Project:
    shutil.copy(TESTS / "gate_test_apps.py", tmp_path / "gate_test_apps.py")
    return Project(tmp_path)
