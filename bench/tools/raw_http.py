"""The floor for HTTP versions: the same requests as the gate's ``http`` caller through a plain httpx2 client.

Usage: raw_http.py CASES_JSON BASELINE_URL CANDIDATE_URL [CONCURRENCY] — every question × 2 versions, interleaved
case by case with alternating order (as ``gate._run.runner.plan_calls``), CONCURRENCY (default 8) calls in flight
(``ThreadPoolExecutor``), no tracing, no warm-up. Each request is the gate's: a POST of the case's inputs as JSON
(``{"question": ...}``), the answer's ``answer`` field read from the JSON response; the client is built as the
gate builds it (``gate._run.versions._http_version``). Each call carries an ``x-bench-id`` header (so the server's
records join it) and is timed with ``perf_counter``. Prints one JSON object: calls, errors, the calls phase (first
request sent to last answer read, seconds) and every call's latency in ms by version and bench id.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2


def main() -> int:
    questions = json.loads(open(sys.argv[1], encoding="utf-8").read())
    urls = {"baseline": sys.argv[2], "candidate": sys.argv[3]}
    concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    client = httpx2.Client(
        timeout=httpx2.Timeout(120.0, connect=10.0),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=256),
        follow_redirects=False,
    )
    jobs = []
    for index, question in enumerate(questions):
        order = ("baseline", "candidate") if index % 2 == 0 else ("candidate", "baseline")
        jobs += [(version, question, f"{version}-{index}") for version in order]

    def one(job: tuple[str, str, str]) -> tuple[str, str, float, str | None]:
        version, question, bench_id = job
        started = time.perf_counter()
        error = None
        try:
            response = client.post(urls[version], json={"question": question}, headers={"x-bench-id": bench_id})
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
            elif not isinstance(response.json().get("answer"), str):
                error = "no answer"
        except httpx2.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        return version, bench_id, (time.perf_counter() - started) * 1000, error

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        done = list(pool.map(one, jobs))
    calls_phase_s = time.perf_counter() - started
    latency: dict[str, dict[str, float]] = {"baseline": {}, "candidate": {}}
    for version, bench_id, ms, _ in done:
        latency[version][bench_id] = ms
    errors = [e for *_, e in done if e is not None]
    print(
        json.dumps(
            {
                "calls": len(done),
                "errors": len(errors),
                "first_errors": errors[:3],
                "calls_phase_s": calls_phase_s,
                "latency_ms": latency,
            }
        )
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
