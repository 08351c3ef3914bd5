"""Workers forked from a copy of the gate made before it starts any thread, instead of a fresh interpreter each.

A worker started as ``python -c …`` spends ~3.5 s of CPU importing MLflow, its SQL store and the gate before it
imports the app; a run starts two, and one more after every worker death. ``ForkServer.start`` imports those modules
once in the gate's process, at the top of ``gate run`` (they are needed there anyway), then forks a *server*: a
copy of the gate that holds nothing but those modules and waits. Each worker is forked from the server, so it starts
with the modules imported and no thread, lock or connection of the gate's in it — the server was forked before the
gate started any thread or opened the store, and forks nothing while a thread of its own runs.

A forked worker is what ``python -c`` would have started, as far as the worker can tell: its own pid, the version's
working directory, exactly the environment the gate hands a child (``environment_for_child``), ``sys.path[0]`` the
working directory, standard streams on the protocol's pipes and the gate's stderr and no other file descriptor
(as ``close_fds``), SIGINT ignored and other signals
at their defaults; it ends with ``os._exit`` (no handler of the gate's runs in it). MLflow reads its settings where
they are used, so an environment handed over after import is the one it sees; what the gate set before MLflow's
import (``prepare_environment``) the worker sets again, as a fresh one would. Only versions that run on the gate's
own interpreter are forked (another ``python:`` starts as before), only on Linux, and not when
``GATE_WORKER_START=exec`` asks for fresh interpreters.

Protocol with the server, over a Unix socket pair (one datagram each way per worker): the gate sends ``{"cwd",
"env"}`` with three file descriptors (the worker's stdin, its stdout, and a pipe for its exit status); the server
forks and answers ``{"pid"}``; when the worker ends, the server writes its exit code (negative: killed by that
signal, as ``subprocess`` reports it) to the status pipe. The server exits when the gate's end of the socket closes
(the gate ended, however); the workers it forked then see their stdin close and exit on their own, as before.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

__all__ = ["START_ENV", "ForkServer", "ForkedProcess"]

START_ENV = "GATE_WORKER_START"  # "exec": every worker a fresh interpreter
_MESSAGE_BYTES = 1 << 20  # an environment is a few KB; a datagram this size holds any plausible one


class ForkedProcess:
    """A worker forked by the server: the part of ``subprocess.Popen`` the worker pool uses."""

    def __init__(self, pid: int, stdin: IO[str], stdout: IO[str], status_fd: int) -> None:
        self.pid = pid
        self.stdin: IO[str] | None = stdin
        self.stdout: IO[str] | None = stdout
        self.returncode: int | None = None
        self._status = os.fdopen(status_fd, "rb")
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """The exit code if the worker ended, else None (also while another thread waits for it, as Popen does)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._collect(0.0)
        finally:
            self._lock.release()

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        try:
            code = self._collect(None if deadline is None else max(0.0, deadline - time.monotonic()))
        finally:
            self._lock.release()
        if code is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # ended meanwhile; its status is on the way
                pass

    def _collect(self, timeout: float | None) -> int | None:
        """With the lock held: read the exit code the server reports, waiting at most ``timeout`` seconds."""
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if ready:
                line = self._status.readline()
                self._status.close()
                if line.strip():
                    self.returncode = int(line)
                else:  # the server died first: nobody can report (or wait for) this worker; end it by its stdin
                    self.returncode = -signal.SIGKILL
                    try:
                        if self.stdin is not None:
                            self.stdin.close()  # a worker whose stdin closes writes its traces and exits
                    except (OSError, ValueError):
                        pass
        return self.returncode


class ForkServer:
    """The gate's side of the server: ``spawn`` forks a worker in a working directory with an environment."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._lock = threading.Lock()

    @classmethod
    def start(cls, preload: tuple[str, ...]) -> ForkServer | None:
        """Import ``preload`` here, then fork the server; None where workers must start as fresh interpreters."""
        if os.environ.get(START_ENV) == "exec" or not sys.platform.startswith("linux"):
            return None
        import importlib

        for name in preload:
            importlib.import_module(name)
        if threading.active_count() > 1:  # a fork would copy locks no thread of the copy will release
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:  # out of memory or processes: workers start as fresh interpreters instead
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            ours.close()
            _serve(theirs)  # never returns
        theirs.close()
        return cls(pid, ours)

    def spawn(self, cwd: str, env: dict[str, str]) -> ForkedProcess:
        """Fork a worker; raises ``OSError`` if the server is gone."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            with self._lock:
                message = json.dumps({"cwd": cwd, "env": env}).encode()
                socket.send_fds(self._sock, [message], [stdin_r, stdout_w, status_w])
                answer = self._sock.recv(_MESSAGE_BYTES)
        except OSError:
            for fd in (stdin_w, stdout_r, status_r):
                os.close(fd)
            raise
        finally:
            for fd in (stdin_r, stdout_w, status_w):
                os.close(fd)
        if not answer:
            for fd in (stdin_w, stdout_r, status_r):
                os.close(fd)
            raise OSError("the worker fork server is gone")
        stdin = os.fdopen(stdin_w, "w", encoding="utf-8", buffering=1)
        stdout = os.fdopen(stdout_r, "r", encoding="utf-8")
        return ForkedProcess(int(json.loads(answer)["pid"]), stdin, stdout, status_r)

    def close(self) -> None:
        """Stop the server (its workers stop with their stdin) and reap it."""
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket) -> None:
    """The server's loop, in the forked copy of the gate: fork a worker per request, report each one's end."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the gate decides
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the gate's handler
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a child's end wakes the select below
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # the gate's stdout (its verdict) must end when the gate ends, not when this does
        os.close(null)
        statuses: dict[int, int] = {}  # worker pid → the write end of its status pipe
        gc.freeze()  # what the gate imported stays out of the workers' collections (and their pages shared)
        while True:
            readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 4096)
            _reap(statuses)
            if sock.fileno() not in readable:
                continue
            message, fds, _, _ = socket.recv_fds(sock, _MESSAGE_BYTES, 3)
            if not message:
                break  # the gate is gone
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                _become_worker(request, fds)  # never returns
            os.close(fds[0])
            os.close(fds[1])
            statuses[pid] = fds[2]
            sock.send(json.dumps({"pid": pid}).encode())
            _reap(statuses)
    except BaseException:  # noqa: BLE001 - the server must not run the gate's code on its way out
        pass
    os._exit(0)


def _reap(statuses: dict[int, int]) -> None:
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
            finally:
                os.close(fd)


def _become_worker(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the request's pipes, directory and environment, then run the worker."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        stdin, stdout, _ = fds
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as Popen's close_fds: nothing of the gate's or its parent's
        # Fresh streams, as a new interpreter with PYTHONUNBUFFERED (the gate's objects may hold its buffers).
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # the process's own streams, never closed
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = ""  # as `python -c`: the working directory first
        sys.argv = ["-c"]
        import gate._run.worker

        gate._run.worker.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - as an interpreter would: the traceback on stderr, exit 1
        import traceback

        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
