"""HTTP versions: the overhead per call of ``gate run`` calling an endpoint, and how true the latency it records is.

Run from the repository root::

    .venv/bin/python bench/http_overhead.py                      # N=200, 8 in flight, 100 ms endpoint, 3 rounds
    .venv/bin/python bench/http_overhead.py --rounds 5 --json /tmp/http-overhead.json
    .venv/bin/python bench/http_overhead.py --tools raw,gate --gate-commit HEAD~2   # gate/ as of a commit

Target (issue 14): overhead per call of an HTTP version against calling the endpoint with a plain HTTP client in
the same run (N=200, 8 in flight, 100 ms endpoint) ≤ 1.2× wall; fidelity: p95 within +10% of the true latency.

The endpoint: bench/tools/answer_server.py, one process per benchmark run, serving two ports from it (one per
version, so the server knows which version each request is for): stdlib ``ThreadingHTTPServer``, HTTP/1.1
keep-alive, TCP_NODELAY; ``POST /answer`` answers ``{"answer": ..., "usage": {...}}`` after exactly
``--latency-ms`` (``time.sleep``). It records, per request, when its handler started and finished and the true
handling time (the sleep plus the handling), the ``traceparent`` trace id and the question; the harness collects
and clears these records after every tool run (``GET /_records``).

Workload: N questions × 2 versions = 2N requests, 8 in flight over both versions. Tools, each a separate process
measured from outside (whole-process wall time; CPU time and peak RSS via ``os.wait4``; CPU includes the gate's
worker processes, which it reaps; RSS is the largest single process):

- ``raw``: bench/tools/raw_http.py — an ``httpx2.Client`` built as the gate builds its own, a
  ``ThreadPoolExecutor(8)``, the 2N requests interleaved case by case as the gate plans them, no tracing, no warm-up;
  each call timed with ``perf_counter`` (the floor);
- ``gate``: ``python -m gate run`` on a generated thresholds.yaml: N inline cases, baseline and candidate both
  ``http: {url: ..., output: answer}`` (one port each), ``run: {repeats: 1, max_repeats: 1, concurrency: 8,
  warmup: false}``, checks ``latency_ms/p95 max_increase_pct: 50`` and ``error/rate at_most: 0``, a fresh SQLite
  ``tracking_uri`` per run written in the config; each version in its worker process (the default isolation);
- ``gate-inline``: the same with ``run.isolation: inline`` (both versions called from threads of the gate process).

What is computed, per run:

- wall: the whole process, start-up included (for the gate: importing MLflow, creating the SQLite store, starting
  the workers, then reading the traces back and deciding: seconds that do not depend on the number of calls);
- calls phase, server side (the key number): from the first request's arrival at the server to the last answer
  written, over the run's 2N requests, from the server's own records: the same clock and the same definition for
  every tool, and it leaves out every fixed cost. The **per-call ratio** is a tool's median calls phase divided by
  ``raw``'s median calls phase in the same benchmark run: with the same 2N calls and 8 in flight, it is the ratio of
  the wall time each call takes. ``added ms per call`` = (tool − raw) × 8 / 2N, the wall each call costs on top;
- calls phase, client side (a cross-check): ``raw``'s own ``perf_counter`` around its pool; for the gate, the first
  trace's start to the last trace's end (the traces' ``timestamp_ms`` + ``execution_duration``);
- fidelity, per version: p50/p95 of the latency the tool measured (the gate: each stored trace's
  ``execution_duration``, as the gate's latency metrics use it, read back with ``MlflowClient.search_traces`` in a
  child process of its own; ``raw``: its ``perf_counter`` per call) against p50/p95 of the true latency of the same
  run's requests of that version (the server's handling time), as a ratio; and, per call (each trace joined to its
  request by the trace id in ``traceparent``; ``raw`` by an ``x-bench-id`` header), measured − true: median, p95, max;
- the traces: stored vs expected (2N), those in ERROR, and the trace ids the server saw without a stored trace.

Runs are interleaved round-robin: round r starts with tool r, so machine noise spreads over all tools. The tables
give medians over rounds (ratios: of the medians; fidelity ratios: the median of the per-run ratios), then every
run. Progress goes to stderr, the Markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from _common import ROOT, TOOLS, child_env, machine, measure, median, tail, use_gate_commit, write_json

ALL_TOOLS = ("raw", "gate", "gate-inline")
GATE_TOOLS = ("gate", "gate-inline")
VERSIONS = ("baseline", "candidate")
EXPERIMENT = "bench-http"


def questions(n: int) -> list[str]:
    return [f"Question {i}: where is my order number {i}, and when will it arrive?" for i in range(n)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between ranks (numpy's default, as the gate computes)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------------------------------------------
# The endpoint.


@contextmanager
def answer_server(latency_ms: float) -> Iterator[dict[str, str]]:
    """Serve bench/tools/answer_server.py in a process of its own; yield its URL per version."""
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "answer_server.py"), str(latency_ms)],
        cwd=ROOT,
        env=child_env(None),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("{"):
            raise RuntimeError(f"the answer server did not start (exit {proc.poll()})")
        yield json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def take_records(urls: dict[str, str]) -> list[dict]:
    """The requests the server handled since the last call (and it forgets them)."""
    with urllib.request.urlopen(urls["baseline"].removesuffix("/answer") + "/_records", timeout=30) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------------------------------------------
# The gate's config and its stored traces.


def gate_config(run_dir: Path, cases: list[str], urls: dict[str, str], inline: bool) -> Path:
    config = {
        "version": 1,
        "experiment": EXPERIMENT,
        "tracking_uri": f"sqlite:///{run_dir / 'mlflow.db'}",  # an absolute path: sqlite:////tmp/...
        "cases": [{"id": f"c{i}", "inputs": {"question": q}} for i, q in enumerate(cases)],
        "baseline": {"http": {"url": urls["baseline"], "output": "answer"}, "label": "v1"},
        "candidate": {"http": {"url": urls["candidate"], "output": "answer"}, "label": "v2"},
        "run": {"repeats": 1, "max_repeats": 1, "concurrency": 8, "warmup": False}
        | ({"isolation": "inline"} if inline else {}),
        "checks": [
            {"metric": "latency_ms/p95", "max_increase_pct": 50},
            {"metric": "error/rate", "at_most": 0.0},
        ],
    }
    path = run_dir / "thresholds.yaml"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def read_traces(db: Path) -> list[dict]:
    """Every trace of the run's store: id, version, state, start (epoch ms), execution_duration (ms).

    Read by a child process (``_traces`` role): MLflow imported into the harness would raise the children's peak
    RSS, which Linux carries from the forking process over ``exec`` into what ``os.wait4`` reports.
    """
    if not db.exists():
        return []
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_traces", str(db)],
        cwd=db.parent,
        env=child_env(None),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"  ! reading the traces of {db} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return []
    return json.loads(proc.stdout)


def role_traces(db: str) -> int:
    """The ``_traces`` child: the store's traces through ``MlflowClient.search_traces``, as JSON on stdout."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found: list[dict] = []
    token = None
    while experiment is not None:
        page = client.search_traces(
            locations=[experiment.experiment_id], max_results=500, page_token=token, include_spans=False
        )
        for trace in page:
            info = trace.info
            found.append(
                {
                    "trace_id": info.trace_id.removeprefix("tr-"),
                    "version": info.tags.get("gate.variant"),
                    "session": info.tags.get("gate.session"),
                    "state": str(info.state),
                    "start_ms": info.timestamp_ms,
                    "duration_ms": info.execution_duration,
                }
            )
        token = page.token
        if not token:
            break
    print(json.dumps(found))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# One run of one tool.


