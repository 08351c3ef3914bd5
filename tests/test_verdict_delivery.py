"""Exit codes mean one thing: a verdict or report that cannot be written is never exit 1 (issue: "a report or output
file that cannot be written turns a pass into exit 1"), and a closed stdout is not a crash."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import Project

INLINE = {"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 30, "isolation": "inline", "warmup": False}
CLOSED_STDOUT = "import os, sys; os.close(1); from gate._cli import entry; sys.argv[0] = 'gate'; entry()"
PASSING = [{"metric": "error/rate", "at_most": 0.0}]
FAILING = [{"metric": "total_tokens/mean", "at_most": 1}]


def test_an_unwritable_output_file_is_exit_3_said_on_stderr_and_in_the_verdict(project: Project) -> None:
    project.write_config(run=INLINE, checks=PASSING)
    (project.path / "blocker").write_text("a file where a folder should be")
    result = project.gate("run", "--simulate", "--no-progress", "--output", "blocker/verdict.json")
    assert result.code == 3
    assert (
        "gate: error: cannot write the verdict to --output blocker/verdict.json: blocker is a file, not a folder"
        in (result.stderr)
    )
    verdict = result.verdict  # still on stdout, whole, saying why the exit is 3
    assert (verdict["status"], verdict["exit_code"], verdict["reason"]) == ("error", 3, "output")
    assert verdict["checks"][0]["status"] == "pass"
    assert "Traceback" not in result.stderr


def test_an_unwritable_report_is_a_warning_and_keeps_the_exit_code(project: Project) -> None:
    project.write_config(run=INLINE, checks=FAILING)
    (project.path / "blocker").write_text("x")
    result = project.gate(
        "run", "--simulate", "--no-progress", "--report-only", "--report", "markdown:blocker/report.md"
    )
    assert result.code == 0  # --report-only: the failed check is reported, not exit 1 (and never exit 1 for a file)
    assert "gate: warning: cannot write the markdown report to blocker/report.md: blocker is a file, not a folder" in (
        result.stderr
    )
    assert result.verdict["checks"][0]["status"] == "fail"
    assert "Traceback" not in result.stderr


def test_a_closed_stdout_still_delivers_the_verdict_to_output_and_the_exit_code(project: Project) -> None:
    project.write_config(run=INLINE, checks=FAILING)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project.path / 'store' / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, "-c", CLOSED_STDOUT, "run", "--simulate", "--no-progress", "--output", "verdict.json"],
        cwd=project.path, env={**project_env(), **env}, capture_output=False, stderr=subprocess.PIPE, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the check failed: that is what the exit code says
    assert "gate: warning: cannot write the verdict to stdout" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((project.path / "verdict.json").read_text())["exit_code"] == 1


def project_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
