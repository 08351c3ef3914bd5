"""Bounded time when the tracking server hangs: one that answers /health but never its API stops the gate in
seconds with exit 3 naming it (it used to give no verdict for 300 s: MLflow waits 120 s per request, 7 retries)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Project


@pytest.fixture
def hanging_server() -> Iterator[str]:
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/health"):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                return
            release.wait(120)  # the API never answers (a stuck database behind a live server)

        do_POST = do_GET  # noqa: N815 - the stdlib's name

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()


def test_a_tracking_server_that_answers_health_but_not_its_api_is_exit_3_in_seconds(
    project: Project, hanging_server: str
) -> None:
    project.write_config()
    started = time.monotonic()
    result = project.gate("run", "--simulate", "--no-progress", "--tracking-uri", hanging_server, timeout=150)
    assert result.code == 3, result.stderr
    assert (
        f"cannot reach the MLflow tracking server at {hanging_server}: it answers /health but its API gave no answer "
        "within 15 s (is its database reachable?)"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 90  # 15 s of probe plus start-up and stopping the workers, on a busy runner
