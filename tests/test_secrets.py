"""A planted API key never reaches any artefact of a run: stdout, stderr, the verdict file, the reports, the store."""

from __future__ import annotations

from pathlib import Path

from conftest import Project

from gate.simulator import SimulatorSettings, running_simulator

KEY = "sk-reject-planted-SECRET-7f3a9c21e4"


def test_a_key_echoed_by_the_provider_is_redacted_everywhere(project: Project) -> None:
    project.write_config()
    reports = ["markdown:out/r.md", "junit:out/j.xml", "github:out/g.txt", "html:out/r.html", "json:out/v.json"]
    with running_simulator(SimulatorSettings(base_latency_ms=0, ms_per_token=0)) as url:
        args = ["run", "--output", "out/verdict.json"]
        for report in reports:
            args += ["--report", report]
        result = project.gate(*args, env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": KEY})
    assert result.code == 3, result.stderr  # every call is rejected: an infrastructure error, not a regression
    assert "AuthenticationError" in result.verdict["error"] and "***" in result.verdict["error"]
    artefacts = {"stdout": result.stdout, "stderr": result.stderr}
    for path in (project.path / "out").iterdir():
        artefacts[path.name] = path.read_text(encoding="utf-8")
    assert set(artefacts) >= {"stdout", "stderr", "verdict.json", "r.md", "j.xml", "g.txt", "r.html", "v.json"}
    leaked = [name for name, text in artefacts.items() if KEY in text or KEY[10:] in text]
    assert leaked == []


def test_the_store_keeps_no_copy_of_the_key(project: Project) -> None:
    project.write_config()
    with running_simulator(SimulatorSettings(base_latency_ms=0, ms_per_token=0)) as url:
        project.gate("run", env={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": KEY})
    stored = b"".join(p.read_bytes() for p in Path(project.path / "store").rglob("*") if p.is_file())
    assert stored, "the run wrote no store"
    assert KEY.encode() not in stored and KEY[10:].encode() not in stored
