"""Materialise a git revision for ``gate run --baseline-ref REV``, and say which code ran.

Design choices:

- REV is checked out with ``git worktree add --detach`` into a fresh temp directory, not ``git archive``: the checkout
  keeps a ``.git`` file, so tools that look up the working directory's commit (MLflow's ``mlflow.source.git.commit``)
  see REV. The user's checkout, index, HEAD and branches are never touched; hooks are off for the checkout.
- The directory is named ``gate-rev-<pid>-<sha12>-<random>`` and removed in a ``finally``; a run killed before that
  leaves it behind, and the next run's ``prune_stale`` removes it once its pid is dead. Removal is always per worktree
  (``git worktree remove --force``), never a global ``git worktree prune``, which could drop the user's own
  worktrees on an unmounted drive.
- The working tree's identity is the tree ``git write-tree`` gives after ``git add -A`` into a copy of the index
  (``GIT_INDEX_FILE``): changes and untracked, not ignored files count; the user's index stays as it was (the new
  blobs do land in the object store, as loose objects git gc may later drop).
- Every git call is bounded, non-interactive, in the C locale, and addresses the repository by ``cwd`` only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gate._errors import ConfigError

_TIMEOUT_S = 60.0
_CHECKOUT_TIMEOUT_S = 300.0  # a worktree of a big repository takes a while to write
_PREFIX = "gate-rev-"
_NAME = re.compile(r"gate-rev-(\d+)-[0-9a-f]{12}-.+")
# Variables that would point git at another repository than ``cwd`` (set, e.g., when the gate runs from a git hook).
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_PREFIX",
)
_SHALLOW_FIX = (
    "in GitHub Actions use actions/checkout with fetch-depth: 0 (or 2 for the PR's base), "
    "or run `git fetch origin {branch}`"
)


@dataclass(frozen=True)
class Source:
    """Where one version's code came from (goes into the verdict)."""

    kind: Literal["working tree", "git revision"]
    ref: str | None  # what the user asked for (e.g. "HEAD~1", "origin/main"); None for the working tree
    commit: str  # full SHA (for the working tree: HEAD's SHA, or "" when the repository has no commit yet)
    dirty: bool  # working tree only: the code that ran differs from HEAD (changes or untracked files)
    diff_sha256: str | None  # working tree only, when dirty: first 16 hex of the sha256 of the raw diff from HEAD
    tree: str  # the git tree id of the code that ran


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _REPO_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    env.update(extra or {})
    return env