def command(tool: str, work: Path, run_dir: Path, urls: dict[str, str], cases: list[str]) -> list[str]:
    if tool == "raw":
        return [
            sys.executable,
            str(TOOLS / "raw_http.py"),
            str(work / "cases.json"),
            urls["baseline"],
            urls["candidate"],
            "8",
        ]
    if tool in GATE_TOOLS:
        config = gate_config(run_dir, cases, urls, inline=tool == "gate-inline")
        return [sys.executable, "-m", "gate", "run", "-c", str(config), "--no-progress"]  # the verdict on stdout
    raise ValueError(tool)


def fidelity(measured: dict[str, list[float]], true: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for v in VERSIONS:
        m, t = measured.get(v, []), true.get(v, [])
        row = {"n": len(m), "n_true": len(t)}
        for q in (50, 95):
            row[f"p{q}"], row[f"true_p{q}"] = percentile(m, q), percentile(t, q)
            row[f"p{q}_ratio"] = row[f"p{q}"] / row[f"true_p{q}"] if t and m else math.nan
        out[v] = row
    return out


def run_one(tool: str, round_no: int, work: Path, urls: dict[str, str], cases: list[str], timeout_s: float) -> dict:
    run_dir = work / f"{tool}-r{round_no}"
    run_dir.mkdir()
    take_records(urls)  # nothing should be left, but start clean
    cmd = command(tool, work, run_dir, urls, cases)
    measured = measure(cmd, cwd=run_dir, env=child_env(None), log_prefix=run_dir / "log", timeout_s=timeout_s)
    records = take_records(urls)
    n = len(cases)
    record: dict = {"tool": tool, "round": round_no, **measured.as_dict(), "expected_calls": 2 * n}

    # The server's side: every request this run made, whatever the tool says.
    record["requests"] = len(records)
    record["requests_by_version"] = {v: sum(r["version"] == v for r in records) for v in VERSIONS}
    record["server_calls_phase_s"] = (
        max(r["end"] for r in records) - min(r["start"] for r in records) if records else math.nan
    )
    if records:  # how many requests the server held at once: the mean over the calls phase, and the most
        record["server_in_flight_mean"] = sum(r["handling_ms"] for r in records) / 1000 / record["server_calls_phase_s"]
        edges = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
        record["server_in_flight_max"] = max(itertools.accumulate(step for _, step in edges))
    true = {v: [r["handling_ms"] for r in records if r["version"] == v] for v in VERSIONS}
    record["true_max_ms"] = max((r["handling_ms"] for r in records), default=math.nan)
    record["with_traceparent"] = sum(r["trace_id"] is not None for r in records)
    sent_questions = {r["question"] for r in records}
    record["questions_not_sent"] = len(set(cases) - sent_questions)

    measured_ms: dict[str, list[float]] = {v: [] for v in VERSIONS}
    delta_ms: list[float] = []  # measured − true, per call joined to its request
    if tool == "raw":
        out = (run_dir / "log.out").read_text(errors="replace")
        try:
            raw = json.loads(out)
        except ValueError:
            raw = None
        if raw is not None:
            record["client_calls_phase_s"] = raw["calls_phase_s"]
            record["errors"] = raw["errors"]
            record["first_errors"] = raw["first_errors"]
            by_id = {r["bench_id"]: r["handling_ms"] for r in records if r["bench_id"]}
            for v in VERSIONS:
                measured_ms[v] = list(raw["latency_ms"][v].values())
                delta_ms += [ms - by_id[i] for i, ms in raw["latency_ms"][v].items() if i in by_id]
        record["traces"] = None
    else:
        try:
            verdict = json.loads((run_dir / "log.out").read_text(errors="replace"))
        except ValueError:
            verdict = None
        if verdict is not None:
            record["verdict_status"] = verdict.get("status")
            record["verdict_total_s"] = (verdict.get("timing") or {}).get("total_s")
            variants = verdict.get("variants") or {}
            record["verdict_traces"] = sum(v.get("traces", 0) for v in variants.values())
            record["errors"] = sum(v.get("errors", 0) for v in variants.values())
            record["retries"] = sum(v.get("retries", 0) for v in variants.values())
            record["first_errors"] = [e for v in variants.values() for e in v.get("first_errors", [])]
            record["verdict_p95"] = {
                v: (verdict.get("metrics") or {}).get(v, {}).get("latency_ms/p95") for v in VERSIONS
            }
            record["writer"] = (verdict.get("mlflow") or {}).get("trace_writer")
        traces = read_traces(run_dir / "mlflow.db")
        record["traces"] = len(traces)
        record["error_traces"] = sum("OK" not in t["state"] for t in traces)
        if traces:
            record["client_calls_phase_s"] = (
                max(t["start_ms"] + t["duration_ms"] for t in traces) - min(t["start_ms"] for t in traces)
            ) / 1000
        for v in VERSIONS:
            measured_ms[v] = [float(t["duration_ms"]) for t in traces if t["version"] == v]
        by_trace = {r["trace_id"]: r["handling_ms"] for r in records if r["trace_id"]}
        stored = {t["trace_id"] for t in traces}
        record["requests_without_trace"] = len(set(by_trace) - stored)
        record["traces_without_request"] = len(stored - set(by_trace))
        delta_ms = [t["duration_ms"] - by_trace[t["trace_id"]] for t in traces if t["trace_id"] in by_trace]
    record["fidelity"] = fidelity(measured_ms, true)
    record["delta_ms"] = {
        "n": len(delta_ms),
        "median": percentile(delta_ms, 50),
        "p95": percentile(delta_ms, 95),
        "max": max(delta_ms, default=math.nan),
    }

    if measured.exit_code not in (0, 1) or measured.timed_out:
        print(f"  ! {tool} exited {measured.exit_code}:\n{tail(run_dir / 'log.err')}", file=sys.stderr)
    f = record["fidelity"]
    print(
        f"  round {round_no} {tool:11} wall {measured.wall_s:6.2f} s, "
        f"calls phase {record['server_calls_phase_s']:.2f} s "
        f"(client {record.get('client_calls_phase_s', math.nan):.2f} s), exit {measured.exit_code}, "
        f"{measured.cpu_s:.1f} s CPU, {measured.peak_rss_mb:.0f} MB, requests {record['requests']}, "
        f"traces {record['traces']}, errors {record.get('errors')}; p95 "
        + ", ".join(f"{v} {f[v]['p95']:.1f}/{f[v]['true_p95']:.1f}" for v in VERSIONS)
        + f"; measured−true median {record['delta_ms']['median']:.1f} ms, p95 {record['delta_ms']['p95']:.1f} ms",
        file=sys.stderr,
        flush=True,
    )
    return record


# ---------------------------------------------------------------------------------------------------------------
# Tables.


def summarize(runs: list[dict], tools: list[str], calls: int) -> list[dict]:
    floor = {
        key: median([r[key] for r in runs if r["tool"] == "raw" and r.get(key) == r.get(key)])
        for key in ("wall_s", "cpu_s", "server_calls_phase_s", "client_calls_phase_s")
    }
    rows = []
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        row: dict = {"tool": tool, "runs": len(mine)}
        for key in ("wall_s", "cpu_s", "server_calls_phase_s", "client_calls_phase_s"):
            values = [r.get(key, math.nan) for r in mine]
            row[key] = median([v for v in values if v == v])
            row[f"{key}_runs"] = values
            row[f"{key}_ratio"] = row[key] / floor[key] if floor[key] == floor[key] else math.nan
        row["added_ms_per_call"] = (row["server_calls_phase_s"] - floor["server_calls_phase_s"]) * 1000 * 8 / calls
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in mine)
        row["requests"] = [r["requests"] for r in mine]
        row["traces"] = [r["traces"] for r in mine]
        row["errors"] = [r.get("errors") for r in mine]
        row["exit_codes"] = [r["exit_code"] for r in mine]
        for v in VERSIONS:
            for q in ("p50", "p95"):
                row[f"{v}_{q}"] = median([r["fidelity"][v][q] for r in mine])
                row[f"{v}_true_{q}"] = median([r["fidelity"][v][f"true_{q}"] for r in mine])
                row[f"{v}_{q}_ratio"] = median([r["fidelity"][v][f"{q}_ratio"] for r in mine])
                row[f"{v}_{q}_ratio_runs"] = [r["fidelity"][v][f"{q}_ratio"] for r in mine]
        row["delta_median_ms"] = median([r["delta_ms"]["median"] for r in mine])
        row["delta_p95_ms"] = median([r["delta_ms"]["p95"] for r in mine])
        row["delta_max_ms"] = max(r["delta_ms"]["max"] for r in mine)
        rows.append(row)
    return rows


