"""Misbehaving targets for test_misbehaving_apps.py: each @mlflow.trace function does one thing an app should not."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import openai

_client: openai.OpenAI | None = None


def _ask(question: str) -> str:
    global _client
    if _client is None:
        _client = openai.OpenAI(max_retries=0)
    response = _client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
        temperature=0.3,
        max_tokens=60,
    )
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
def agent(question: str) -> str:
    """The well-behaved baseline."""
    return _ask(question)


# --- output past sys.stdout (the gate redirects sys.stdout to stderr while calls run) ---

NOISE = "noise from the app"  # every printing target writes a line that contains this


@mlflow.trace(span_type="AGENT")
def prints_via_print(question: str) -> str:
    print(f"{NOISE}: print()")
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def prints_via_dunder_stdout(question: str) -> str:
    print(f"{NOISE}: sys.__stdout__", file=sys.__stdout__, flush=True)  # the interpreter's own stdout object
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def prints_via_fd(question: str) -> str:
    os.write(1, f"{NOISE}: os.write(1)\n".encode())  # file descriptor 1, below any Python-level redirect
    # A child process inherits file descriptor 1, as a tool the app shells out to would.
    subprocess.run([sys.executable, "-c", f"print({NOISE!r} + ': a child process')"], check=True)
    return _ask(question)


# --- answers that are not strings ---


@mlflow.trace(span_type="AGENT")
def returns_dict(question: str) -> dict[str, Any]:
    return {"answer": _ask(question), "sources": ["faq.md"], "score": 0.5}


@mlflow.trace(span_type="AGENT")
def returns_int(question: str) -> int:
    return len(_ask(question))


@mlflow.trace(span_type="AGENT")
def returns_set(question: str) -> set[str]:
    return set(_ask(question).split())


@mlflow.trace(span_type="AGENT")
def returns_generator(question: str) -> Iterator[str]:
    # A plain function returning a generator object (not a generator function): nothing consumes it.
    words = _ask(question).split()
    return (word for word in words)


class Opaque:
    """No JSON form, and even ``str()`` and ``repr()`` of it fail."""

    __slots__ = ()

    def __str__(self) -> str:
        raise RuntimeError("Opaque has no text form")

    def __repr__(self) -> str:
        raise RuntimeError("Opaque has no text form")


@mlflow.trace(span_type="AGENT")
def returns_opaque(question: str) -> Opaque:
    _ask(question)
    return Opaque()


@mlflow.trace(span_type="AGENT")
def returns_none(question: str) -> None:
    _ask(question)  # spends tokens, answers nothing


# --- exits and interrupts raised inside a call ---


@mlflow.trace(span_type="AGENT")
def raises_system_exit(question: str) -> str:
    if "refund" in question:
        sys.exit(4)  # e.g. a CLI helper the app calls that "exits" on bad input
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def raises_keyboard_interrupt(question: str) -> str:
    if "refund" in question:
        raise KeyboardInterrupt
    return _ask(question)


# --- calls that never end, and threads that outlive their call ---


@mlflow.trace(span_type="AGENT")
def hangs_on_refund(question: str) -> str:
    if "refund" in question:
        threading.Event().wait()  # never set: the call never returns
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def hangs_always(question: str) -> str:
    threading.Event().wait()
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def leaves_a_thread(question: str) -> str:
    # daemon=False explicitly: a thread started from the gate's (daemon) call thread would inherit daemon=True.
    threading.Thread(target=time.sleep, args=(3600,), name="app-background-worker", daemon=False).start()
    return _ask(question)
