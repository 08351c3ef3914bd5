"""A worker process: one version's code, imported in an interpreter of its own, calling it on request.

Started by ``gate._run.workers`` as ``python -m gate._run.worker`` in the version's working directory (the user's
checkout, or a checkout of a git revision), so the version's imports, relative files and the git commit MLflow
records on its traces are that version's. The protocol is JSON lines: requests on stdin, answers on a duplicate of
the original stdout; file descriptor 1 itself is pointed at stderr, so whatever the app prints goes to stderr and
never into the protocol (nor into the gate's verdict).

    → {"op": "start", ...WorkerSettings}   ← {"op": "ready", "pid", "code_digest"} | {"op": "fatal", "kind", "message"}
    → {"op": "call", "id", "inputs", "tags", "run_id"}       ← {"op": "done", "id", "error", "attempts"}
    → {"op": "flush", "id"}                                  ← {"op": "flushed", "id", "ok"}
    → {"op": "stop"}, or end of input (the gate is gone)      (flush the traces, exit)
                                                             ← {"op": "alive"} every second, from a thread of its own

Sync targets run in a thread per call (daemon threads: a call the gate abandoned never keeps the worker alive);
``async def`` targets and async generators run on one event loop per worker, so clients bound to a loop keep
working; a generator's chunks are consumed, so the span MLflow opened for it ends with the whole answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]


class _Answers:
    """The protocol's output stream, shared by the call threads."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _claim_stdout() -> TextIO:
    """Keep the original stdout for the protocol; everything else written to fd 1 goes to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


async def _consume_async(result: Any) -> None:
    if inspect.isasyncgen(result):
        async for _ in result:
            pass
    elif inspect.isawaitable(result):
        result = await result
        if inspect.isasyncgen(result) or inspect.isawaitable(result):
            await _consume_async(result)
        elif inspect.isgenerator(result):
            for _ in result:
                pass
    elif inspect.isgenerator(result):
        for _ in result:
            pass


class _Worker:
    def __init__(self, settings: dict[str, Any], answers: _Answers) -> None:
        from gate._run.runner import RetryPolicy

        self.settings = settings
        self.answers = answers
        self.retry = RetryPolicy(**settings["retry"])
        self.target: Callable[..., Any] = lambda **_: None
        self.is_async = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tracing_context: Callable[[dict[str, str], str | None], AbstractContextManager[Any]] | None = None

    def start(self) -> dict[str, Any]:
        """Import the target, then open the store and switch the trace writer on; the ``ready`` answer.

        The target is imported first, so that an app which points MLflow elsewhere at import time
        (``mlflow.set_tracking_uri`` in its module) cannot send the gate's traces there: the gate's store is set last.
        """
        from gate._config.fingerprint import code_digest
        from gate._secrets import redact_uri
        from gate._store.recording import hold_writes, start_recording
        from gate._store.redaction import install_span_redaction
        from gate._store.store import open_store, prepare_environment
        from gate._targets import import_target

        s = self.settings
        prepare_environment()
        built = None
        pins: dict[str, int | str] = dict(s.get("prompts") or {})
        if pins:  # before the app is imported, so that what it imports is the pinned loader
            from gate._run.versions import pin_prompts

            pin_prompts(pins)
        if s.get("version") is None:
            self.target = import_target(s["target"], s["where"], [Path(p) for p in s["search_path"]])
        apps_uri = _tracking_uri_set_by_app()
        store = open_store(s["tracking_uri"], s["experiment"])
        identity: dict[str, Any] = {}
        if pins:
            from gate._run.versions import resolve_pins

            identity["prompts"] = resolve_pins(pins, s["where"].removesuffix(".target"))
        if s.get("version") is not None:  # the gate's own caller of an endpoint, prompt or model: needs the store
            from gate._config.schema import VariantConfig
            from gate._run.versions import build_version

            built = build_version(VariantConfig.model_validate(s["version"]), s["where"], float(s["timeout_s"]))
            self.target = built.call
        if apps_uri is not None and apps_uri != store.tracking_uri:
            print(
                f"gate: the app sets MLflow's tracking URI to {redact_uri(apps_uri)} when imported; while the gate "
                f"runs it, its traces go to the gate's store ({redact_uri(store.tracking_uri)})",
                file=sys.stderr,
            )
        choice = start_recording(store.tracking_uri, store.experiment_id)
        hold_writes()  # written when the gate flushes between rounds, not while calls run (docs/design/workers.md)
        if s["autolog"]:
            import mlflow.openai

            mlflow.openai.autolog(silent=True)
        install_span_redaction()
        self.tracing_context = store.tracing_context
        self.is_async = inspect.iscoroutinefunction(self.target) or inspect.isasyncgenfunction(self.target)
        if self.is_async:
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, name="gate-worker-loop", daemon=True).start()
        return {
            "op": "ready",
            "pid": os.getpid(),
            "code_digest": built.digest if built is not None else code_digest(self.target),
            "identity": built.identity if built is not None else identity,
            "writer": choice.writer,
            "writer_reason": choice.reason,
        }

    def call(self, request: dict[str, Any]) -> None:
        if self.is_async and self.loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._call_async(request), self.loop)
            future.add_done_callback(lambda f: self._answer_failure(request, f.exception()))
        else:
            threading.Thread(target=self._call_sync, args=(request,), name="gate-call", daemon=True).start()

    def _context(self, request: dict[str, Any], attempt: int) -> AbstractContextManager[Any]:
        assert self.tracing_context is not None
        tags = {**request["tags"], "gate.attempt": str(attempt)}
        return self.tracing_context(tags, request.get("run_id"))

    def _call_sync(self, request: dict[str, Any]) -> None:
        rng = random.Random(request["id"])
        attempt = 0
        while True:
            error: str | None = None
            try:
                with self._context(request, attempt):
                    result = self.target(**request["inputs"])
                    if inspect.isgenerator(result):
                        for _ in result:
                            pass
                    elif inspect.isawaitable(result) or inspect.isasyncgen(result):
                        asyncio.run(_consume_async(result))  # an async callable the import could not tell
            except BaseException as exc:  # noqa: BLE001 - an app's failure, even SystemExit, is a data point
                error = _describe(exc)
                if self._retry(attempt, exc, rng):
                    attempt += 1
                    continue
            self.answers.send({"op": "done", "id": request["id"], "error": error, "attempts": attempt + 1})
            return

    async def _call_async(self, request: dict[str, Any]) -> None:
        rng = random.Random(request["id"])
        attempt = 0
        while True:
            error: str | None = None
            try:
                with self._context(request, attempt):
                    await _consume_async(self.target(**request["inputs"]))
            except BaseException as exc:  # noqa: BLE001 - an app's failure, even SystemExit, is a data point
                error = _describe(exc)
                wait = self._retry_wait(attempt, exc, rng)
                if wait is not None:
                    await asyncio.sleep(wait)
                    attempt += 1
                    continue
            self.answers.send({"op": "done", "id": request["id"], "error": error, "attempts": attempt + 1})
            return

    def _retry_wait(self, attempt: int, exc: BaseException, rng: random.Random) -> float | None:
        from gate._run.runner import is_transient

        if attempt < self.retry.retries and is_transient(exc):
            return self.retry.wait_s(attempt, exc, rng)
        return None

    def _retry(self, attempt: int, exc: BaseException, rng: random.Random) -> bool:
        wait = self._retry_wait(attempt, exc, rng)
        if wait is None:
            return False
        time.sleep(wait)
        return True

    def _answer_failure(self, request: dict[str, Any], exc: BaseException | None) -> None:
        if exc is not None:  # the coroutine wrapper itself failed (cancelled at exit): still answer
            self.answers.send({"op": "done", "id": request["id"], "error": _describe(exc), "attempts": 1})


def _tracking_uri_set_by_app() -> str | None:
    """The tracking URI the app's import set with ``mlflow.set_tracking_uri``, if it set one."""
    if "mlflow" not in sys.modules:
        return None
    try:  # MLflow keeps what set_tracking_uri set in this module global (3.x)
        from mlflow.tracking._tracking_service import utils
    except ImportError:
        return None
    value = getattr(utils, "_tracking_uri", None)
    return value if isinstance(value, str) else None


