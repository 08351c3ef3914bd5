"""A real `mlflow server` for tests, PostgreSQL-backed where PostgreSQL can start on this machine, else SQLite-backed.

Use it from a test module with ``pytest_plugins = ["mlflow_server"]`` and one of the session fixtures:

- ``mlflow_server``: PostgreSQL-backed when PostgreSQL starts here, else SQLite-backed;
- ``postgres_mlflow_server``: PostgreSQL-backed, or the test is skipped with the reason PostgreSQL did not start;
- ``sqlite_mlflow_server``: SQLite-backed.

Each yields an ``MlflowServer``: ``uri`` (``http://127.0.0.1:PORT``), ``backend`` (``"postgresql"`` or ``"sqlite"``),
``backend_store_uri``, ``artifacts`` (the ``--artifacts-destination`` folder), ``log`` and ``startup_s``. A server is
started once per pytest session (so once per xdist worker that asks for it) and costs ~7–12 s to start on 2 cores.

The server runs with ``--workers 1`` and ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (no huey job consumers), in its
own process group, which teardown kills as a whole; PostgreSQL runs as an unprivileged user (it refuses root) with its
data and its unix socket in a temp folder that user owns, on no TCP port, and is stopped at teardown.

PYTEST_DONT_REWRITE: this module asserts nothing, and test modules import names from it before their
``pytest_plugins`` registers it (which would otherwise warn that it cannot be rewritten).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

__all__ = [
    "MlflowServer",
    "Postgres",
    "free_port",
    "mlflow_server",
    "postgres_mlflow_server",
    "running_mlflow_server",
    "running_postgres",
    "sqlite_mlflow_server",
]

Backend = Literal["postgresql", "sqlite"]
HEALTH_TIMEOUT_S = 60.0
PG_BIN_ENV = "GATE_TEST_PG_BIN"  # a folder holding initdb and pg_ctl, to override the search below


@dataclass(frozen=True)
class MlflowServer:
    """A running `mlflow server`."""

    uri: str
    backend: Backend
    backend_store_uri: str
    artifacts: Path
    log: Path
    startup_s: float


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster reachable through a unix socket in ``socket_dir``."""

    socket_dir: Path
    port: int
    user: str = "postgres"

    def sqlalchemy_uri(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pg_bin() -> Path | None:
    if os.environ.get(PG_BIN_ENV):
        return Path(os.environ[PG_BIN_ENV])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres | str]:
    """A throwaway PostgreSQL cluster, or the reason it cannot run here (a string)."""
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        yield f"no PostgreSQL binaries (initdb, pg_ctl) found; set {PG_BIN_ENV} to their folder"
        return
    user: str | None = None
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as an unprivileged user
        if shutil.which("runuser") is None:
            yield "running as root and `runuser` is missing, so PostgreSQL cannot run as an unprivileged user"
            return
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            user = candidate
            break
        if user is None:
            yield "running as root and there is no `postgres` or `nobody` user to run PostgreSQL as"
            return
    base = Path(tempfile.mkdtemp(prefix="gate-pg-"))  # in /tmp: pytest's own temp folders are root-only (0700)
    data, log = base / "data", base / "postgres.log"
    started = False
    try:
        if user:
            record = pwd.getpwnam(user)
            os.chown(base, record.pw_uid, record.pw_gid)
        os.chmod(base, 0o700)
        port = free_port()
        init = subprocess.run(
            _as_user(
                user,
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    *"-U postgres -A trust -E UTF8 --no-sync --no-instructions".split(),
                ],
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if init.returncode != 0:
            yield f"initdb failed: {(init.stderr or init.stdout).strip()[-500:]}"
            return
        options = (
            f"-c listen_addresses='' -k {base} -p {port} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        start = subprocess.run(
            _as_user(
                user,
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start"],
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if start.returncode != 0:
            yield f"pg_ctl start failed: {(start.stderr or start.stdout).strip()[-300:]}; log: {_tail(log, 5)}"
            return
        started = True
        yield Postgres(socket_dir=base, port=port)
    finally:
        if started:
            subprocess.run(
                _as_user(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


def _create_database(postgres: Postgres, name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=str(postgres.socket_dir), port=postgres.port, user=postgres.user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _wait_healthy(uri: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode} before it was healthy:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server at {uri} not healthy within {timeout_s:.0f} s; log tail:\n{_tail(log)}")
        time.sleep(0.1)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group (uvicorn, any job runner), then SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=2)  # a throwaway server has nothing to save; uvicorn may wait on idle keep-alive clients
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while children linger: kill whatever is still in the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@contextlib.contextmanager
def running_mlflow_server(backend_store_uri: str, backend: Backend, folder: Path) -> Iterator[MlflowServer]:
    """Start `mlflow server` on a free loopback port with artifacts under ``folder``; stop its process group after."""
    artifacts, log = folder / "artifacts", folder / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_", "PYTEST_"))}
    env.update(
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no huey job-runner processes (mlflow/server/__init__.py)
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONWARNINGS="ignore",
    )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole at teardown
        )
    try:
        _wait_healthy(uri, proc, log, HEALTH_TIMEOUT_S)
        yield MlflowServer(uri, backend, backend_store_uri, artifacts, log, time.monotonic() - started)
    finally:
        _kill_group(proc)


@pytest.fixture(scope="session")
def sqlite_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on a SQLite database."""
    folder = tmp_path_factory.mktemp("mlflow-server-sqlite")
    try:
        with running_mlflow_server(f"sqlite:///{folder / 'mlflow.db'}", "sqlite", folder) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def postgres_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on a throwaway PostgreSQL database; skips (with the reason) when PostgreSQL cannot start."""
    with running_postgres() as postgres:
        if isinstance(postgres, str):
            pytest.skip(f"PostgreSQL cannot start here: {postgres}")
        _create_database(postgres, "mlflow")
        folder = tmp_path_factory.mktemp("mlflow-server-postgres")
        try:
            with running_mlflow_server(postgres.sqlalchemy_uri("mlflow"), "postgresql", folder) as server:
                yield server
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mlflow_server(request: pytest.FixtureRequest) -> MlflowServer:
    """PostgreSQL-backed when PostgreSQL can start here, else SQLite-backed (``.backend`` says which)."""
    try:
        server: MlflowServer = request.getfixturevalue("postgres_mlflow_server")
    except pytest.skip.Exception:
        server = request.getfixturevalue("sqlite_mlflow_server")
    return server
