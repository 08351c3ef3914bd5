"""Burst: 5,000 fast calls through ``gate run``; every trace must land.

Run from the repository root::

    .venv/bin/python bench/burst.py [--cases 2500] [--repeats 1] [--json PATH]

``--cases`` × ``--repeats`` × 2 versions calls (default 2,500 × 1 × 2 = 5,000) of the traced app
(bench/tools/traced_app.py) against a 0 ms simulator in its own process, 8 in flight, fixed repeats, no warm-up,
into a fresh SQLite store. Calls that fast produce traces faster than MLflow writes them, so they queue up in the
exporter. Reports the gate's exit code (3 when traces are missing: the gate counts them itself), the calls it
made, the traces it found (the verdict's count), the traces actually in the store (``trace_info`` rows; and how
many keep their spans in the database), wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml
from _common import (
    TOOLS,
    child_env,
    count_traces,
    external_simulator,
    machine,
    measure,
    tail,
    use_gate_commit,
    write_json,
)


def write_config(folder: Path, cases: int, repeats: int) -> Path:
    config = {
        "version": 1,
        "experiment": "bench-burst",
        "cases": [
            {"id": f"c{i}", "inputs": {"question": f"Question {i}: where is my order number {i}?"}}
            for i in range(cases)
        ],
        "baseline": {"target": "traced_app:answer_v1", "label": "v1"},
        "candidate": {"target": "traced_app:answer_v2", "label": "v2"},
        "run": {"repeats": repeats, "max_repeats": repeats, "concurrency": 8, "warmup": False},
        "checks": [
            {"metric": "latency_ms/p95", "max_increase_pct": 50},
            {"metric": "error/rate", "at_most": 0},
        ],
    }
    path = folder / "thresholds.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    shutil.copy(TOOLS / "traced_app.py", folder / "traced_app.py")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the result as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (store, logs) and print it")
    parser.add_argument("--gate-commit", help="measure gate as of this commit (git archive) instead of the checkout")
    args = parser.parse_args()
    print(f"gate under test: {use_gate_commit(args.gate_commit)}", file=sys.stderr)
    expected = args.cases * args.repeats * 2
    folder = Path(tempfile.mkdtemp(prefix="gate-burst-"))
    try:
        config = write_config(folder, args.cases, args.repeats)
        with external_simulator(0) as base_url:
            cmd = [sys.executable, "-m", "gate", "run", "-c", str(config), "--tracking-uri"]
            cmd += [f"sqlite:///{folder / 'mlflow.db'}", "--no-progress", "--output", str(folder / "verdict.json")]
            measured = measure(cmd, cwd=folder, env=child_env(base_url), log_prefix=folder / "gate", timeout_s=7200)
        stored = count_traces(folder / "mlflow.db")
        verdict = json.loads((folder / "verdict.json").read_text()) if (folder / "verdict.json").exists() else {}
        if measured.exit_code not in (0, 1):
            print(tail(folder / "gate.err"), file=sys.stderr)
    finally:
        if args.keep:
            print(f"work folder: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    variants = verdict.get("variants") or {}
    result = {
        **measured.as_dict(),
        "expected_calls": expected,
        "calls": sum(v.get("calls", 0) for v in variants.values()),
        "verdict_traces": sum(v.get("traces", 0) for v in variants.values()),
        "stored_traces": stored["traces"],
        "spans_in_db": stored["spans_in_db"],
        "errors": sum(v.get("errors", 0) for v in variants.values()),
        "status": verdict.get("status"),
        "gate_timing": verdict.get("timing"),
        "reason": (verdict.get("error") or verdict.get("reason") or "")[:200],
    }
    print(
        f"\n`gate run`: {args.cases} cases × {args.repeats} repeats × 2 versions = {expected} calls, 0 ms model, "
        f"concurrency 8; {machine()}\n"
    )
    print(
        "| exit | calls made | traces (verdict) | traces stored (spans in DB) | errors | wall s | CPU s | peak RSS MB |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|")
    print(
        f"| {result['exit_code']} | {result['calls']} | {result['verdict_traces']} | {result['stored_traces']} "
        f"({result['spans_in_db']}) | {result['errors']} | {result['wall_s']:.1f} | {result['cpu_s']:.1f} | "
        f"{result['peak_rss_mb']:.0f} |"
    )
    if result["reason"]:
        print(f"\nverdict: {result['status']}: {result['reason']}")
    if args.json:
        write_json(args.json, {"machine": machine(), **result})
    landed = result["calls"] == result["verdict_traces"] == result["stored_traces"] == expected
    return 0 if landed and result["exit_code"] in (0, 1) else 1


if __name__ == "__main__":
    raise SystemExit(main())
