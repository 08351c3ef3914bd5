"""Shared helpers: write a gate project into a temp folder and run `gate` on it as a separate process."""

from __future__ import annotations

import atexit
import functools
import json
import locale
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
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


def sigint_as_a_terminal_delivers_it() -> None:
    """``preexec_fn`` for a gate that a test interrupts: SIGINT at its default, as under a terminal or a CI runner.

    A test run started in the background of a non-interactive shell (``cmd &``) inherits SIGINT ignored, and so would
    the gate, which would then never see the Ctrl-C the test sends.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    # Inline saves two worker processes per run (forked, each still opens the store and runs the writer's self-test):
    # for tests about anything but the workers. Tests about workers, git revisions, misbehaving apps and signals keep
    # the default (see run_isolation).
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

    def gate(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, fresh: bool = False
    ) -> GateResult:
        """``python -m gate ARGS`` in this folder, as a process of its own: forked from the preloaded interpreter
        (tests/gate_zygote.py), or a fresh interpreter if ``fresh``, if ``env`` sets the interpreter's own start-up
        (``PYTHON*``, e.g. PYTHONPROFILEIMPORTTIME), or if ``GATE_TESTS_FRESH=1``."""
        full_env = _clean_env()
        full_env["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.path / 'store' / 'mlflow.db'}"
        full_env.update(env or {})
        fresh = fresh or any(k.startswith("PYTHON") for k in env or {}) or os.environ.get("GATE_TESTS_FRESH") == "1"
        if not fresh:
            return zygote().run(list(args), self.path, full_env, timeout)
        proc = subprocess.run(
            [sys.executable, "-m", "gate", *args],
            cwd=self.path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return GateResult(proc.returncode, proc.stdout, proc.stderr)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}


class _Zygote:
    """The test process's end of tests/gate_zygote.py: one command at a time (a pytest worker runs one test)."""

    def __init__(self) -> None:
        requests_read, self.requests = os.pipe()
        self.answers, answers_write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "gate_zygote.py"), str(requests_read), str(answers_write)],
            cwd=ROOT,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            pass_fds=(requests_read, answers_write),
        )
        os.close(requests_read)
        os.close(answers_write)
        self.pending = b""
        self.last_pid: int | None = None  # the last command's process (tests/test_zygote.py checks it is gone)

    def _answer(self, timeout: float | None) -> dict[str, Any] | None:
        """The zygote's next answer line, or None if none came within ``timeout`` seconds."""
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.answers], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.answers, 65536)
            if not chunk:
                raise RuntimeError(f"tests/gate_zygote.py ended (exit {self.proc.wait()}); its stderr is above")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> GateResult:
        with tempfile.TemporaryDirectory(prefix="gate-out-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            os.write(self.requests, json.dumps(request).encode() + b"\n")
            started = self._answer(60)
            if started is None:
                raise RuntimeError("tests/gate_zygote.py did not fork within 60 s")
            self.last_pid = started["pid"]
            done = self._answer(timeout)
            if done is None:
                os.kill(self.last_pid, signal.SIGKILL)
                self._answer(None)
                raise subprocess.TimeoutExpired([sys.executable, "-m", "gate", *argv], timeout)
            encoding = locale.getpreferredencoding(False)
            return GateResult(done["returncode"], out.read_text(encoding=encoding), err.read_text(encoding=encoding))

    def close(self) -> None:
        os.close(self.requests)
        self.proc.wait(timeout=30)
        os.close(self.answers)


@functools.cache
def zygote() -> _Zygote:
    """This test process's preloaded interpreter, started on first use and stopped at exit."""
    started = _Zygote()
    atexit.register(started.close)
    return started


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
