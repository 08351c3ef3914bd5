"""Recording cost: CPU per trace of each way of writing a two-span trace to SQLite, against the untraced call.

Run from the repository root::

    .venv/bin/python bench/record_cost.py            # = --n 1000 --runs 3

Each measurement is a fresh process (MLflow's tracer, exporter and environment are per process) making N sequential
calls of a traced app — an ``@mlflow.trace`` root plus one autologged OpenAI chat call, tagged and linked to a run as
the gate does, with the gate's redaction span processor — against the simulator served by this process (so serving
costs the measured process nothing), then flushing whatever is still buffered or queued. CPU is the worker's
``time.process_time()`` over the calls and the flush: all its threads, background writers included. Variants:

- ``untraced``: the OpenAI call alone (no MLflow tracing at all): the floor;
- ``mlflow-sync``: MLflow's exporter with ``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false`` (every span written as it ends);
- ``mlflow-async-1``: the gate's previous path: MLflow's async exporter, 1 worker, a 1e6 queue, flushed at the end;
- ``buffered``: the gate's buffered writer (gate/_store/recording.py), flushed at the end.

Each variant runs ``--runs`` times, interleaved round-robin; the table gives the median per trace, the delta against
the untraced median, and the traces found in the store (every call must leave one).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("untraced", "mlflow-sync", "mlflow-async-1", "buffered")
WARMUP = 20
_ENV = {
    "untraced": {},
    "mlflow-sync": {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"},
    "mlflow-async-1": {"GATE_TRACE_WRITER": "mlflow"},
    "buffered": {"GATE_TRACE_WRITER": "buffered"},
}


def worker(variant: str, url: str, n: int, db: Path) -> dict[str, float]:
    """Make WARMUP + n calls in this process; return CPU and wall ms per measured call, and traces found."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0)

    def ask(question: str) -> str:
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}], max_tokens=40
        )
        return response.choices[0].message.content or ""

    if variant == "untraced":
        for i in range(WARMUP):
            ask(f"warm-up {i}")
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(n):
            ask(f"question {i}")
        return {"cpu_ms": _per(time.process_time() - cpu, n), "wall_ms": _per(time.perf_counter() - wall, n)}

    from gate._store.recording import flush_traces
    from gate._store.redaction import install_span_redaction
    from gate._store.store import open_store, prepare_environment

    prepare_environment()
    import mlflow
    import mlflow.openai

    store = open_store(f"sqlite:///{db}", "record-cost")
    choice = store.start_recording()
    mlflow.openai.autolog(silent=True)
    install_span_redaction()
    run_id = store.start_run("record-cost", {})

    @mlflow.trace(span_type="AGENT")
    def app(question: str) -> str:
        return ask(question)

    def call(session: str, i: int) -> None:
        tags = {"gate.session": session, "gate.variant": "baseline", "gate.case_id": f"c{i}", "gate.repeat": "0"}
        with store.tracing_context(tags, run_id):
            app(f"question {i}")

    for i in range(WARMUP):
        call("warm-up", i)
    flush_traces()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        call("measured", i)
    flush_traces()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT COUNT(*) FROM trace_tags WHERE key = 'gate.session' AND value = 'measured'"
        ).fetchone()[0]
    return {"cpu_ms": _per(cpu, n), "wall_ms": _per(wall, n), "found": found, "writer": choice.writer}


def _per(seconds: float, n: int) -> float:
    return 1000 * seconds / n


def measure(variant: str, url: str, n: int, folder: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GATE_", "OPENAI_"))}
    env.update(_ENV[variant])
    db = folder / f"{variant}-{time.monotonic_ns()}.db"
    args = [sys.executable, __file__, "--worker", variant, "--url", url, "--n", str(n), "--db", str(db)]
    proc = subprocess.run(args, env=env, cwd=folder, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {variant}: {result}", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="measured calls per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.n, args.db)))
        return 0

    sys.path.insert(0, str(ROOT))
    from gate.simulator import SimulatorSettings, running_simulator

    variants = args.variants.split(",")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    settings = SimulatorSettings(seed=0, base_latency_ms=0.0, ms_per_token=0.0, latency_sigma=0.0)
    with running_simulator(settings) as url, tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}", file=sys.stderr)
            for i in range(len(variants)):
                variant = variants[(run + i) % len(variants)]  # round-robin start: noise spreads over variants
                results[variant].append(measure(variant, url, args.n, Path(tmp)))

    floor = statistics.median(r["cpu_ms"] for r in results["untraced"]) if "untraced" in results else None
    print(f"N={args.n} calls per run, median of {args.runs} runs; CPU includes background writer threads\n")
    print("| variant | CPU ms/trace (runs) | delta vs untraced | wall ms/trace | traces found |")
    print("|---|---|---|---|---|")
    for variant in variants:
        runs = results[variant]
        cpu = statistics.median(r["cpu_ms"] for r in runs)
        wall = statistics.median(r["wall_ms"] for r in runs)
        each = ", ".join(f"{r['cpu_ms']:.2f}" for r in runs)
        delta = "–" if floor is None or variant == "untraced" else f"+{cpu - floor:.2f}"
        found = "–" if variant == "untraced" else "/".join(str(int(r["found"])) for r in runs)
        print(f"| {variant} | {cpu:.2f} ({each}) | {delta} | {wall:.2f} | {found} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
