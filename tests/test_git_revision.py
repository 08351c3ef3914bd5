"""gate._run.git on real repositories: checkouts of a revision leave the user's repository as it was."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from gate._errors import ConfigError
from gate._run.git import Source, checked_out, prune_stale, repo_root, resolve_ref, working_tree_source

PROMPT_A = "You are a helpful assistant.\n"
PROMPT_B = "You are a terse assistant.\n"
APP = "print(open('prompts/p.txt').read())\n"


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config, a fixed identity, and no repository above tmp_path."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    """Run git in cwd (never refreshing the index on its own) and return stdout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=True)
    return done.stdout


@dataclass
class Repo:
    root: Path
    a: str  # commit A: app.py + prompts/p.txt
    b: str  # commit B: the prompt changed


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repo"
    (root / "prompts").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "app.py").write_text(APP)
    (root / "prompts" / "p.txt").write_text(PROMPT_A)
    (root / ".gitignore").write_text("*.log\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "A")
    a = git(root, "rev-parse", "HEAD").strip()
    (root / "prompts" / "p.txt").write_text(PROMPT_B)
    git(root, "commit", "-q", "-am", "B")
    return Repo(root, a, git(root, "rev-parse", "HEAD").strip())


def user_state(root: Path) -> tuple[bytes, str, str, str, str, str]:
    """Everything of the user's repository a checkout must not change (index bytes read first)."""
    index = (root / ".git" / "index").read_bytes()
    return (
        index,
        git(root, "status", "--porcelain", "--untracked-files=all"),
        git(root, "branch", "--list"),
        git(root, "rev-parse", "HEAD"),
        git(root, "diff", "--cached", "--name-only"),
        git(root, "diff"),
    )


def worktrees(root: Path) -> list[str]:
    listing = git(root, "worktree", "list", "--porcelain").splitlines()
    return [line.removeprefix("worktree ") for line in listing if line.startswith("worktree ")]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- checked_out ---------------------------------------------------------------------------------------------------


def test_checkout_of_previous_revision_has_its_files_and_commit(repo: Repo) -> None:
    (repo.root / "app.py").write_text(APP + "# uncommitted\n")
    (repo.root / "notes.txt").write_text("untracked\n")
    before = user_state(repo.root)

    with checked_out(repo.root, "HEAD~1") as (path, source):
        assert (path / "prompts" / "p.txt").read_text() == PROMPT_A
        assert (path / "app.py").read_text() == APP
        assert not (path / "notes.txt").exists()
        assert git(path, "rev-parse", "HEAD").strip() == repo.a
        assert re.fullmatch(rf"gate-rev-{os.getpid()}-{repo.a[:12]}-.+", path.name)
        assert path.parent == Path(tempfile.gettempdir())
        assert source == Source(
            kind="git revision",
            ref="HEAD~1",
            commit=repo.a,
            dirty=False,
            diff_sha256=None,
            tree=git(repo.root, "rev-parse", "HEAD~1^{tree}").strip(),
        )
        (path / "scratch.txt").write_text("the app wrote this")  # untracked files in the checkout do not block removal

    assert not path.exists()
    assert worktrees(repo.root) == [str(repo.root)]
    assert user_state(repo.root) == before


def test_checkout_of_head_is_the_committed_code_not_the_dirty_tree(repo: Repo) -> None:
    (repo.root / "prompts" / "p.txt").write_text("dirty\n")
    git(repo.root, "add", "prompts/p.txt")  # staged, too
    before = user_state(repo.root)
    with checked_out(repo.root, "HEAD") as (path, source):
        assert (path / "prompts" / "p.txt").read_text() == PROMPT_B
        assert source.commit == repo.b
    assert user_state(repo.root) == before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_checkout_is_removed_when_the_block_raises(repo: Repo, error: type[BaseException]) -> None:
    before = user_state(repo.root)
    with pytest.raises(error), checked_out(repo.root, repo.a) as (path, _):
        assert path.is_dir()
        raise error("boom")
    assert not path.exists()
    assert worktrees(repo.root) == [str(repo.root)]
    assert user_state(repo.root) == before


def test_checkout_left_by_a_killed_run_is_pruned(repo: Repo) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gate._run.git import checked_out\n"
        "with checked_out(Path(sys.argv[1]), 'HEAD~1') as (path, _):\n"
        "    print(path, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(repo.root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()  # reaped: no zombie that still answers os.kill(pid, 0)
    proc.stdout.close()
    assert path.is_dir()
    assert str(path) in worktrees(repo.root)

    assert prune_stale(repo.root) == [path]
    assert not path.exists()
    assert worktrees(repo.root) == [str(repo.root)]


# --- prune_stale ---------------------------------------------------------------------------------------------------


def test_prune_removes_dead_and_vanished_checkouts_only(repo: Repo, tmp_path: Path) -> None:
    sha12 = repo.a[:12]
    dead = tmp_path / f"gate-rev-{dead_pid()}-{sha12}-dead"
    vanished = tmp_path / f"gate-rev-{os.getpid()}-{sha12}-gone"
    live = tmp_path / f"gate-rev-{os.getpid()}-{sha12}-live"
    users = tmp_path / "my-feature"  # the user's own worktree, its directory gone: not ours to prune
    for path in (dead, vanished, live, users):
        git(repo.root, "worktree", "add", "--detach", "--quiet", str(path), repo.a)
    for path in (vanished, users):
        subprocess.run(["rm", "-rf", str(path)], check=True)

    assert sorted(prune_stale(repo.root)) == sorted([dead, vanished])
    assert not dead.exists()
    assert worktrees(repo.root) == [str(repo.root), str(live), str(users)]
    assert prune_stale(repo.root) == []


# --- working_tree_source -------------------------------------------------------------------------------------------


def test_clean_working_tree_is_head(repo: Repo) -> None:
    source = working_tree_source(repo.root)
    assert source == Source(
        kind="working tree",
        ref=None,
        commit=repo.b,
        dirty=False,
        diff_sha256=None,
        tree=git(repo.root, "rev-parse", "HEAD^{tree}").strip(),
    )


@pytest.mark.parametrize("change", ["modified", "untracked", "deleted", "staged"])
def test_dirty_working_tree_has_its_own_tree_and_index_is_untouched(repo: Repo, change: str) -> None:
    head_tree = git(repo.root, "rev-parse", "HEAD^{tree}").strip()
    if change == "modified":
        (repo.root / "prompts" / "p.txt").write_text("changed\n")
    elif change == "untracked":
        (repo.root / "prompts" / "new.txt").write_text("new\n")
    elif change == "deleted":
        (repo.root / "app.py").unlink()
    else:
        (repo.root / "app.py").write_text("staged\n")
        git(repo.root, "add", "app.py")
    before = user_state(repo.root)

    source = working_tree_source(repo.root)

    assert source.dirty
    assert source.commit == repo.b
    assert source.tree != head_tree
    assert source.diff_sha256 is not None and re.fullmatch(r"[0-9a-f]{16}", source.diff_sha256)
    assert user_state(repo.root) == before
    assert working_tree_source(repo.root) == source  # deterministic


def test_tree_is_what_committing_everything_would_give(repo: Repo) -> None:
    (repo.root / "prompts" / "p.txt").write_text("changed\n")
    (repo.root / "extra.py").write_text("x = 1\n")
    source = working_tree_source(repo.root)
    git(repo.root, "add", "-A")
    assert source.tree == git(repo.root, "write-tree").strip()


def test_ignored_files_do_not_change_the_tree(repo: Repo) -> None:
    (repo.root / "run.log").write_text("noise\n")
    source = working_tree_source(repo.root)
    assert not source.dirty
    assert source.tree == git(repo.root, "rev-parse", "HEAD^{tree}").strip()


def test_different_changes_have_different_diff_hashes(repo: Repo) -> None:
    (repo.root / "prompts" / "p.txt").write_text("one\n")
    first = working_tree_source(repo.root)
    (repo.root / "prompts" / "p.txt").write_text("two\n")
    second = working_tree_source(repo.root)
    assert first.diff_sha256 != second.diff_sha256
    assert first.tree != second.tree


def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    empty = working_tree_source(root)
    assert (empty.commit, empty.dirty, empty.diff_sha256) == ("", False, None)
    (root / "app.py").write_text(APP)
    first = working_tree_source(root)
    assert (first.commit, first.dirty) == ("", True)
    assert first.tree != empty.tree and first.diff_sha256 is not None


# --- repo_root and resolve_ref -------------------------------------------------------------------------------------


def test_repo_root_from_a_subdirectory_and_a_file(repo: Repo) -> None:
    assert repo_root(repo.root / "prompts") == repo.root
    assert repo_root(repo.root / "prompts" / "p.txt") == repo.root


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError) as caught:
        repo_root(plain)
    assert str(caught.value) == (
        f"{plain} is not inside a git repository; --baseline-ref needs one "
        "(run the gate from a clone of your repository)"
    )