def _runs(values: Sequence[float], digits: int = 1) -> str:
    return ", ".join("–" if v != v else f"{v:.{digits}f}" for v in values)


def _x(ratio: float, digits: int = 2) -> str:
    return "–" if ratio != ratio else f"{ratio:.{digits}f}×"


def markdown(rows: list[dict], runs: list[dict], calls: int) -> str:
    lines = [
        "Overhead (medians over rounds; calls phase = first request in to last answer out, at the server; "
        "per-call ratio = calls phase / raw's):",
        "",
        "| tool | median wall s (runs) | wall ratio to raw | calls phase s (runs) | per-call ratio to raw "
        "| added ms per call | client-side calls phase s (runs) | median CPU s (runs) | CPU ratio to raw "
        "| peak RSS MB | requests / traces / expected | errors | exits |",
        "|---|---|---:|---|---:|---:|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        traces = "–" if r["tool"] == "raw" else _runs(r["traces"], 0)
        lines.append(
            f"| {r['tool']} | {r['wall_s']:.2f} ({_runs(r['wall_s_runs'])}) | {_x(r['wall_s_ratio'])} "
            f"| {r['server_calls_phase_s']:.2f} ({_runs(r['server_calls_phase_s_runs'], 2)}) "
            f"| **{_x(r['server_calls_phase_s_ratio'], 3)}** | {r['added_ms_per_call']:+.1f} "
            f"| {r['client_calls_phase_s']:.2f} ({_runs(r['client_calls_phase_s_runs'], 2)}) "
            f"| {r['cpu_s']:.1f} ({_runs(r['cpu_s_runs'])}) | {_x(r['cpu_s_ratio'], 1)} | {r['peak_rss_mb']:.0f} "
            f"| {_runs(r['requests'], 0)} / {traces} / {calls} | {', '.join(map(str, r['errors']))} "
            f"| {', '.join(map(str, r['exit_codes']))} |"
        )
    lines += [
        "",
        "Fidelity (measured = the stored trace's execution_duration for the gate, perf_counter for raw; true = the "
        "server's handling time of the same run's requests; medians over rounds):",
        "",
        "| tool | version | p50 ms measured / true | p50 ratio | p95 ms measured / true | p95 ratio (runs) "
        "| measured − true per call, ms: median / p95 / max |",
        "|---|---|---|---:|---|---|---|",
    ]
    for r in rows:
        for i, v in enumerate(VERSIONS):
            delta = f"{r['delta_median_ms']:.1f} / {r['delta_p95_ms']:.1f} / {r['delta_max_ms']:.1f}" if i == 0 else "″"
            lines.append(
                f"| {r['tool']} | {v} | {r[f'{v}_p50']:.1f} / {r[f'{v}_true_p50']:.1f} | {_x(r[f'{v}_p50_ratio'], 3)} "
                f"| {r[f'{v}_p95']:.1f} / {r[f'{v}_true_p95']:.1f} "
                f"| {_x(r[f'{v}_p95_ratio'], 3)} ({_runs(r[f'{v}_p95_ratio_runs'], 3)}) | {delta} |"
            )
    lines += [
        "",
        "Every run:",
        "",
        "| round | tool | exit | wall s | calls phase s (server / client) | in flight at server mean / max "
        "| fixed s (wall − calls phase) | CPU s "
        "| RSS MB | requests | traces (ERROR) | requests without trace | p50 ms b / c (true) | p95 ms b / c (true) "
        "| measured − true ms median / p95 / max |",
        "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---|---:|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["round"], ALL_TOOLS.index(r["tool"]))):
        f = r["fidelity"]
        traces = "–" if r["traces"] is None else f"{r['traces']} ({r.get('error_traces', 0)})"
        lines.append(
            f"| {r['round']} | {r['tool']} | {r['exit_code']} | {r['wall_s']:.2f} "
            f"| {r['server_calls_phase_s']:.2f} / {r.get('client_calls_phase_s', math.nan):.2f} "
            f"| {r.get('server_in_flight_mean', math.nan):.2f} / {r.get('server_in_flight_max', '–')} "
            f"| {r['wall_s'] - r['server_calls_phase_s']:.2f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['requests']} | {traces} | {r.get('requests_without_trace', '–')} "
            f"| {f['baseline']['p50']:.1f} / {f['candidate']['p50']:.1f} "
            f"({f['baseline']['true_p50']:.1f} / {f['candidate']['true_p50']:.1f}) "
            f"| {f['baseline']['p95']:.1f} / {f['candidate']['p95']:.1f} "
            f"({f['baseline']['true_p95']:.1f} / {f['candidate']['true_p95']:.1f}) "
            f"| {r['delta_ms']['median']:.1f} / {r['delta_ms']['p95']:.1f} / {r['delta_ms']['max']:.1f} |"
        )
    return "\n".join(lines)


def problems(runs: list[dict], calls: int) -> list[str]:
    """What should not happen: missing calls or traces, errors, failed exits."""
    found = []
    for r in runs:
        where = f"round {r['round']} {r['tool']}"
        if r["exit_code"] not in (0, 1) or r["timed_out"]:
            found.append(f"{where}: exit {r['exit_code']}{' (timed out)' if r['timed_out'] else ''}")
        if r["requests"] != calls:
            found.append(f"{where}: the server saw {r['requests']} requests, not {calls}")
        if r.get("errors"):
            found.append(f"{where}: {r['errors']} errors: {r.get('first_errors')}")
        if r["questions_not_sent"]:
            found.append(f"{where}: {r['questions_not_sent']} questions never reached the server")
        if r["tool"] in GATE_TOOLS:
            if r["traces"] != calls:
                found.append(f"{where}: {r['traces']} traces stored, not {calls}")
            if r.get("requests_without_trace"):
                found.append(f"{where}: {r['requests_without_trace']} requests whose trace id has no stored trace")
            if r.get("error_traces"):
                found.append(f"{where}: {r['error_traces']} traces not OK")
            if r["with_traceparent"] != r["requests"]:
                found.append(f"{where}: {r['requests'] - r['with_traceparent']} requests without traceparent")
    return found


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_traces":  # a child role
        return role_traces(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="N questions (requests: N × 2 versions)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the endpoint's answer time")
    parser.add_argument("--tools", default="raw,gate,gate-inline", help="subset of raw,gate,gate-inline")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per tool run")
    parser.add_argument("--json", help="also write the tables' data and every run as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs) and print it")
    parser.add_argument("--gate-commit", help="measure gate as of this commit (git archive) instead of the checkout")
    args = parser.parse_args()
    print(f"gate under test: {use_gate_commit(args.gate_commit)}", file=sys.stderr)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(ALL_TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if "raw" not in tools:
        parser.error("the ratios need 'raw' among --tools")
    calls = 2 * args.cases

    work = Path(tempfile.mkdtemp(prefix="gate-http-overhead-"))
    cases = questions(args.cases)
    (work / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    runs: list[dict] = []
    started = time.perf_counter()
    try:
        with answer_server(args.latency_ms) as urls:
            print(f"endpoint: {urls}, {args.latency_ms:g} ms per answer", file=sys.stderr)
            for round_no in range(args.rounds):
                order = tools[round_no % len(tools) :] + tools[: round_no % len(tools)]
                for tool in order:
                    runs.append(run_one(tool, round_no, work, urls, cases, args.timeout))
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    total_s = time.perf_counter() - started
    rows = summarize(runs, tools, calls)
    found = problems(runs, calls)
    print(f"total {total_s:.0f} s", file=sys.stderr)
    print(
        f"{args.cases} cases × 2 versions = {calls} requests, 8 in flight, {args.latency_ms:g} ms endpoint, "
        f"{args.rounds} rounds; {machine()}\n"
    )
    print(markdown(rows, runs, calls))
    if found:
        print("\nProblems:\n\n" + "\n".join(f"- {p}" for p in found))
    if args.json:
        write_json(
            args.json,
            {
                "args": vars(args),
                "machine": machine(),
                "total_s": total_s,
                "rows": rows,
                "runs": runs,
                "problems": found,
            },
        )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
