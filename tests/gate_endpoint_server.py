"""A deployed LLM app for the tests: an HTTP server on loopback, instrumented with MLflow tracing, answering through
an OpenAI-compatible endpoint (the simulator), as a team's staging or production service would.

    python tests/gate_endpoint_server.py --tracking-uri URI --experiment NAME [--max-tokens N] [--delay-ms MS]
                                         [--mode ok|error500|hang|no-join]

It prints ``port=<n>`` once listening. POST /answer with {"question": ...} → {"answer", "model", "usage"}.
The handler joins the caller's trace from the ``traceparent`` header (MLflow's distributed tracing), unless
``--mode no-join``; ``MLFLOW_USE_BATCH_SPAN_PROCESSOR=false`` is what makes its spans land (docs/versions.md), and the
test sets it (or not) in this process's environment. ``Authorization`` must equal ``$ENDPOINT_TOKEN`` when that is set.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--mode", default="ok", choices=["ok", "error500", "hang", "no-join"])
    args = parser.parse_args()

    import mlflow
    import mlflow.openai
    from mlflow.tracing import set_tracing_context_from_http_request_headers
    from openai import OpenAI

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    mlflow.openai.autolog(silent=True)
    client = OpenAI(max_retries=0)
    token = os.environ.get("ENDPOINT_TOKEN")

    @mlflow.trace(name="support_service", span_type="AGENT")
    def answer(question: str) -> dict[str, Any]:
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
        response = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
            max_tokens=args.max_tokens,
        )
        usage = response.usage
        return {
            "answer": response.choices[0].message.content or "",
            "model": response.model,
            "usage": {
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "total_tokens": usage.total_tokens if usage else 0,
            },
        }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                return self._send(401, {"error": "unauthorized"})
            if args.mode == "error500":
                return self._send(500, {"error": "internal error"})
            if args.mode == "hang":
                threading.Event().wait()
            if args.mode == "no-join" or "traceparent" not in self.headers:
                result = answer(str(body.get("question", "")))
            else:
                with set_tracing_context_from_http_request_headers(dict(self.headers)):
                    result = answer(str(body.get("question", "")))
            self._send(200, result)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"port={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
