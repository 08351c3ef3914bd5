"""A preloaded interpreter that forks one child per ``gate`` command a test runs (tests/conftest.py, ``Project.gate``).

Every ``gate run`` of the suite used to start a fresh Python that spent ~4 s of CPU importing MLflow, openai and the
gate before doing about a second of work; on two cores that import time was most of the suite. This process imports
them once and then forks: each child is a separate process, as ``python -m gate`` would be (its own pid, working
directory, environment, file descriptors, exit code, worker processes), that starts with the modules already
imported and with the test's environment exactly. What differs from a fresh interpreter is only what an import read
from the environment at import time: MLflow's settings are read where they are used (the getters of
``mlflow.environment_variables``), and the gate sets its own (``prepare_environment``) when it runs, as in a fresh
process. Tests about start-up itself (what an import pulls in, ``PYTHON*`` settings, signals) keep a real
subprocess (``Project.gate(..., fresh=True)``); tests/test_zygote.py checks that a child prints, exits and times
out as a fresh interpreter does.

Protocol, one JSON line each way per command, on two pipes whose file descriptors the test process passes as the two
arguments (requests in, answers out): ``{"argv", "cwd", "env", "stdout", "stderr"}`` → ``{"pid"}`` when forked,
then ``{"returncode"}`` (negative: killed by that signal, as ``subprocess`` reports it). Before forking the process
checks that it runs no thread besides the main one: forking a process with threads copies locks nobody will release.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading


def preload() -> None:
    from gate._store.store import prepare_environment

    prepare_environment()  # what a gate process does before it imports MLflow
    # The SQL store's modules (its engine, schema check and ORM): ~1.3 s that every command on a SQLite store paid.
    import mlflow
    import mlflow.openai
    import mlflow.store.db.utils
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import openai  # noqa: F401

    import gate._cli
    import gate._commands.compare
    import gate._commands.run
    import gate._commands.score  # noqa: F401


def child(request: dict[str, object]) -> None:
    """Become ``python -m gate ARGV`` run in CWD with ENV; never returns (SystemExit ends the interpreter)."""
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update(dict(request["env"]))  # type: ignore[call-overload]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.close(null)
    sys.path[0] = os.getcwd()  # `python -m` puts the working directory first (the app sits next to the config)
    sys.argv = ["gate", *request["argv"]]  # type: ignore[misc]
    runpy.run_module("gate", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def serve(requests_fd: int, answers_fd: int) -> None:
    requests = os.fdopen(requests_fd, "r", encoding="utf-8")
    answers = os.fdopen(answers_fd, "w", encoding="utf-8")
    for line in requests:
        request = json.loads(line)
        extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if extra:
            raise SystemExit(f"gate_zygote: threads running before fork: {extra}")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            child(request)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # not this file's folder (tests/): a child puts its own working directory here
    preload()
    serve(int(sys.argv[1]), int(sys.argv[2]))
