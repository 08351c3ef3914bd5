"""The suite's `gate` commands run forked from a preloaded interpreter (tests/gate_zygote.py): each must behave as a
fresh `python -m gate` would, or every other test's claim about the CLI would rest on a difference."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import TESTS, Project, zygote

pytestmark = pytest.mark.skipif(
    os.environ.get("GATE_TESTS_FRESH") == "1", reason="GATE_TESTS_FRESH=1: every command runs in a fresh interpreter"
)

HTTP_CANDIDATE = {"http": {"url": "http://127.0.0.1:9/${ZYGOTE_PROBE}", "output": "answer"}, "label": "v2"}


def test_a_forked_command_prints_and_exits_as_a_fresh_interpreter(project: Project) -> None:
    project.write_config()
    valid = [project.gate("validate", fresh=fresh) for fresh in (False, True)]
    assert valid[0] == valid[1]
    assert valid[0].code == 0 and "thresholds.yaml is valid" in valid[0].stderr
    project.write_config(checks=[{"metric": "latency_ms/p42x", "at_most": 1}])
    broken = [project.gate("validate", fresh=fresh) for fresh in (False, True)]
    assert broken[0] == broken[1]
    assert broken[0].code == 2 and broken[0].stdout == ""
    assert "thresholds.yaml: checks[0].metric: unknown aggregation 'p42x'" in broken[0].stderr


def test_one_commands_environment_does_not_reach_the_next(project: Project) -> None:
    project.write_config(candidate=HTTP_CANDIDATE)
    first = project.gate("validate", env={"ZYGOTE_PROBE": "x"})
    assert first.code == 0, first.stderr
    second = project.gate("validate")
    assert second.code == 2
    assert "names ${ZYGOTE_PROBE}, which is not set in the environment" in second.stderr


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs(project: Project) -> None:
    shutil.copy(TESTS / "gate_misbehaving_apps.py", project.path / "gate_misbehaving_apps.py")
    project.write_config(
        candidate={"target": "gate_misbehaving_apps:hangs_always", "label": "v2"},
        run={"repeats": 1, "max_repeats": 1, "timeout_s": 60, "isolation": "inline"},
    )
    with pytest.raises(subprocess.TimeoutExpired):
        project.gate("run", "--simulate", "--no-progress", timeout=5)
    pid = zygote().last_pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)
    after = project.gate("validate")
    assert after.code == 0, after.stderr
