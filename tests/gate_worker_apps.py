"""Targets for the worker-process tests: async apps, streaming apps, and apps that crash or hang their process.

Each test copies this file next to its config, as a user's app would sit next to thresholds.yaml.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mlflow
import openai

_async_client: openai.AsyncOpenAI | None = None
_client: openai.OpenAI | None = None
_loop_of_client: object = None


def _sync_client() -> openai.OpenAI:
    global _client
    if _client is None:
        _client = openai.OpenAI(max_retries=0)
    return _client


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]


@mlflow.trace(span_type="AGENT")
async def async_agent(question: str) -> str:
    """The norm with openai.AsyncOpenAI: one client for the process, bound to the event loop of its first use."""
    global _async_client, _loop_of_client
    import asyncio

    loop = asyncio.get_running_loop()
    if _async_client is None:
        _async_client = openai.AsyncOpenAI(max_retries=0)
        _loop_of_client = loop
    assert loop is _loop_of_client, "a second event loop: a client bound to the first one would break"
    response = await _async_client.chat.completions.create(model="gpt-4o-mini", messages=_messages(question))
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
async def async_streaming_agent(question: str) -> AsyncIterator[str]:
    global _async_client
    if _async_client is None:
        _async_client = openai.AsyncOpenAI(max_retries=0)
    response = await _async_client.chat.completions.create(model="gpt-4o-mini", messages=_messages(question))
    for word in (response.choices[0].message.content or "").split():
        yield word + " "


@mlflow.trace(span_type="AGENT")
def streaming_agent(question: str) -> Iterator[str]:
    response = _sync_client().chat.completions.create(model="gpt-4o-mini", messages=_messages(question))
    time.sleep(0.02)  # a first chunk that takes a while
    for word in (response.choices[0].message.content or "").split():
        yield word + " "


@mlflow.trace(span_type="AGENT")
def agent(question: str) -> str:
    response = _sync_client().chat.completions.create(model="gpt-4o-mini", messages=_messages(question))
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
def killed_once(question: str) -> str:
    """SIGKILLs its own process on the first 'refund' question of the run (a segfault or an OOM kill, as seen)."""
    marker = Path(os.environ.get("GATE_TEST_MARKER", "killed.marker"))
    if "refund" in question and not marker.exists():
        marker.write_text("killed", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)
    return agent(question)


@mlflow.trace(span_type="AGENT")
def exits_always(question: str) -> str:
    os._exit(7)  # a native crash or an app calling os._exit: the process is gone


@mlflow.trace(span_type="AGENT")
def holds_the_interpreter(question: str) -> str:
    """Blocks in C code with the GIL held: nothing in the process runs any more, its heartbeat included."""
    if "refund" in question:
        ctypes.PyDLL(None).sleep(3600)  # a PyDLL call keeps the GIL (a CDLL call would release it)
    return agent(question)


@mlflow.trace(span_type="AGENT")
def writes_to_fd_1(question: str) -> str:
    os.write(1, b"raw bytes on fd 1 from the app\n")
    print("print() from the app")
    return agent(question)


@mlflow.trace(span_type="AGENT")
def reports_its_process(question: str) -> str:
    """Answers with what a worker process looks like from inside: how it was started, where, with what."""
    return json.dumps(
        {
            "cwd": os.getcwd(),
            "path0": sys.path[0],
            "argv": sys.argv,
            "marker": os.environ.get("GATE_TEST_MARKER"),
            "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
            "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
            "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            "stdin_is_a_pipe": stat.S_ISFIFO(os.fstat(0).st_mode),
            "fd_1_is_stderr": os.path.sameopenfile(1, 2),
            # beyond 0-2, the one pipe is the worker's duplicate of its original stdout (the protocol's answers)
            "pipes_beyond_stdio": sum(
                os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
                for fd in os.listdir("/proc/self/fd")
                if int(fd) > 2 and os.path.exists(f"/proc/self/fd/{fd}")
            ),
        },
        sort_keys=True,
    )


@mlflow.trace(span_type="AGENT")
def kills_its_fork_server(question: str) -> str:
    """On the first 'refund' question, SIGKILLs the fork server it came from, then itself.

    The fork server is a copy of the gate: its parent (the gate) has the same command line. A worker started as a
    fresh interpreter has the gate as its parent, which is left alone.
    """
    marker = Path(os.environ.get("GATE_TEST_MARKER", "killed.marker"))
    if "refund" in question and not marker.exists():
        parent = os.getppid()
        grandparent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
        forked = Path(f"/proc/{parent}/cmdline").read_bytes() == Path(f"/proc/{grandparent}/cmdline").read_bytes()
        marker.write_text("server killed" if forked else "not forked", encoding="utf-8")
        if forked:
            os.kill(parent, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return agent(question)
