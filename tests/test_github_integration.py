"""The GitHub integration: the workflows and the action validate, zizmor passes them, the action's steps really run."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, TESTS, Isolation, Project

GITHUB = ROOT / ".github"
ACTION_DIR = GITHUB / "actions" / "gate"
ACTION = ACTION_DIR / "action.yml"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
COMMENT_WORKFLOW = GITHUB / "workflows" / "gate-comment.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
DOCS = ROOT / "docs" / "ci.md"
BIN = Path(sys.executable).parent  # the venv the tests run in: its `gate`, check-jsonschema and zizmor
PR_NUMBER = 42

# A network access would go to this dead proxy and fail: the tools below must work offline.
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}

# The candidate of the passing run prints a workflow command, as an app echoing model output could.
PROBE_APP = """
import mlflow

from gate_test_apps import _ask


@mlflow.trace(span_type="AGENT")
def noisy_agent(question: str) -> str:
    print("::warning title=injected::printed by the app")
    return _ask(question)
"""


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: pip install -e '.[test]'")
    return str(path)


def _offline_env() -> dict[str, str]:
    return {**os.environ, **OFFLINE}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _run_scripts(document: Any) -> list[str]:
    """Every `run:` script of a workflow (all jobs) or of a composite action."""
    if "runs" in document:
        steps = document["runs"].get("steps", [])
    else:
        steps = [step for job in document["jobs"].values() for step in job.get("steps", [])]
    return [step["run"] for step in steps if "run" in step]


def _zizmor(*flags: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [
            _tool("zizmor"),
            "--offline",
            "--no-exit-codes",
            "--format",
            "json",
            *flags,
            ".github",
            ".pre-commit-hooks.yaml",
        ],
        cwd=ROOT,
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _above_low(findings: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (f["ident"], f["determinations"]["severity"], f["locations"][0]["symbolic"]["key"]["Local"]["verbatim_path"])
        for f in findings
        if f["determinations"]["severity"] not in ("Informational", "Low")
    ]


# --- schemas ---------------------------------------------------------------------------------------------------


def _check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_workflow_matches_github_schema(workflow: Path) -> None:
    proc = _check_jsonschema("vendor.github-workflows", workflow)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_matches_github_schema() -> None:
    proc = _check_jsonschema("vendor.github-actions", ACTION)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_recipe_in_docs_matches_gitlab_schema(tmp_path: Path) -> None:
    section = DOCS.read_text(encoding="utf-8").split("## GitLab CI", 1)[1]
    recipe = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert recipe is not None, "docs/ci.md has no yaml block under '## GitLab CI'"
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(recipe.group(1), encoding="utf-8")
    proc = _check_jsonschema("vendor.gitlab-ci", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- static security -------------------------------------------------------------------------------------------


def test_zizmor_finds_nothing_above_low() -> None:
    assert _above_low(_zizmor()) == []


def test_zizmor_ignore_covers_only_the_workflow_run_trigger() -> None:
    assert _above_low(_zizmor("--no-ignores")) == [("dangerous-triggers", "High", ".github/workflows/gate-comment.yml")]


@pytest.mark.parametrize("path", [ACTION, *WORKFLOWS], ids=["action.yml", *[w.name for w in WORKFLOWS]])
def test_run_scripts_interpolate_no_expressions(path: Path) -> None:
    assert [script for script in _run_scripts(_load(path)) if "${{" in script] == []


def test_comment_workflow_checks_out_nothing() -> None:
    steps = [step for job in _load(COMMENT_WORKFLOW)["jobs"].values() for step in job["steps"]]
    assert [step["uses"] for step in steps if "checkout" in step.get("uses", "")] == []


def test_comment_workflow_token_can_only_comment_and_read_artifacts() -> None:
    workflow = _load(COMMENT_WORKFLOW)
    permissions = [workflow["permissions"], *(job["permissions"] for job in workflow["jobs"].values())]
    assert permissions == [{}, {"pull-requests": "write", "actions": "read"}]


# --- pre-commit hooks ------------------------------------------------------------------------------------------


def test_validate_hook_passes_on_a_valid_project(project: Project) -> None:
    project.write_config()
    hook = next(h for h in _load(HOOKS) if h["id"] == "gate-validate")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [*shlex.split(hook["entry"]), *hook.get("args", [])],
        cwd=project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_run_hook_only_runs_on_demand() -> None:
    hook = next(h for h in _load(HOOKS) if h["id"] == "gate-run")
    assert hook["stages"] == ["manual"]


# --- the action's steps, run as a runner runs them ---------------------------------------------------------------


@dataclass
class Step:
    """What one `run:` step of the action did."""

    code: int
    log: str  # stdout and stderr together, as the runner's log shows them
    outputs: dict[str, str]
    summary: str


@dataclass
class ActionRun:
    """The gate step and the final step of one use of the action."""

    gate: Step
    result: Step


_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _evaluate(value: str, inputs: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    """The few expressions the action's `env:` may use; anything else fails the test."""

    def one(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression == "github.action_path":
            return str(ACTION_DIR)
        if m := re.fullmatch(r"inputs\.([\w-]+)", expression):
            return inputs[m.group(1)]
        if m := re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression):
            return outputs.get(m.group(1), {}).get(m.group(2), "")
        raise AssertionError(f"the test does not evaluate ${{{{ {expression} }}}}")

    return _EXPRESSION.sub(one, value)


