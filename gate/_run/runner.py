"""Import the two targets and call them on every case, interleaved, with repeats and a deadline per call.

Each call runs inside ``mlflow.tracing.context`` so the trace the target produces carries the gate's
tags (session, variant, label, case id, repeat) and is linked to its variant's MLflow run — without
wrapping the target in a span of ours, so the trace is exactly what the app records in production.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gate._traces.rows import Call, CallResult

if TYPE_CHECKING:  # a worker process imports this module for RetryPolicy and needs no config models
    from gate._config.dataset import Case
    from gate._config.schema import Variant

__all__ = ["RetryPolicy", "is_transient", "plan_calls", "run_calls"]


@dataclass(frozen=True)
class RetryPolicy:
    """Re-run a call that failed with a transient provider error, backing off with full jitter."""

    retries: int = 0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def wait_s(self, attempt: int, exc: BaseException, rng: random.Random) -> float:
        """Seconds before the next attempt: the provider's Retry-After if it sent one, else jittered backoff."""
        hinted = retry_after_s(exc)
        if hinted is not None:
            return min(hinted, self.max_backoff_s)
        return min(rng.uniform(0, self.backoff_s * 2**attempt), self.max_backoff_s)


_TRANSIENT_NAMES = {"RateLimitError", "APIConnectionError", "APITimeoutError", "InternalServerError"}
_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}


def is_transient(exc: BaseException) -> bool:
    """A provider error worth retrying: rate limits, overload, 5xx, dropped or timed-out connections."""
    if type(exc).__name__ in _TRANSIENT_NAMES or getattr(exc, "transient", False) is True:
        return True
    return getattr(exc, "status_code", None) in _TRANSIENT_STATUS


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a provider asked for (``retry-after-ms``, then ``Retry-After`` in seconds), if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None


def plan_calls(cases: Sequence[Case], repeats: int | range) -> list[Call]:
    """Interleave the versions case by case, alternating which goes first, so drift hits both alike."""
    from gate._config.schema import VARIANTS  # not at the top: see the TYPE_CHECKING block there

    calls: list[Call] = []
    for repeat in range(repeats) if isinstance(repeats, int) else repeats:
        for index, case in enumerate(cases):
            order = VARIANTS if (index + repeat) % 2 == 0 else VARIANTS[::-1]
            calls.extend(Call(variant, case, repeat) for variant in order)
    return calls


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_calls(
    calls: Sequence[Call],
    targets: dict[Variant, Callable[..., Any]],
    context_for: Callable[[Call, int], Any],
    concurrency: int,
    timeout_s: float,
    on_result: Callable[[CallResult], None] | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> list[CallResult]:
    """Run every call with at most ``concurrency`` in flight; a call past ``timeout_s`` is abandoned.

    ``context_for(call, attempt)`` returns the context manager (MLflow's tracing context) an attempt runs
    in. A transient provider error is retried up to ``retry.retries`` times within the call's deadline.
    Calls run in daemon threads so an abandoned call can never keep the gate alive.
    """
    done: queue.Queue[tuple[int, str | None, int]] = queue.Queue()

    def work(index: int, call: Call) -> None:
        rng = random.Random(index)
        attempt = 0
        while True:
            error: str | None = None
            try:
                with context_for(call, attempt):
                    targets[call.variant](**call.case.inputs)
            except BaseException as exc:  # noqa: BLE001 - an app's failure, even SystemExit, is a data point
                error = _describe(exc)
                if attempt < retry.retries and is_transient(exc):
                    time.sleep(retry.wait_s(attempt, exc, rng))
                    attempt += 1
                    continue
            done.put((index, error, attempt + 1))
            return

    results: dict[int, CallResult] = {}
    pending = list(enumerate(calls))
    pending.reverse()
    in_flight: dict[int, float] = {}
    while pending or in_flight:
        while pending and len(in_flight) < concurrency:
            index, call = pending.pop()
            in_flight[index] = time.monotonic() + timeout_s
            threading.Thread(target=work, args=(index, call), name=f"gate-call-{index}", daemon=True).start()
        wait = max(0.0, min(in_flight.values()) - time.monotonic())
        try:
            index, error, attempts = done.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic()
            for index in [i for i, deadline in in_flight.items() if deadline <= now]:
                del in_flight[index]
                result = CallResult(calls[index], f"TimeoutError: no answer within {timeout_s:g} s", timed_out=True)
                results[index] = result
                if on_result:
                    on_result(result)
            continue
        if index not in in_flight:
            continue  # a late answer from a call already counted as timed out
        del in_flight[index]
        results[index] = CallResult(calls[index], error, attempts=attempts)
        if on_result:
            on_result(results[index])
    return [results[i] for i in range(len(calls))]
