"""What the performance benchmarks share: an external simulator, a measured child process, a trace count.

Every tool under test runs as its own process, measured from outside as whole-process wall time and peak RSS
(``os.wait4``), and talks to one simulator process that the harness starts, so nobody pays for serving.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent / "tools"

_gate_pythonpath: str | None = None  # set by use_gate_commit: children import gate from there
_gate_description: str | None = None


def use_gate_commit(commit: str | None) -> str:
    """Make every child import ``gate`` from ``commit`` (exported with ``git archive``), or from the checkout.

    Returns what the numbers were measured on: a commit, and whether gate/ had uncommitted changes.
    """
    global _gate_pythonpath, _gate_description
    if commit is None:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "gate")
        _gate_description = f"checkout {head}" + (" + uncommitted changes in gate/" if dirty else "")
        return _gate_description
    _gate_pythonpath, _gate_description = export_gate(commit)  # PYTHONPATH comes before the editable finder
    return _gate_description


def export_gate(commit: str) -> tuple[str, str]:
    """Export gate/ as of ``commit`` (``git archive``) into a temporary folder, removed at exit.

    Returns the folder (to put first on one child's ``PYTHONPATH``) and a description ("commit abc1234 (exported)").
    Unlike ``use_gate_commit`` this changes nothing global: one harness can run several gates side by side.
    """
    folder = Path(tempfile.mkdtemp(prefix="gate-src-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "gate"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return str(folder), f"commit {_git('rev-parse', '--short', commit)} (exported)"


def gate_description() -> str:
    return _gate_description or use_gate_commit(None)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False).stdout.strip()


# A deterministic model: latency is exactly base_latency_ms (no per-token time, no noise).
_SERVE = """
import sys
from gate.simulator import SimulatorSettings, running_simulator
settings = SimulatorSettings(seed=0, base_latency_ms=float(sys.argv[1]), ms_per_token=0.0, latency_sigma=0.0)
with running_simulator(settings) as url:
    print(url, flush=True)
    sys.stdin.read()  # serve until the harness closes our stdin
"""


@contextmanager
def external_simulator(latency_ms: float) -> Iterator[str]:
    """Serve the gate's simulator in a process of its own; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(latency_ms)],
        cwd=ROOT,
        env=child_env(None),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the simulator did not start (exit {proc.poll()})")
        yield url
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def child_env(
    base_url: str | None, extra: Mapping[str, str] | None = None, gate_pythonpath: str | None = None
) -> dict[str, str]:
    """The environment of a measured tool: none of ours MLflow/OpenAI settings, the simulator as endpoint.

    ``gate_pythonpath`` (a folder from ``export_gate``) puts that gate first for this child only.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    first = gate_pythonpath or _gate_pythonpath
    if first is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (first, env.get("PYTHONPATH")) if p)
    if base_url is not None:
        env["OPENAI_BASE_URL"] = base_url
        env["OPENAI_API_KEY"] = "sk-bench-not-a-real-key"
    env.update(extra or {})
    return env


@dataclass
class Measured:
    """One child process, measured from outside."""

    exit_code: int
    wall_s: float
    cpu_s: float  # user + system time of the process (its own threads; not the simulator's)
    peak_rss_mb: float
    timed_out: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def measure(
    cmd: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_prefix: Path,
    timeout_s: float = 3600,
) -> Measured:
    """Run ``cmd`` to completion; its stdout/stderr go to ``<log_prefix>.out/.err``."""
    with open(f"{log_prefix}.out", "wb") as out, open(f"{log_prefix}.err", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        lock, state = threading.Lock(), {"exited": False, "killed": False}

        def kill() -> None:
            with lock:
                if not state["exited"]:
                    os.kill(proc.pid, signal.SIGKILL)
                    state["killed"] = True

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: the pid stays ours
        wall = time.perf_counter() - started
        with lock:
            state["exited"] = True
        timer.cancel()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(proc.returncode, round(wall, 3), round(cpu, 2), round(usage.ru_maxrss / 1024, 1), state["killed"])


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n runs (the whole [0, 1] when nothing was run)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def tail(path: Path | str, lines: int = 8) -> str:
    """The last lines of a log, for a failure message."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def count_traces(db: Path) -> dict[str, int]:
    """Traces in an MLflow SQLite store, and how many of them have their spans in the database."""
    if not db.exists():
        return {"traces": 0, "spans_in_db": 0}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        traces = conn.execute("SELECT count(*) FROM trace_info").fetchone()[0]
        in_db = conn.execute(
            "SELECT count(*) FROM trace_tags WHERE key = 'mlflow.trace.spansLocation' AND value = 'TRACKING_STORE'"
        ).fetchone()[0]
    return {"traces": int(traces), "spans_in_db": int(in_db)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: Path | str, payload: object) -> None:
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def machine() -> str:
    """A one-line description of where the numbers come from."""
    return (
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs (shared), Python {sys.version.split()[0]}, "
        f"gate: {gate_description()}"
    )
