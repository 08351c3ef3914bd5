"""Each version in worker processes of its own: the gate process plans, dispatches, counts and decides.

Why: two versions imported into one process share module state, ``sys.modules`` (two revisions of one module cannot
both be imported), global clients and autolog settings, and the GIL with the gate's own work, which distorts the
latency it measures. A worker (``gate._run.worker``) imports one version in its own interpreter and working directory
and writes that version's traces to the store itself; the gate process only sends requests and reads answers.

Protocol and failure handling (docs/design/workers.md):
- Calls are dispatched interleaved, at most ``concurrency`` in flight over all workers, as the in-process runner does;
  a call past ``timeout_s`` becomes a timed-out error data point, as today.
- A worker that dies (segfault, ``os._exit``, OOM kill): its calls in flight, and its answered calls whose traces it
  had not yet written, become error data points naming the death; the worker is replaced. A version whose worker
  dies more than ``MAX_RESTARTS`` times ends the run (``RunError``, exit 3).
- A worker whose heartbeat (one line a second from a thread of its own) stops for ``HUNG_AFTER_S`` is hung (the app
  holds the GIL in C code, or deadlocked the interpreter): it is killed and handled as dead. A call that merely never
  returns is a timed-out data point, as in-process, and does not cost the worker.
- At the end of every round each worker writes out its traces (``flush``) before the gate reads them back.
- Stopping: ``close`` asks the workers to stop, then kills what is left; a worker whose stdin closes (the gate was
  killed) exits on its own, so no worker outlives the gate.
"""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate._config.schema import Variant
from gate._errors import ConfigError, RunError
from gate._run.forkserver import ForkedProcess, ForkServer
from gate._run.runner import RetryPolicy
from gate._store.recording import WriterChoice, environment_for_child
from gate._traces.rows import Call, CallResult

__all__ = ["MAX_RESTARTS", "STOP_TIMEOUT_S", "VersionSpec", "WorkerPool", "WorkerSettings", "worker_preload"]

MAX_RESTARTS = 3  # deaths of one version's worker tolerated in one run; the next ends the run
START_TIMEOUT_S = 300.0  # importing MLflow and a big app on a busy CI runner
FLUSH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 35.0  # a worker flushes for up to 30 s when told to stop
HUNG_AFTER_S = 15.0  # no heartbeat for this long: the worker's interpreter is stuck

# The worker imports this gate (not one found in its working directory: a checkout of the gate's own repository has
# a `gate/` folder too), with the gate's folder on sys.path only while `gate` itself is imported: the version's own
# packages come from its interpreter.
_GATE_PARENT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    f"import sys; sys.path.insert(0, {_GATE_PARENT!r}); import gate._run.worker as w; "
    f"sys.path.remove({_GATE_PARENT!r}); w.main()"
)


def worker_preload(tracking_uri: str, autolog: bool) -> tuple[str, ...]:
    """What a worker imports before the app whatever the app is: MLflow, the store's module, the gate's worker side.

    Imported once in the gate before its fork server is made (gate/_run/forkserver.py), not in every worker.
    """
    modules = [
        "mlflow",
        "gate._config.fingerprint",
        "gate._run.worker",
        "gate._secrets",
        "gate._store.recording",
        "gate._store.redaction",
        "gate._store.store",
        "gate._targets",
    ]
    if tracking_uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        modules += ["mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store"]
    if autolog:
        modules.append("mlflow.openai")
    return tuple(modules)


