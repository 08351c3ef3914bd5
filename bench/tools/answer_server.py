"""A deployed version for bench/http_overhead.py: ``POST /answer`` answers after exactly LATENCY_MS.

Usage: answer_server.py LATENCY_MS — serves two ports, one per version (``baseline``, ``candidate``), from one
process, and prints one JSON line ``{"baseline": URL, "candidate": URL}``; serves until its stdin closes.
Stdlib only (``ThreadingHTTPServer``, HTTP/1.1 keep-alive, TCP_NODELAY, a listen backlog of 256).

Every answer is ``{"answer": "...", "usage": {prompt_tokens, completion_tokens, total_tokens}}``. For every request
the server records what happened on its side: which port (version), when the handler started and finished (epoch
seconds), the true handling time (``perf_counter`` from the handler's start, after the request line and headers
were read, to the last byte of the answer written to the socket: the LATENCY_MS sleep plus the handling), the
``traceparent`` header's trace id, an ``x-bench-id`` header, and the question. ``GET /_records`` (either port)
returns the records since the last ``GET /_records`` and forgets them.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "Your order ships tomorrow and arrives in 3 days."
USAGE = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}


def main() -> int:
    delay = float(sys.argv[1]) / 1000
    body = json.dumps({"answer": ANSWER, "usage": USAGE}).encode()
    records: list[dict] = []
    lock = threading.Lock()

    def handler_for(version: str) -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a deployed service
            disable_nagle_algorithm = True  # TCP_NODELAY on every accepted connection

            def do_POST(self) -> None:
                started, started_at = time.perf_counter(), time.time()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?")[0] != "/answer":
                    self._send(404, b'{"error": "not found"}')
                    return
                time.sleep(delay)
                self._send(200, body)
                handling_ms = (time.perf_counter() - started) * 1000
                try:
                    question = json.loads(raw).get("question")
                except (ValueError, AttributeError):
                    question = None
                traceparent = self.headers.get("traceparent") or ""
                parts = traceparent.split("-")
                record = {
                    "version": version,
                    "start": started_at,
                    "end": time.time(),
                    "handling_ms": handling_ms,
                    "trace_id": parts[1] if len(parts) == 4 else None,
                    "bench_id": self.headers.get("x-bench-id"),
                    "question": question,
                }
                with lock:
                    records.append(record)

            def do_GET(self) -> None:
                if self.path != "/_records":
                    self._send(404, b'{"error": "not found"}')
                    return
                with lock:
                    taken = records[:]
                    records.clear()
                self._send(200, json.dumps(taken).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the default 5 can drop SYNs when many clients connect at once

    servers = {}
    for version in ("baseline", "candidate"):
        server = Server(("127.0.0.1", 0), handler_for(version))
        server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[version] = server
    urls = {v: f"http://127.0.0.1:{s.server_address[1]}/answer" for v, s in servers.items()}
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # serve until the harness closes our stdin
    for server in servers.values():
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