def _flush(deadline_s: float | None) -> bool:
    from gate._store.recording import flush_traces

    return flush_traces(deadline_s)


def _heartbeat(answers: _Answers) -> None:
    """A line a second: the gate tells a worker whose interpreter is stuck from one whose calls are merely slow."""
    while True:
        time.sleep(1.0)
        answers.send({"op": "alive"})


def main() -> None:
    """Serve one version's calls until told to stop or the gate goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the gate decides
    answers = _Answers(_claim_stdout())
    first = sys.stdin.readline()
    if not first:
        return
    settings = json.loads(first)
    worker = _Worker(settings, answers)
    try:
        answers.send(worker.start())
    except BaseException as exc:  # noqa: BLE001 - reported to the gate, which names it in one line
        from gate._errors import ConfigError, RunError

        kind = "config" if isinstance(exc, ConfigError) else "run" if isinstance(exc, RunError) else "crash"
        answers.send({"op": "fatal", "kind": kind, "message": _describe(exc) if kind == "crash" else str(exc)})
        return
    threading.Thread(target=_heartbeat, args=(answers,), name="gate-worker-heartbeat", daemon=True).start()
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "call":
            worker.call(request)
        elif op == "flush":
            answers.send({"op": "flushed", "id": request["id"], "ok": _flush(request.get("deadline_s"))})
        elif op == "stop":
            break
    _flush(30.0)
    sys.stderr.flush()
    os._exit(0)  # calls still running (abandoned by the gate) must not keep the worker alive


if __name__ == "__main__":
    main()