def _run(
    root: Path,
    *args: str,
    timeout: float = _TIMEOUT_S,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git *args`` in ``root``; only a missing git, a missing ``root`` or a timeout raise."""
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, timeout=timeout, env=_env(env), input=stdin, check=False
        )
    except FileNotFoundError:
        if not root.is_dir():
            raise ConfigError(f"{root} does not exist; run the gate from a clone of your repository") from None
        raise ConfigError("git is not installed (or not on PATH); --baseline-ref needs it: install git") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"git {args[0]} took more than {timeout:.0f} s in {root}; check the repository (a stale lock, "
            "a slow network filesystem) and retry"
        ) from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _failure(root: Path, args: tuple[str, ...], stderr: bytes) -> ConfigError:
    lines = [line.strip() for line in _text(stderr).splitlines() if line.strip()]
    first = lines[0] if lines else "no error message"
    if "dubious ownership" in first:
        return ConfigError(
            f"git refuses the repository at {root} (it belongs to another user); "
            f"run `git config --global --add safe.directory {root}`"
        )
    return ConfigError(f"git {args[0]} failed in {root}: {first}")


def _git(root: Path, *args: str, timeout: float = _TIMEOUT_S, env: dict[str, str] | None = None) -> str:
    """Run ``git *args`` in ``root`` and return its stdout; a failure is a ``ConfigError`` with git's first line."""
    done = _run(root, *args, timeout=timeout, env=env)
    if done.returncode != 0:
        raise _failure(root, args, done.stderr)
    return _text(done.stdout)


def repo_root(path: Path) -> Path:
    """The top of the git work tree containing ``path``."""
    start = path if path.is_dir() else path.parent
    done = _run(start, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        message = _text(done.stderr)
        if "not a git repository" in message or "must be run in a work tree" in message:
            raise ConfigError(
                f"{path} is not inside a git repository; --baseline-ref needs one "
                "(run the gate from a clone of your repository)"
            )
        raise _failure(start, ("rev-parse",), done.stderr)
    return Path(_text(done.stdout).rstrip("\n"))


def _fetch_hint(ref: str) -> str:
    """A ``git fetch`` command for ``ref`` when it looks like a branch or tag name, else ""."""
    if ref == "HEAD" or any(char in ref for char in "~^:@{"):
        return ""
    return f"git fetch origin {ref.removeprefix('origin/')}"


def resolve_ref(root: Path, ref: str) -> str:
    """The full SHA of the commit ``ref`` names in the repository at ``root``."""
    if not ref.strip() or ref.startswith("-"):
        raise ConfigError(f"--baseline-ref {ref!r} is not a revision; give a commit, branch or tag (e.g. HEAD~1)")
    done = _run(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode == 0:
        return _text(done.stdout).strip()
    if done.stderr.strip():  # --quiet silences "unknown revision"; anything else is a broken repository
        raise _failure(root, ("rev-parse",), done.stderr)
    if _run(root, "rev-parse", "--verify", "--quiet", ref).returncode == 0:
        kind = _git(root, "cat-file", "-t", ref).strip()
        raise ConfigError(f"--baseline-ref {ref}: names a {kind}, not a commit; give a commit, branch or tag")
    fetch = _fetch_hint(ref)
    if _git(root, "rev-parse", "--is-shallow-repository").strip() == "true":
        fix = _SHALLOW_FIX.format(branch=fetch.removeprefix("git fetch origin ") or "<branch>")
        raise ConfigError(
            f"--baseline-ref {ref}: unknown revision in {root}, which is a shallow clone (its history was not "
            f"fetched); {fix}"
        )
    how = f" or fetch it ({fetch})" if fetch else ""
    raise ConfigError(f"--baseline-ref {ref}: unknown revision in {root}; check the name (git log --oneline){how}")


def working_tree_source(root: Path, exclude: Sequence[Path] = ()) -> Source:
    """What the working tree at ``root`` holds: HEAD plus every change and untracked (not ignored) file.

    ``exclude`` leaves out folders that are not code (the gate's own SQLite store when it is inside the tree).
    """
    head_run = _run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    head = _text(head_run.stdout).strip() if head_run.returncode == 0 else ""
    if head:
        base = _git(root, "rev-parse", "--verify", "HEAD^{tree}").strip()
    else:  # no commit yet: compare with the empty tree (its id depends on the repository's hash function)
        empty = _run(root, "hash-object", "-t", "tree", "--stdin", stdin=b"")
        if empty.returncode != 0:
            raise _failure(root, ("hash-object",), empty.stderr)
        base = _text(empty.stdout).strip()
    index = root / _git(root, "rev-parse", "--git-path", "index").rstrip("\n")
    with tempfile.TemporaryDirectory(prefix="gate-index-") as scratch:
        temp_index = Path(scratch) / "index"
        if index.is_file():  # starting from the user's index keeps its stat cache (fast) and its tracked-but-ignored
            shutil.copyfile(index, temp_index)
        elif head:
            _git(root, "read-tree", head, env={"GIT_INDEX_FILE": str(temp_index)})
        env = {"GIT_INDEX_FILE": str(temp_index)}
        # An ignored folder is left out anyway (and naming it in a pathspec makes `git add` fail).
        inside = [p.relative_to(root).as_posix() for p in exclude if p.is_relative_to(root)]
        skip = [f":(exclude){p}" for p in inside if _run(root, "check-ignore", "-q", p).returncode != 0]
        _git(root, "add", "--all", "--", ".", *skip, timeout=_CHECKOUT_TIMEOUT_S, env=env)
        tree = _git(root, "write-tree", env=env).strip()
        dirty = tree != base
        digest = None
        if dirty:  # plumbing (modes, blob ids, paths): the user's diff settings cannot change it
            done = _run(root, "diff-index", "--cached", "--raw", "-z", "--full-index", "--no-renames", base, env=env)
            if done.returncode != 0:
                raise _failure(root, ("diff-index",), done.stderr)
            digest = hashlib.sha256(done.stdout).hexdigest()[:16]
    return Source(kind="working tree", ref=None, commit=head, dirty=dirty, diff_sha256=digest, tree=tree)


def _remove(root: Path, path: Path) -> bool:
    """Remove the linked worktree at ``path`` and its registration; True when nothing is left of it."""
    if _run(root, "worktree", "remove", "--force", str(path)).returncode == 0:
        return True
    shutil.rmtree(path, ignore_errors=True)
    # Once the directory is gone, ``remove`` only drops this worktree's registration (a targeted prune).
    unregistered = _run(root, "worktree", "remove", "--force", str(path)).returncode == 0
    return unregistered and not path.exists()


@contextmanager
def checked_out(root: Path, ref: str) -> Iterator[tuple[Path, Source]]:
    """Yield the root of a detached checkout of ``ref`` and its ``Source``; remove the checkout afterwards."""
    prune_stale(root)
    sha = resolve_ref(root, ref)
    tree = _git(root, "rev-parse", "--verify", f"{sha}^{{tree}}").strip()
    path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-{sha[:12]}-", dir=tempfile.gettempdir()))
    try:
        _git(
            root,
            *("-c", f"core.hooksPath={os.devnull}"),  # no post-checkout hook: this checkout is not the user's
            *("worktree", "add", "--detach", "--quiet", str(path), sha),
            timeout=_CHECKOUT_TIMEOUT_S,
        )
        yield path, Source(kind="git revision", ref=ref, commit=sha, dirty=False, diff_sha256=None, tree=tree)
    finally:
        try:
            _remove(root, path)
        except ConfigError:  # a leftover checkout is not worth hiding the run's outcome; the next run prunes it
            pass


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT there; keep until the directory is gone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def prune_stale(root: Path) -> list[Path]:
    """Remove the checkouts that killed gate runs left behind (dead pid or directory gone); return their paths."""
    listing = _git(root, "worktree", "list", "--porcelain")
    paths = [Path(line.removeprefix("worktree ")) for line in listing.splitlines() if line.startswith("worktree ")]
    removed: list[Path] = []
    for path in paths[1:]:  # the first is the main worktree
        match = _NAME.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid <= 0 or pid > 2**31:
            continue
        if path.exists() and _alive(pid):
            continue
        if _remove(root, path):
            removed.append(path)
    return removed