@dataclass(frozen=True)
class VersionSpec:
    """How to start one version's worker."""

    variant: Variant
    target: str  # module:function, or what an http/prompt/model version is (for messages)
    where: str  # what messages name: "thresholds.yaml: baseline.target"
    cwd: Path
    search_path: Sequence[Path]
    python: str = sys.executable
    hint: str = ""  # appended to a start-up failure's message (e.g. what a missing target at a git revision means)
    version: dict[str, Any] | None = None  # an http/prompt/model version's config (gate._run.versions builds it)
    prompts: dict[str, int | str] | None = None  # registry prompts pinned for a Python target


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a run shares."""

    tracking_uri: str
    experiment: str
    autolog: bool
    retry: RetryPolicy
    timeout_s: float = 120.0  # run.timeout_s: an http version's default per request


@dataclass
class _Proc:
    """One live worker process and what it owes the gate."""

    variant: Variant
    popen: subprocess.Popen[str] | ForkedProcess
    generation: int
    in_flight: set[int] = field(default_factory=set)  # request ids sent, not answered
    unflushed: set[int] = field(default_factory=set)  # request ids answered since its last flush
    last_heard: float = field(default_factory=time.monotonic)
    code_digest: str = ""
    identity: dict[str, Any] = field(default_factory=dict)  # what an http/prompt/model version resolved to
    writer: str = ""
    writer_reason: str = ""
    alive: bool = True
    hung: str = ""  # why the gate killed it as hung


class WorkerPool:
    """One worker process per version, started, fed, replaced and stopped by the gate process."""

    def __init__(
        self, specs: Mapping[Variant, VersionSpec], settings: WorkerSettings, forks: ForkServer | None = None
    ) -> None:
        self.specs = dict(specs)
        self.settings = settings
        self.forks = forks  # forks the workers that run on the gate's own interpreter (gate/_run/forkserver.py)
        self.procs: dict[Variant, _Proc] = {}
        self.deaths: dict[Variant, int] = dict.fromkeys(specs, 0)
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self._generations = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._lost: dict[int, str] = {}  # request id → why its trace was lost with its worker
        self._last_death = ""

    # -- starting and stopping -------------------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start every version's worker at once (they import while the gate does its own set-up); see ``ready``."""
        for variant in self.specs:  # registered at once, so close() also stops a worker still starting
            self.procs[variant] = self._spawn(variant)

    def ready(self) -> None:
        """Wait until each worker has imported its target (raises its ``ConfigError``/``RunError`` if it cannot)."""
        for proc in list(self.procs.values()):
            self._await_ready(proc)

    def _spawn(self, variant: Variant) -> _Proc:
        spec = self.specs[variant]
        env = {**environment_for_child(), "PYTHONUNBUFFERED": "1"}
        popen: subprocess.Popen[str] | ForkedProcess | None = None
        if self.forks is not None and spec.python == sys.executable:
            try:
                popen = self.forks.spawn(str(spec.cwd), env)
            except OSError as exc:  # the server is gone: this and later workers start as fresh interpreters
                print(f"gate: cannot fork a worker ({exc}); starting a fresh interpreter instead", file=sys.stderr)
                self.forks = None
        try:
            popen = popen or subprocess.Popen(
                [spec.python, "-c", _BOOT],
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # the app's output and the worker's messages go to the gate's stderr
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        except OSError as exc:
            raise ConfigError(
                f"{spec.where}: cannot start a worker with {spec.python}: {exc.strerror or exc}"
            ) from None
        proc = _Proc(variant, popen, next(self._generations))
        threading.Thread(target=self._read, args=(proc,), name=f"gate-worker-{variant}", daemon=True).start()
        self._send(proc, {"op": "start", **self._start_message(spec)})
        return proc

    def _start_message(self, spec: VersionSpec) -> dict[str, Any]:
        s = self.settings
        return {
            "target": spec.target,
            "version": spec.version,
            "prompts": spec.prompts,
            "timeout_s": s.timeout_s,
            "where": spec.where,
            "search_path": [str(p) for p in spec.search_path],
            "tracking_uri": s.tracking_uri,
            "experiment": s.experiment,
            "autolog": s.autolog,
            "retry": {
                "retries": s.retry.retries,
                "backoff_s": s.retry.backoff_s,
                "max_backoff_s": s.retry.max_backoff_s,
            },
        }

    def _await_ready(self, proc: _Proc) -> None:
        others: list[tuple[int, dict[str, Any]]] = []  # other workers' words meanwhile, in the order they came
        try:
            self._await_own_ready(proc, others)
        finally:  # back at the head of the queue, in order: a worker's "fatal" must still come before its "exit"
            with self.events.mutex:
                self.events.queue.extendleft(reversed(others))
                self.events.not_empty.notify()

    def _await_own_ready(self, proc: _Proc, others: list[tuple[int, dict[str, Any]]]) -> None:
        spec = self.specs[proc.variant]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                generation, message = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._kill(proc)
                raise RunError(
                    f"the {proc.variant} worker did not start within {START_TIMEOUT_S:g} s (importing {spec.target})"
                ) from None
            if generation != proc.generation:
                others.append((generation, message))
                continue
            op = message.get("op")
            if op == "ready":
                proc.code_digest = str(message.get("code_digest", ""))
                proc.identity = dict(message.get("identity") or {})
                proc.writer = str(message.get("writer", ""))
                proc.writer_reason = str(message.get("writer_reason", ""))
                return
            if op == "fatal":
                self._kill(proc)
                if message.get("kind") == "config":
                    raise ConfigError(f"{message.get('message')}{spec.hint}")
                if message.get("kind") == "run":  # the gate's own RunError, raised in the worker: as it would be here
                    raise RunError(str(message.get("message")))
                raise RunError(f"the {proc.variant} worker could not start: {message.get('message')}{spec.hint}")
            if op == "exit":
                raise RunError(
                    f"the {proc.variant} worker exited with code {message.get('code')} while starting "
                    f"(importing {spec.target}); its output is above"
                )

    def close(self, deadline_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every worker (each writes out its traces first); kill what does not stop within ``deadline_s``."""
        procs = [p for p in self.procs.values() if p.alive]
        for proc in procs:
            self._send(proc, {"op": "stop"})
        deadline = time.monotonic() + deadline_s
        for proc in procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._kill(proc)
            proc.alive = False

    def kill(self) -> None:
        """Stop every worker at once (an interrupted run: no waiting)."""
        for proc in self.procs.values():
            self._kill(proc)

    def _kill(self, proc: _Proc) -> None:
        proc.alive = False
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()

    # -- the protocol ----------------------------------------------------------------------------------------------

    def _read(self, proc: _Proc) -> None:
        """Forward each answer of one worker to the gate's event queue; its end becomes an ``exit`` event."""
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (the worker claims fd 1 first, so this should not happen)
            self.events.put((proc.generation, message))
        self.events.put((proc.generation, {"op": "exit", "code": proc.popen.wait()}))

    def _send(self, proc: _Proc, message: dict[str, Any]) -> bool:
        assert proc.popen.stdin is not None
        try:
            proc.popen.stdin.write(json.dumps(message) + "\n")
            proc.popen.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False  # it died; its exit event is on the way

    # -- running calls ---------------------------------------------------------------------------------------------

    def writer(self) -> WriterChoice:
        """Who writes the traces (each worker chose, as the gate's process would; they agree on one store)."""
        choices = {(p.writer, p.writer_reason) for p in self.procs.values()}
        writer, reason = sorted(choices)[0]
        choice = WriterChoice("buffered" if writer == "buffered" else "mlflow", reason)
        forked = all(isinstance(p.popen, ForkedProcess) for p in self.procs.values())
        how = ", forked with MLflow already imported" if forked else ""
        print(f"gate: each version runs in a worker process of its own{how} (docs/design/workers.md)", file=sys.stderr)
        print(f"gate: {choice.describe()}", file=sys.stderr)
        return choice

    def identities(self) -> dict[Variant, dict[str, Any]]:
        """What each http/prompt/model version resolved to when its worker started (a prompt alias's version)."""
        return {v: p.identity for v, p in self.procs.items()}

    def digests(self) -> dict[Variant, str]:
        """Each version's target source hash, as its worker computed it."""
        return {v: p.code_digest for v, p in self.procs.items()}

    def run(
        self,
        calls: Sequence[Call],
        tags_for: Callable[[Call], tuple[dict[str, str], str | None]],
        concurrency: int,
        timeout_s: float,
        on_result: Callable[[CallResult], None] | None = None,
    ) -> list[CallResult]:
        """Run every call in its version's worker, at most ``concurrency`` in flight; then have each worker write
        out its traces. Returns one result per call, in order."""
        results: dict[int, CallResult] = {}
        index_of: dict[int, int] = {}  # request id → call index, while the call is open
        request_of: dict[int, int] = {}  # call index → request id
        deadline_of: dict[int, float] = {}
        owner: dict[int, _Proc] = {}
        pending = list(enumerate(calls))
        pending.reverse()

        def finish(request: int, result: CallResult) -> None:
            index = index_of.pop(request)
            deadline_of.pop(request, None)
            owner.pop(request, None)
            results[index] = result
            if on_result is not None:
                on_result(result)

        while pending or deadline_of:
            while pending and len(deadline_of) < concurrency:
                index, call = pending.pop()
                proc = self._live(call.variant)
                request = next(self._request_ids)
                tags, run_id = tags_for(call)
                outgoing = {"op": "call", "id": request, "inputs": call.case.inputs, "tags": tags, "run_id": run_id}
                index_of[request], owner[request], request_of[index] = index, proc, request
                deadline_of[request] = time.monotonic() + timeout_s
                proc.in_flight.add(request)
                self._send(proc, outgoing)
            wait = max(0.0, min(deadline_of.values()) - time.monotonic())
            try:
                generation, message = self.events.get(timeout=wait)
            except queue.Empty:
                now = time.monotonic()
                for request in [r for r, d in deadline_of.items() if d <= now]:
                    proc = owner[request]
                    proc.in_flight.discard(request)
                    call = calls[index_of[request]]
                    finish(request, CallResult(call, f"TimeoutError: no answer within {timeout_s:g} s", timed_out=True))
                    self._check_heartbeat(proc)
                continue
            sender = self._by_generation(generation)
            if sender is None:
                continue  # a replaced worker's late words
            sender.last_heard = time.monotonic()
            op = message.get("op")
            if op == "done":
                request = int(message["id"])
                sender.in_flight.discard(request)
                if request not in index_of:
                    continue  # a late answer from a call already counted as timed out
                sender.unflushed.add(request)
                call = calls[index_of[request]]
                finish(request, CallResult(call, message.get("error"), attempts=int(message.get("attempts", 1))))
            elif op == "exit":
                for request in self._bury(sender, message.get("code")):
                    if request in index_of:
                        call = calls[index_of[request]]
                        finish(request, CallResult(call, self._lost.pop(request), timed_out=True))
        self.flush()
        out = []
        for index in range(len(calls)):
            result, why = results[index], self._lost.pop(request_of[index], None)
            if why is not None and not result.timed_out:  # answered, but its trace died with its worker
                result = CallResult(result.call, why, timed_out=True, attempts=result.attempts)
            out.append(result)
        return out

    def flush(self) -> None:
        """Have every live worker write out the traces it holds; a worker that cannot is handled as dead."""
        waiting: dict[int, _Proc] = {}
        for proc in self.procs.values():
            if proc.alive:
                request = next(self._request_ids)
                if self._send(proc, {"op": "flush", "id": request, "deadline_s": FLUSH_TIMEOUT_S - 5}):
                    waiting[proc.generation] = proc
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while waiting:
            try:
                generation, message = self.events.get(timeout=1.0)
            except queue.Empty:
                for proc in list(waiting.values()):
                    self._check_heartbeat(proc)
                if time.monotonic() < deadline:
                    continue
                for proc in waiting.values():
                    print(
                        f"gate: the {proc.variant} worker did not write its traces in time: replacing it",
                        file=sys.stderr,
                    )
                    self._kill(proc)
                    self._bury(proc, "killed")
                return
            if (sender := self._by_generation(generation)) is not None:
                sender.last_heard = time.monotonic()
            flushed = waiting.get(generation)
            if flushed is None:
                continue
            if message.get("op") == "flushed":
                flushed.unflushed.clear()
                del waiting[generation]
            elif message.get("op") == "exit":
                del waiting[generation]
                self._bury(flushed, message.get("code"))

    def _check_heartbeat(self, proc: _Proc) -> None:
        """Kill a worker whose heartbeat stopped (its exit event then settles what it owed)."""
        if proc.alive and time.monotonic() - proc.last_heard > HUNG_AFTER_S:
            print(
                f"gate: the {proc.variant} worker stopped responding (no heartbeat for {HUNG_AFTER_S:g} s): "
                "replacing it",
                file=sys.stderr,
            )
            proc.hung = f"hung: no heartbeat for {HUNG_AFTER_S:g} s"
            self._kill(proc)

    def _live(self, variant: Variant) -> _Proc:
        proc = self.procs[variant]
        if proc.alive:
            return proc
        self.deaths[variant] += 1
        if self.deaths[variant] > MAX_RESTARTS:
            raise RunError(
                f"the {variant} worker was lost {self.deaths[variant]} times in this run (last: {self._last_death}); "
                "the app crashes or hangs its process (segfault, os._exit, out of memory, a stuck C call): "
                "see its output above"
            )
        replacement = self.procs[variant] = self._spawn(variant)  # registered first: close() stops it too
        self._await_ready(replacement)
        return replacement

    def _by_generation(self, generation: int) -> _Proc | None:
        for proc in self.procs.values():
            if proc.generation == generation:
                return proc
        return None

    def _bury(self, proc: _Proc, code: Any) -> set[int]:
        """A worker died: what it owed is lost. Returns the request ids that were in flight."""
        proc.alive = False
        self._last_death = proc.hung or f"exit code {code}"
        why = f"WorkerDied: the {proc.variant} worker exited ({self._last_death}) before this call's trace was written"
        for request in proc.in_flight | proc.unflushed:
            self._lost[request] = why
        lost = set(proc.in_flight)
        proc.in_flight.clear()
        return lost