def _read_outputs(path: Path) -> dict[str, str]:
    """A GITHUB_OUTPUT file: `name=value` lines and `name<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for body in lines:
                if body == delimiter:
                    break
                block.append(body)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def _run_action(
    workspace: Path, runner: Path, inputs: dict[str, str], step_ids: tuple[str, ...] = ("gate", "result")
) -> ActionRun:
    action = _load(ACTION)
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()} | inputs
    steps = {step.get("id"): step for step in action["runs"]["steps"]}
    temp = runner / "_temp"
    temp.mkdir()
    event = runner / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": PR_NUMBER}}), encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_", "GITHUB_", "RUNNER_"))}
    base |= {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_ACTION_PATH": str(ACTION_DIR),
        "RUNNER_TEMP": str(temp),
    }
    outputs: dict[str, dict[str, str]] = {}
    done: dict[str, Step] = {}
    for step_id in step_ids:
        step = steps[step_id]
        # The runner gives each step fresh file-command files and runs `bash --noprofile --norc -eo pipefail {0}`.
        files = {
            name: temp / f"{name.lower()}_{uuid.uuid4()}"
            for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
        }
        for path in files.values():
            path.touch()
        script = temp / f"{uuid.uuid4()}.sh"
        script.write_text(step["run"], encoding="utf-8")
        env = base | {name: str(path) for name, path in files.items()}
        env |= {name: _evaluate(str(value), values, outputs) for name, value in step.get("env", {}).items()}
        assert step["shell"] == "bash"
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        outputs[step_id] = _read_outputs(files["GITHUB_OUTPUT"])
        summary = files["GITHUB_STEP_SUMMARY"].read_text(encoding="utf-8")
        done[step_id] = Step(proc.returncode, proc.stdout, outputs[step_id], summary)
    return ActionRun(gate=done["gate"], result=done["result"])


def _project(
    tmp_path_factory: pytest.TempPathFactory, name: str, isolation: Isolation | None = "inline", **config: Any
) -> tuple[Path, Path]:
    """A workspace with the test apps and a config; its versions run inline (in the gate's process) unless
    ``isolation`` says otherwise: these tests are about the action's steps, not about where the versions run."""
    workspace = tmp_path_factory.mktemp(f"{name}-workspace")
    shutil.copy(TESTS / "gate_test_apps.py", workspace / "gate_test_apps.py")
    (workspace / "probe_app.py").write_text(PROBE_APP, encoding="utf-8")
    Project(workspace, isolation).write_config(**config)
    return workspace, tmp_path_factory.mktemp(f"{name}-runner")


FAILING = {
    "candidate": {"target": "gate_test_apps:flaky_agent", "label": "v2"},
    "checks": [{"metric": "error/rate", "at_most": 0}],
}


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> ActionRun:
    workspace, runner = _project(
        tmp_path_factory, "passing", candidate={"target": "probe_app:noisy_agent", "label": "v2"}
    )
    return _run_action(workspace, runner, {"simulate": "true"})


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> ActionRun:
    workspace, runner = _project(tmp_path_factory, "failing", **FAILING)
    return _run_action(workspace, runner, {"simulate": "true"})


@pytest.fixture(scope="module")
def report_only(tmp_path_factory: pytest.TempPathFactory) -> ActionRun:
    workspace, runner = _project(tmp_path_factory, "report-only", **FAILING)
    return _run_action(workspace, runner, {"simulate": "true", "report-only": "true"})


def test_action_sets_its_three_outputs(passing: ActionRun) -> None:
    outputs = passing.gate.outputs
    assert (
        outputs["status"],
        outputs["exit-code"],
        json.loads(Path(outputs["verdict-path"]).read_text())["status"],
    ) == (
        "pass",
        "0",
        "pass",
    ), passing.gate.log


def test_action_puts_the_markdown_table_in_the_step_summary(passing: ActionRun) -> None:
    assert "| | check | baseline | candidate | delta | interval | bound |" in passing.gate.summary, passing.gate.log


def test_action_keeps_every_report_for_the_artifact(passing: ActionRun) -> None:
    names = {p.name for p in Path(passing.gate.outputs["dir"]).iterdir()}
    expected = {"verdict.json", "gate-report.md", "gate-junit.xml", "gate-annotations.txt", "gate-report.html"}
    assert expected <= names, passing.gate.log


def test_action_records_the_pull_request_number(passing: ActionRun) -> None:
    assert (Path(passing.gate.outputs["dir"]) / "pr-number").read_text().strip() == str(PR_NUMBER)


def test_action_stops_workflow_commands_while_the_app_prints(passing: ActionRun) -> None:
    log = passing.gate.log.splitlines()
    token = next(line.removeprefix("::stop-commands::") for line in log if line.startswith("::stop-commands::"))
    injected = next(i for i, line in enumerate(log) if line.startswith("::warning title=injected::"))
    assert log.index(f"::stop-commands::{token}") < injected < log.index(f"::{token}::"), passing.gate.log


def test_action_passes_the_step_when_the_gate_passes(passing: ActionRun) -> None:
    assert passing.result.code == 0, passing.result.log


def test_action_fails_the_step_when_the_gate_fails(failing: ActionRun) -> None:
    assert (failing.gate.code, failing.result.code) == (0, 1), failing.gate.log + failing.result.log


def test_action_prints_error_annotations_where_the_runner_reads_them(failing: ActionRun) -> None:
    log = failing.gate.log.splitlines()
    token = next(line.removeprefix("::stop-commands::") for line in log if line.startswith("::stop-commands::"))
    after = log[log.index(f"::{token}::") + 1 :]
    assert [line for line in after if line.startswith("::error ")], failing.gate.log


def test_action_report_only_passes_the_step_on_a_failed_check(report_only: ActionRun) -> None:
    assert (report_only.gate.outputs["status"], report_only.result.code) == ("fail", 0), report_only.gate.log


def test_action_runs_shards_and_gathers_them_with_command_compare(tmp_path_factory: pytest.TempPathFactory) -> None:
    workspace, _ = _project(tmp_path_factory, "sharded")
    for index in (1, 2):
        shard = _run_action(
            workspace,
            tmp_path_factory.mktemp(f"shard-{index}-runner"),
            {"simulate": "true", "extra-args": f"--session ci-42 --shard {index}/2"},
        )
        assert shard.gate.code == 0, shard.gate.log
    gathered = _run_action(
        workspace, tmp_path_factory.mktemp("gather-runner"), {"command": "compare", "extra-args": "--session ci-42"}
    )
    assert gathered.gate.code == 0, gathered.gate.log
    assert gathered.gate.outputs["status"] == "pass"
    verdict = json.loads(Path(gathered.gate.outputs["verdict-path"]).read_text(encoding="utf-8"))
    assert verdict["comparison"]["shards"] == ["1/2", "2/2"]
    wrong = _run_action(workspace, tmp_path_factory.mktemp("wrong-runner"), {"command": "evaluate"})
    assert wrong.gate.code == 2
    assert "input command must be run or compare" in wrong.gate.log


def test_action_on_a_pull_request_runs_the_prs_base_as_the_baseline(tmp_path_factory: pytest.TempPathFactory) -> None:
    """actions/checkout (fetch-depth: 2) checks out the merge commit; its first parent, the base, is the baseline."""
    workspace, runner = _project(
        tmp_path_factory,
        "merge",
        None,  # the gate's default, worker processes: a baseline from a git revision needs them
        baseline=None,
        candidate={"target": "prompt_app:answer"},
        checks=[{"metric": "total_tokens/mean", "max_increase_pct": 20}],
    )
    config = yaml.safe_load((workspace / "thresholds.yaml").read_text(encoding="utf-8"))
    del config["baseline"]
    (workspace / "thresholds.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    app = (
        "import mlflow\nfrom gate_test_apps import _ask\n\n"
        "@mlflow.trace\ndef answer(question):\n    return _ask(question, system={!r})\n"
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=workspace, env=env, check=True, capture_output=True, text=True).stdout

    (workspace / ".gitignore").write_text("store/\n__pycache__/\n", encoding="utf-8")
    (workspace / "prompt_app.py").write_text(app.format("Answer briefly."), encoding="utf-8")
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    base = git("rev-parse", "HEAD").strip()
    git("checkout", "-q", "-b", "pr")
    (workspace / "prompt_app.py").write_text(app.format("Explain at length. " * 40), encoding="utf-8")
    git("commit", "-q", "-am", "a much longer prompt")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "merge pr", "pr")  # what refs/pull/N/merge is
    run = _run_action(workspace, runner, {"simulate": "true"})
    assert f"trace-gate: baseline from git revision {base}" in run.gate.log
    assert (run.gate.outputs["exit-code"], run.result.code) == ("1", 1), run.gate.log
    verdict = json.loads(Path(run.gate.outputs["verdict-path"]).read_text(encoding="utf-8"))
    assert verdict["variants"]["baseline"]["source"]["commit"] == base
    none = _run_action(
        workspace, tmp_path_factory.mktemp("merge-none-runner"), {"simulate": "true", "baseline-ref": "none"}
    )
    assert "baseline from git revision" not in none.gate.log
    assert none.gate.outputs["exit-code"] == "2", none.gate.log  # the config names no baseline: gate run says so
