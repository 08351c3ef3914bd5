"""A planted API key never reaches any artefact of a run: stdout, stderr, the verdict file, the reports, the store.

One run (the gate's default, a worker process per version) serves both tests: the artefacts it writes and its store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import TESTS, GateResult, Project

from gate.simulator import SimulatorSettings, running_simulator

KEY = "sk-reject-planted-SECRET-7f3a9c21e4"
REPORTS = ["markdown:out/r.md", "junit:out/j.xml", "github:out/g.txt", "html:out/r.html", "json:out/v.json"]


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, GateResult]:
    """A run whose every call the provider rejects, echoing the key; with a verdict file and every report."""
    project = Project(tmp_path_factory.mktemp("secrets"))
    shutil.copy(TESTS / "gate_test_apps.py", project.path / "gate_test_apps.py")
    project.write_config()
    with running_simulator(SimulatorSettings(base_latency_ms=0, ms_per_token=0)) as url:
        args = ["run", "--output", "out/verdict.json"]
        for report in REPORTS:
            args += ["--report", report]
        result = project.gate(*args, env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": KEY})
    return project, result


def test_a_key_echoed_by_the_provider_is_redacted_everywhere(rejected: tuple[Project, GateResult]) -> None:
    project, result = rejected
    assert result.code == 3, result.stderr  # every call is rejected: an infrastructure error, not a regression
    assert "AuthenticationError" in result.verdict["error"] and "***" in result.verdict["error"]
    artefacts = {"stdout": result.stdout, "stderr": result.stderr}
    for path in (project.path / "out").iterdir():
        artefacts[path.name] = path.read_text(encoding="utf-8")
    assert set(artefacts) >= {"stdout", "stderr", "verdict.json", "r.md", "j.xml", "g.txt", "r.html", "v.json"}
    leaked = [name for name, text in artefacts.items() if KEY in text or KEY[10:] in text]
    assert leaked == []


def test_the_store_keeps_no_copy_of_the_key(rejected: tuple[Project, GateResult]) -> None:
    project, _ = rejected
    stored = b"".join(p.read_bytes() for p in Path(project.path / "store").rglob("*") if p.is_file())
    assert stored, "the run wrote no store"
    assert KEY.encode() not in stored and KEY[10:].encode() not in stored
