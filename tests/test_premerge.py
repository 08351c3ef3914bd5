"""Pre-merge gating: the baseline is a git revision's code, each version runs in a worker process of its own.

Real git repositories built in each test, real worker processes, the simulator over real HTTP, a real SQLite store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import GateResult, Project, sigint_as_a_terminal_delivers_it

APP = """
import mlflow
import openai

PROMPT = {prompt!r}
client = openai.OpenAI()


@mlflow.trace
def answer(question: str) -> str:
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{{"role": "system", "content": PROMPT}}, {{"role": "user", "content": question}}],
    )
    return r.choices[0].message.content
"""
SHORT = "Answer briefly."
LONG = "You are a support agent. " + "Be thorough, friendly and precise, and explain every step in detail. " * 12

# Five or more: a check over cases needs at least 5 to be decided (gate/_decide/checks.py MIN_CASES).
QUESTIONS = [
    "Where is my parcel?",
    "How do refunds work?",
    "Can I change my address?",
    "Do you ship abroad?",
    "Can I cancel my order?",
]


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def write_config(repo: Path, **run: Any) -> None:
    config = {
        "version": 1,
        "experiment": "premerge",
        "cases": [{"id": f"q{i}", "inputs": {"question": q}} for i, q in enumerate(QUESTIONS)],
        "candidate": {"target": "app:answer"},
        "run": {"repeats": 1, "max_repeats": 1, "concurrency": 4, "timeout_s": 30, **run},
        "checks": [{"metric": "total_tokens/mean", "max_increase_pct": 20}, {"metric": "error/rate", "at_most": 0}],
    }
    (repo / "thresholds.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Project:
    """A repository whose app's prompt grew in the last commit (HEAD~1: short prompt, HEAD: long prompt)."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text("store/\n__pycache__/\n", encoding="utf-8")
    (root / "app.py").write_text(APP.format(prompt=SHORT), encoding="utf-8")
    write_config(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "app")
    (root / "app.py").write_text(APP.format(prompt=LONG), encoding="utf-8")
    git(root, "commit", "-q", "-am", "longer prompt")
    return Project(root)


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def traces_by_variant(repo: Project, session: str) -> dict[str, list[Any]]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo.path / 'store' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("premerge")
    found = client.search_traces(
        locations=[experiment.experiment_id], filter_string=f"tags.`gate.session` = '{session}'", max_results=500
    )
    out: dict[str, list[Any]] = {}
    for trace in found:
        out.setdefault(trace.info.tags["gate.variant"], []).append(trace)
    return out


def test_baseline_ref_head_1_catches_the_changed_prompt_and_each_version_has_its_own_commit(repo: Project) -> None:
    head, parent = git(repo.path, "rev-parse", "HEAD"), git(repo.path, "rev-parse", "HEAD~1")
    result = repo.gate("run", "--simulate", "--baseline-ref", "HEAD~1")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    tokens = next(c for c in verdict["checks"] if c["metric"] == "total_tokens/mean")
    assert tokens["status"] == "fail"
    assert verdict["variants"]["baseline"]["source"] == {
        "kind": "git revision",
        "ref": "HEAD~1",
        "commit": parent,
        "dirty": False,
        "diff_sha256": None,
        "tree": git(repo.path, "rev-parse", "HEAD~1^{tree}"),
    }
    candidate = verdict["variants"]["candidate"]["source"]
    assert (candidate["kind"], candidate["commit"], candidate["dirty"]) == ("working tree", head, False)
    assert verdict["fingerprint"]  # dataset and scorers; the code part is on the MLflow runs
    traces = traces_by_variant(repo, verdict["mlflow"]["session"])
    assert {t.info.trace_metadata.get("mlflow.source.git.commit") for t in traces["baseline"]} == {parent}
    assert {t.info.trace_metadata.get("mlflow.source.git.commit") for t in traces["candidate"]} == {head}
    assert len(traces["baseline"]) == len(traces["candidate"]) == len(QUESTIONS)
    assert worktrees(repo.path) == [f"worktree {repo.path}"]


def test_baseline_ref_head_passes_and_leaves_no_checkout(repo: Project) -> None:
    result = repo.gate("run", "--simulate", "--baseline-ref", "HEAD")
    assert result.code == 0, result.stderr
    assert result.verdict["status"] == "pass"
    assert worktrees(repo.path) == [f"worktree {repo.path}"]


def test_the_config_can_name_the_ref_and_an_untracked_change_is_the_candidate(repo: Project) -> None:
    """baseline: {ref: HEAD} with the working tree changed (not committed): the change is what is gated."""
    config = yaml.safe_load((repo.path / "thresholds.yaml").read_text(encoding="utf-8"))
    config["baseline"] = {"ref": "HEAD", "label": "main"}
    (repo.path / "thresholds.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (repo.path / "app.py").write_text(APP.format(prompt=LONG + LONG), encoding="utf-8")  # not committed
    result = repo.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    source = result.verdict["variants"]["candidate"]["source"]
    assert source["dirty"] is True and len(source["diff_sha256"]) == 16
    assert result.verdict["variants"]["baseline"]["label"] == "main"


def test_an_unknown_ref_is_a_config_error_naming_the_fix(repo: Project) -> None:
    result = repo.gate("run", "--simulate", "--baseline-ref", "no-such-branch")
    assert result.code == 2
    assert "--baseline-ref no-such-branch: unknown revision in" in result.stderr
    assert "git fetch origin no-such-branch" in result.stderr
    assert result.verdict["status"] == "error" and result.verdict["exit_code"] == 2


def test_a_shallow_clone_names_fetch_depth(repo: Project, tmp_path: Path) -> None:
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow)], check=True, capture_output=True
    )
    result = Project(shallow).gate("run", "--simulate", "--baseline-ref", "HEAD~1")
    assert result.code == 2
    assert "shallow" in result.stderr and "fetch-depth" in result.stderr


