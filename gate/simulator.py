"""An OpenAI-compatible chat-completions server on loopback, deterministic for a seed.

It stands in for a real provider when there is no key or no network (forks, tests, local dry runs).
Answers depend on the request the way a real model's do: the output grows with ``max_tokens``,
temperature and the length of the system prompt; latency is a base plus a per-output-token time,
with log-normal noise; ``usage`` is filled in. Errors (429/500) can be injected at a rate.
Requests that carry ``response_format`` (LLM judges) get a JSON object ``{"rationale", "result"}``.

Run it on its own with ``python -m gate.simulator --port 8000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Simulator", "SimulatorSettings", "running_simulator"]

_WORDS = (
    "thanks for reaching out we can help you with that please check your order page "
    "and follow the steps in the account settings our team will review the request "
    "within two business days you can also contact support by email or chat if the "
    "problem persists we appreciate your patience and understanding"
).split()


_CARING = re.compile(r"\b(caring|empath\w*|warm)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SimulatorSettings:
    """How the simulated model behaves. All times are in milliseconds."""

    seed: int = 0
    base_latency_ms: float = 15.0
    ms_per_token: float = 0.3
    latency_sigma: float = 0.15
    error_rate: float = 0.0
    model: str = "gpt-4o-mini"
    # Per-request probability of each injected provider fault (see FAULTS).
    faults: Mapping[str, float] = field(default_factory=dict)


FAULTS = ("rate_limit", "rate_limit_no_retry_after", "server_error", "unavailable", "reset", "hang", "truncated")


def _count_tokens(text: str) -> int:
    # Roughly 4 characters a token, as OpenAI's own rule of thumb has it.
    return max(1, math.ceil(len(text) / 4))


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


class Simulator:
    """The server's behaviour, separate from HTTP so it can be reasoned about and tested."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self.requests = 0
        self._fault_draws = 0
        self.closing = threading.Event()  # releases hung requests when the server stops

    def _rng(self, body: dict[str, Any]) -> random.Random:
        # The same request repeated gets fresh noise, but the sequence is fixed by the seed.
        key = json.dumps(body, sort_keys=True, default=str)
        with self._lock:
            self.requests += 1
            occurrence = self._seen.get(key, 0)
            self._seen[key] = occurrence + 1
        digest = hashlib.sha256(f"{self.settings.seed}|{occurrence}|{key}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def pick_fault(self) -> str | None:
        """The fault to inject into the next request, if any (deterministic in request order for a seed)."""
        with self._lock:
            self._fault_draws += 1
            draw = random.Random(f"{self.settings.seed}/fault/{self._fault_draws}").random()
        for kind in FAULTS:
            probability = self.settings.faults.get(kind, 0.0)
            if draw < probability:
                return kind
            draw -= probability
        return None

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """Return (HTTP status, JSON body, seconds to wait before answering)."""
        rng = self._rng(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, _error("'messages' must be a non-empty list", "invalid_request_error"), 0.0
        if not all(isinstance(m, dict) for m in messages):
            return (
                400,
                _error("each of 'messages' must be an object with 'role' and 'content'", "invalid_request_error"),
                0.0,
            )
        if body.get("stream"):
            return 400, _error("the simulator does not stream; call without stream=True", "invalid_request_error"), 0.0
        if rng.random() < self.settings.error_rate:
            if rng.random() < 0.5:
                return 429, _error("simulated rate limit", "rate_limit_exceeded"), 0.0
            return 500, _error("simulated server error", "server_error"), 0.0

        system = " ".join(_message_text(m) for m in messages if m.get("role") == "system")
        user = " ".join(_message_text(m) for m in messages if m.get("role") != "system")
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
        prompt_tokens = sum(_count_tokens(_message_text(m)) + 4 for m in messages)

        if body.get("response_format"):
            content = self._judge_answer(user, rng)
            completion_tokens = min(_count_tokens(content), max_tokens)
            content = content if completion_tokens < max_tokens else content[: 4 * max_tokens]
        else:
            # Longer, warmer system prompts and higher temperatures give longer answers.
            wanted = 30 * (1 + min(len(system), 2000) / 500) * (1 + temperature) * rng.lognormvariate(0, 0.2)
            completion_tokens = max(1, min(max_tokens, round(wanted)))
            words = [rng.choice(_WORDS) for _ in range(max(1, round(completion_tokens * 0.75)))]
            topic = " ".join(user.split()[:6])
            # A caring system prompt shows in the answer, so a judge of empathy has something to find.
            opening = "I'm sorry for the trouble, and thank you for your patience. " if _CARING.search(system) else ""
            content = opening + f"About '{topic}': " + " ".join(words) + "."
        finish = "length" if completion_tokens >= max_tokens else "stop"
        delay_ms = (
            self.settings.base_latency_ms + self.settings.ms_per_token * completion_tokens
        ) * rng.lognormvariate(0, self.settings.latency_sigma)
        answer = {
            "id": f"chatcmpl-sim{rng.getrandbits(48):012x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or self.settings.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, answer, delay_ms / 1000

    @staticmethod
    def _judge_answer(prompt: str, rng: random.Random) -> str:
        """A deterministic stand-in for an LLM judge: the same prompt always gets the same verdict.

        Asked about empathy, it looks for an apology or thanks in the prompt (which holds the answer);
        asked anything else, it says yes to nine prompts in ten, chosen by a hash of the prompt.
        """
        if re.search(r"empath|caring|compassion", prompt, re.IGNORECASE):
            found = bool(re.search(r"sorry|thank you|apolog", prompt, re.IGNORECASE))
            result = "yes" if found else "no"
            why = "it acknowledges the customer's feelings" if found else "it sounds indifferent"
        else:
            score = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10
            result, why = ("yes", "it addresses the request") if score else ("no", "it misses part of the request")
        return json.dumps({"rationale": f"Simulated judge: {why}.", "result": result})


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm and the client's delayed ACK
        # that adds ~40 ms to every loopback request, more than the simulated model latency itself.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # request logs would drown the gate's own output

        def _send(self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _inject(self, fault: str) -> None:
            """Fail this request the way providers and networks do."""
            if fault == "rate_limit":  # OpenAI sends both; the SDK and the gate read retry-after-ms first
                headers = {"Retry-After": "1", "retry-after-ms": "100"}
                self._send(429, _error("simulated rate limit", "rate_limit_exceeded"), headers)
            elif fault == "rate_limit_no_retry_after":
                self._send(429, _error("simulated rate limit", "rate_limit_exceeded"))
            elif fault == "server_error":
                self._send(500, _error("simulated server error", "server_error"))
            elif fault == "unavailable":
                self._send(503, _error("simulated overload", "service_unavailable"))
            elif fault == "reset":  # close with RST instead of FIN: the client sees "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
            elif fault == "hang":  # never answer (until the server stops)
                sim.closing.wait(3600)
                self.close_connection = True
            elif fault == "truncated":  # promise a whole body, send half of it, hang up
                data = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path.split("?")[0].rstrip("/") == "/v1/models":
                self._send(
                    200, {"object": "list", "data": [{"id": sim.settings.model, "object": "model", "owned_by": "gate"}]}
                )
            else:
                self._send(404, _error(f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":  # a wrong base URL must not pass
                self._send(404, _error(f"no route {self.path}", "not_found"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error("request body is not JSON", "invalid_request_error"))
                return
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if key.startswith("sk-reject"):  # a revoked key; the message echoes it, as careless providers do
                self._send(401, _error(f"Incorrect API key provided: {key}", "invalid_api_key"))
                return
            if fault := sim.pick_fault():
                self._inject(fault)
                return
            status, payload, delay = sim.complete(body if isinstance(body, dict) else {})
            if delay > 0:
                time.sleep(delay)
            self._send(status, payload)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


@contextmanager
def running_simulator(settings: SimulatorSettings | None = None) -> Iterator[str]:
    """Serve the simulator on a free loopback port; yield its base URL (``http://127.0.0.1:PORT/v1``)."""
    sim = Simulator(settings or SimulatorSettings())
    server = _Server(("127.0.0.1", 0), _handler_for(sim))
    thread = threading.Thread(target=server.serve_forever, name="gate-simulator", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        sim.closing.set()
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gate.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--base-latency-ms", type=float, default=SimulatorSettings.base_latency_ms)
    args = parser.parse_args(argv)
    settings = SimulatorSettings(seed=args.seed, error_rate=args.error_rate, base_latency_ms=args.base_latency_ms)
    server = _Server(("127.0.0.1", args.port), _handler_for(Simulator(settings)))
    print(f"simulator on http://127.0.0.1:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