def test_resolve_ref_gives_full_shas(repo: Repo) -> None:
    git(repo.root, "tag", "v1", repo.a)
    assert resolve_ref(repo.root, "HEAD~1") == repo.a
    assert resolve_ref(repo.root, "v1") == repo.a
    assert resolve_ref(repo.root, repo.a[:8]) == repo.a
    assert resolve_ref(repo.root, "main") == repo.b


def test_unknown_ref(repo: Repo) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_ref(repo.root, "NOPE")
    assert str(caught.value) == (
        f"--baseline-ref NOPE: unknown revision in {repo.root}; check the name (git log --oneline) "
        "or fetch it (git fetch origin NOPE)"
    )
    with pytest.raises(ConfigError, match=r"fetch it \(git fetch origin feature\)"):
        resolve_ref(repo.root, "origin/feature")
    with pytest.raises(ConfigError, match=r"unknown revision .*\(git log --oneline\)$"):
        resolve_ref(repo.root, "HEAD~5")


@pytest.mark.parametrize("ref", ["", "--all", "HEAD:app.py"])
def test_not_a_commit(repo: Repo, ref: str) -> None:
    with pytest.raises(ConfigError, match="commit, branch or tag"):
        resolve_ref(repo.root, ref)


def test_shallow_clone_says_how_to_fetch_history(repo: Repo, tmp_path: Path) -> None:
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo.root}", str(shallow))
    with pytest.raises(ConfigError) as caught:
        resolve_ref(shallow, "HEAD~1")
    message = str(caught.value)
    assert "\n" not in message
    assert f"--baseline-ref HEAD~1: unknown revision in {shallow}, which is a shallow clone" in message
    assert "actions/checkout with fetch-depth: 0" in message
    assert "git fetch origin <branch>" in message
    with pytest.raises(ConfigError, match="shallow clone"):
        with checked_out(shallow, "HEAD~1"):
            pass  # pragma: no cover


def test_missing_git(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match="git is not installed"):
        resolve_ref(repo.root, "HEAD")