def test_a_target_missing_at_the_revision_says_how_to_skip(repo: Project) -> None:
    """A pull request that adds the app: the base revision has no such module."""
    config = yaml.safe_load((repo.path / "thresholds.yaml").read_text(encoding="utf-8"))
    config["candidate"] = {"target": "newapp:answer"}
    (repo.path / "thresholds.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (repo.path / "newapp.py").write_text(APP.format(prompt=SHORT), encoding="utf-8")
    result = repo.gate("run", "--simulate", "--baseline-ref", "HEAD")
    assert result.code == 2, result.stderr
    assert "cannot import module 'newapp'" in result.stderr
    assert "a pull request that adds the app has no baseline" in result.stderr
    assert worktrees(repo.path) == [f"worktree {repo.path}"]


def test_not_a_git_repository(project: Project) -> None:
    project.write_config()
    result = project.gate("run", "--simulate", "--baseline-ref", "HEAD~1")
    assert result.code == 2
    assert "is not inside a git repository; --baseline-ref needs one" in result.stderr


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_checkout_and_no_worker(repo: Project, how: signal.Signals) -> None:
    config = yaml.safe_load((repo.path / "thresholds.yaml").read_text(encoding="utf-8"))
    config["cases"] = [{"id": f"q{i}", "inputs": {"question": f"question {i}"}} for i in range(400)]
    config["run"]["concurrency"] = 2
    (repo.path / "thresholds.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_", "GATE_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo.path / 'store' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gate", "run", "--simulate", "--baseline-ref", "HEAD~1"],
        cwd=repo.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_a_terminal_delivers_it,
        start_new_session=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until calls run
        if "round 1" in line:
            break
    workers = _descendants(proc.pid)  # a worker per version and the fork server (gate/_run/forkserver.py)
    assert len(workers) >= 3, workers
    proc.send_signal(how)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if how == signal.SIGINT else 143), stderr
    assert GateResult(proc.returncode, stdout, stderr).verdict["reason"] == "interrupted"
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _running(pid)]
    assert worktrees(repo.path) == [f"worktree {repo.path}"]


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for child in children for d in _descendants(child)]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_the_default_store_in_the_working_folder_gets_both_versions_traces(repo: Project) -> None:
    """The default tracking URI is relative (.gate/mlflow.db): the baseline's worker runs in the revision's checkout
    and must still write to the store in the user's folder. The store's folder is not part of the code either."""
    result = repo.gate("run", "--simulate", "--baseline-ref", "HEAD~1", env={"MLFLOW_TRACKING_URI": ""})
    assert result.code == 1, result.stderr
    for name in ("baseline", "candidate"):
        assert result.verdict["variants"][name]["traces"] == len(QUESTIONS)
    assert (repo.path / ".gate" / "mlflow.db").is_file()
    assert result.verdict["variants"]["candidate"]["source"]["dirty"] is False  # .gate/ is untracked, not code


def test_a_stored_main_branch_session_serves_as_the_baseline_of_a_later_revision(tmp_path: Path) -> None:
    """--baseline-from is matched by the git tree of the code: a session recorded at commit A (a clean checkout)
    is the baseline of `--baseline-ref A` later, without running A again; a session of other code is refused."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text("store/\n__pycache__/\n", encoding="utf-8")
    (root / "app.py").write_text(APP.format(prompt=SHORT), encoding="utf-8")
    write_config(root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "app")
    repo = Project(root)
    # what main's CI records on a shared server: its own code as the baseline (an A/A run of the merged commit)
    main = repo.gate("run", "--simulate", "--session", "main-1", "--baseline-ref", "HEAD")
    assert main.code == 0, main.stderr
    (root / "app.py").write_text(APP.format(prompt=LONG), encoding="utf-8")
    git(root, "commit", "-q", "-am", "longer prompt")
    reused = repo.gate("run", "--simulate", "--baseline-ref", "HEAD~1", "--baseline-from", "main-1")
    assert reused.code == 1, reused.stderr  # the candidate's longer prompt still fails the token check
    assert reused.verdict["comparison"]["baseline_source"] == "stored"
    assert reused.verdict["variants"]["baseline"]["calls"] == 0
    refused = repo.gate("run", "--simulate", "--baseline-ref", "HEAD", "--baseline-from", "main-1")  # other code
    assert refused.code == 3
    assert "baseline code (tree:" in refused.verdict["error"]
